"""One configured mitigation outside the pipeline: the binder's mitigated input, AdaBN export.

``tensorleap.mitigation`` names an image-space entry of ``analysis.mitigations``. The binder
feeds the platform ``normalize_image(fitted.apply(image, valid), mean, std)`` for samples of the
target domains (the very functions the local engine's mitigated pass calls) and the plain
input for the source domain. Fitting goes through the pipeline's own
:func:`~domain_gap.analysis.mitigate.choose_fit_records` and
:func:`~domain_gap.analysis.mitigate.fit_mitigation`, so the frames, the parameters and the fit
cache are the local report's. Image-space fits never import torch (the platform has none).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from domain_gap.analysis.cache import CacheError, FeatureCache, prep_hash
from domain_gap.analysis.mitigate import FitSet, choose_fit_records, fit_mitigation
from domain_gap.config import Config, MitigationConfig
from domain_gap.encoders import normalize_image
from domain_gap.mitigations import Fitted

__all__ = [
    "NO_MITIGATION",
    "evaluated_ids",
    "fit_cache",
    "fit_for_target",
    "fit_records",
    "mitigated_input",
    "platform_mitigation",
    "spec_named",
]

NO_MITIGATION = "none"
"""The ``mitigation`` metadata of a sample whose input is not mitigated."""


def spec_named(config: Config, label: str) -> MitigationConfig:
    """The ``analysis.mitigations`` entry labelled ``label`` (ValueError naming the labels)."""
    for spec in config.analysis.mitigations:
        if spec.label == label:
            return spec
    labels = [m.label for m in config.analysis.mitigations]
    raise ValueError(f"mitigation {label!r} is not in analysis.mitigations {labels}")


def platform_mitigation(config: Config) -> MitigationConfig | None:
    """The entry ``tensorleap.mitigation`` names, or None when it is unset."""
    label = config.tensorleap.mitigation
    return None if label is None else spec_named(config, label)


def evaluated_ids(config: Config, dataset: Any, source: str, target: str) -> list[str]:
    """Sample ids the pipeline evaluates for ``source`` and ``target`` (``analysis.subset``)."""
    subset = None if config.analysis.subset == "all" else config.analysis.subset
    return [r.sample_id for d in (source, target) for r in dataset.select(domain=d, subset=subset)]


def fit_cache(config: Config) -> FeatureCache:
    """The pipeline's cache when the checkpoint is at hand, else one keyed without a model
    (image-space fits do not depend on it; the platform only has the ONNX file)."""
    try:
        return FeatureCache.for_config(config)
    except CacheError:
        cache_dir = config.resolve(config.cache_dir) or "."
        return FeatureCache(cache_dir, "no-checkpoint", config.model.tap, prep_hash(config))


def fit_records(config: Config, dataset: Any, target: str) -> tuple[list, list, FitSet]:
    """The pipeline's fit frames for ``target``: (source records, target records, FitSet)."""
    source = config.source_domain
    if target == source or target not in [d.name for d in config.domains]:
        others = [d.name for d in config.domains if d.name != source]
        raise ValueError(f"target domain {target!r}: expected one of {others}")
    eval_ids = evaluated_ids(config, dataset, source, target)
    return choose_fit_records(config, dataset, source, target, eval_ids)


def fit_for_target(
    config: Config,
    dataset: Any,
    spec: MitigationConfig,
    target: str,
    cache: FeatureCache | None = None,
    runner: Any = None,
) -> Fitted:
    """``spec`` fitted for ``target`` exactly as the pipeline's what-if fits it (cached)."""
    src, tgt, fit_set = fit_records(config, dataset, target)
    return fit_mitigation(
        config, dataset, spec, (src, tgt), fit_set, cache or fit_cache(config), runner
    )


def mitigated_input(
    image: np.ndarray, valid: np.ndarray, config: Config, fitted: Fitted | None
) -> np.ndarray:
    """The normalised model input (3, H, W) float32, mapped by ``fitted`` first when given."""
    pixels = image if fitted is None else fitted.apply(image, valid)
    return normalize_image(pixels, config.image.mean, config.image.std)
