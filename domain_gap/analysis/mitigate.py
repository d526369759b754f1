"""Fit each configured mitigation on frames that are never evaluated, then re-extract a target.

I/O at the edge of the what-if feature: choosing the fit frames (seeded, disjoint from every
evaluated frame by :func:`~domain_gap.mitigations.check_disjoint`), fitting (cached as JSON
under the fit's inputs, so a rerun neither loads fit images nor the model), and the mitigated
extraction pass (cached under the *fitted* parameters' key). The numbers are computed later by
:mod:`domain_gap.analysis.whatif` from the same per-sample records as the baseline.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from domain_gap.analysis.cache import FeatureCache, prep_settings
from domain_gap.analysis.extract import (
    Features,
    LazyRunner,
    TorchRunner,
    cache_source,
    extract_domain,
)
from domain_gap.atomic import write_atomic
from domain_gap.config import Config, MitigationConfig
from domain_gap.mitigations import FitImage, Fitted, build, check_disjoint, from_params

__all__ = ["FitSet", "MitigationError", "choose_fit_records", "extract_mitigated", "fit_mitigation"]


class MitigationError(ValueError):
    """A mitigation cannot be fitted as configured (one line naming what is missing)."""


@dataclass(frozen=True)
class FitSet:
    """The frames a mitigation was fitted on (never evaluated)."""

    source_subset: str
    target_subsets: tuple[str, ...]
    source_ids: tuple[str, ...]
    target_ids: tuple[str, ...]
    domains: tuple[str, str] = ("", "")
    """(source, target) domain names."""


def _pick(records: Sequence[Any], k: int, seed: int, salt: str) -> list[Any]:
    """At most ``k`` records, a seeded choice that does not depend on listing order."""
    ordered = sorted(records, key=lambda r: r.sample_id)
    if len(ordered) <= k:
        return ordered
    digest = int(hashlib.sha256(salt.encode()).hexdigest()[:8], 16)
    idx = np.random.default_rng([seed, digest]).choice(len(ordered), k, replace=False)
    return [ordered[i] for i in sorted(idx)]


def choose_fit_records(
    config: Config, dataset: Any, source: str, target: str, eval_ids: Sequence[str]
) -> tuple[list[Any], list[Any], FitSet]:
    """Source and target fit records per ``analysis.mitigation_fit``, disjoint from ``eval_ids``."""
    fit = config.analysis.mitigation_fit
    tgt = [r for s in fit.subsets for r in dataset.select(domain=target, subset=s)]
    if not tgt:
        raise MitigationError(
            f"domain {target!r} has no frames in subsets {fit.subsets} to fit mitigations on "
            "(analysis.mitigation_fit.subsets); the evaluated frames are never used"
        )
    src = list(dataset.select(domain=source, subset=fit.source_subset))
    if not src:
        raise MitigationError(
            f"domain {source!r} has no frames in subset {fit.source_subset!r} "
            "(analysis.mitigation_fit.source_subset)"
        )
    src = _pick(src, fit.max_images, config.seed, f"{source}/fit")
    tgt = _pick(tgt, fit.max_images, config.seed, f"{target}/fit")
    try:
        check_disjoint([r.sample_id for r in src + tgt], eval_ids)
    except ValueError as err:
        raise MitigationError(f"analysis.mitigation_fit: {err}") from None
    fit_set = FitSet(
        fit.source_subset,
        tuple(fit.subsets),
        tuple(r.sample_id for r in src),
        tuple(r.sample_id for r in tgt),
        (source, target),
    )
    return src, tgt, fit_set


def _fit_key(config: Config, spec: MitigationConfig, fit_set: FitSet, model_hash: str) -> str:
    """What a fit depends on: the recipe, the fit frames (ids, and the data they come from, as the
    shards are keyed), the preprocessing and, for AdaBN, the weights."""
    payload = {
        "kind": spec.kind,
        "options": spec.options,
        "fit": [fit_set.source_ids, fit_set.target_ids],
        "data": [cache_source(config, d) for d in fit_set.domains],
        "prep": prep_settings(config),
        "model": model_hash if spec.kind == "adabn" else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _fit_paths(cache: FeatureCache, spec: MitigationConfig, key: str) -> tuple[Path, Path]:
    base = cache.root / "fits" / f"{spec.label}-{key[:16]}"
    return base.with_suffix(".json"), base.with_suffix(".npz")


def _load_fit(cache: FeatureCache, spec: MitigationConfig, key: str) -> Fitted | None:
    meta_path, npz_path = _fit_paths(cache, spec, key)
    if not meta_path.is_file():
        return None
    params = json.loads(meta_path.read_text(encoding="utf-8"))["params"]
    if spec.kind != "adabn":
        return from_params(spec.kind, params)
    if not npz_path.is_file():
        return None
    from domain_gap.mitigations.adabn import FittedAdaBN

    with np.load(npz_path, allow_pickle=False) as npz:
        buffers = {name: npz[name] for name in npz.files}
    return FittedAdaBN(
        source_weight=float(params["source_weight"]),
        n_images=int(params["n_images"]),
        n_batches=int(params["n_batches"]),
        buffers=MappingProxyType(buffers),
        bn_sha256=str(params["bn_sha256"]),
    )


def _save_fit(cache: FeatureCache, spec: MitigationConfig, key: str, fitted: Fitted) -> None:
    meta_path, npz_path = _fit_paths(cache, spec, key)
    if spec.kind == "adabn":
        import io

        buf = io.BytesIO()
        np.savez(buf, **dict(fitted.buffers))  # type: ignore[attr-defined]
        write_atomic(npz_path, buf.getvalue())
    body = {"kind": spec.kind, "label": spec.label, "params": fitted.params()}
    write_atomic(meta_path, json.dumps(body, sort_keys=True).encode())


def fit_mitigation(
    config: Config,
    dataset: Any,
    spec: MitigationConfig,
    fit_records: tuple[Sequence[Any], Sequence[Any]],
    fit_set: FitSet,
    cache: FeatureCache,
    runner: LazyRunner | TorchRunner | None = None,
) -> Fitted:
    """The fitted mitigation ``spec`` (read from the fit cache when it was fitted before)."""
    key = _fit_key(config, spec, fit_set, cache.model_hash)
    cached = _load_fit(cache, spec, key)
    if cached is not None:
        return cached
    options: dict[str, Any] = dict(spec.options)
    if spec.kind == "adabn":
        base = (runner or LazyRunner(config, cache)).get()
        options.update(model=base.model, mean=config.image.mean, std=config.image.std)
    src, tgt = ([FitImage.from_prepared(dataset.prepare(r)) for r in rs] for rs in fit_records)
    try:
        fitted = build(spec.kind, **options).fit(src, tgt)
    except ValueError as err:
        raise MitigationError(f"mitigation {spec.label!r}: {err}") from None
    _save_fit(cache, spec, key, fitted)
    return fitted


class _MitigatedRunner:
    """The base runner's model adapted by the mitigation, loaded on first use only."""

    def __init__(self, base: LazyRunner | TorchRunner, fitted: Fitted) -> None:
        self.base, self.fitted = base, fitted
        self._runner: TorchRunner | None = None

    def __call__(self, x: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
        if self._runner is None:
            b = self.base.get()
            self._runner = TorchRunner(self.fitted.adapt_model(b.model), b.device, b.tap)
        return self._runner(x, labels)


def extract_mitigated(
    config: Config,
    dataset: Any,
    domain: str,
    subset: str | None,
    spec: MitigationConfig,
    fitted: Fitted,
    cache: FeatureCache,
    runner: LazyRunner | TorchRunner,
    progress: bool = True,
) -> Features:
    """The records of ``domain``'s evaluation subset with the fitted mitigation applied."""
    return extract_domain(
        config,
        dataset,
        domain,
        subset,
        runner=_MitigatedRunner(runner, fitted),
        cache=cache.for_mitigation(spec.label, fitted.key()),
        progress=progress,
        transform=fitted,
        label=spec.label,
    )
