"""Mitigations for the "what-if" feature: fit a fix on source and target fit images, re-measure.

Public API::

    build(name, **options) -> Mitigation        # KINDS[name](**options)
    Mitigation.fit(source, target) -> Fitted    # sequences of FitImage(image, valid, sample_id)
    Fitted.apply(image, valid) -> float32 (H, W, 3) on 0..255;  Fitted.adapt_model(model)
    Fitted.params() -> JSON dict;  Fitted.key() -> sha256 hex
    from_params(name, params) -> Fitted         # the same pure function, from JSON
    check_disjoint(fit_ids, eval_ids)           # fitting never touches evaluated frames

Kinds: ``rgb_normalize``, ``histogram_match``, ``histogram_match_lab``, ``fourier_amplitude``
(numpy/scikit-image, no torch) and ``adabn`` (torch, imported only when it runs; it changes
the model's BatchNorm statistics, so it cannot be rebuilt from params).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from domain_gap.mitigations.adabn import AdaBN, FittedAdaBN
from domain_gap.mitigations.base import FitImage, Fitted, Mitigation, params_key
from domain_gap.mitigations.fourier_amplitude import FittedFourierAmplitude, FourierAmplitude
from domain_gap.mitigations.guard import check_disjoint
from domain_gap.mitigations.histogram_match import FittedHistogramMatch, HistogramMatch
from domain_gap.mitigations.histogram_match_lab import FittedHistogramMatchLAB, HistogramMatchLAB
from domain_gap.mitigations.rgb_normalize import FittedRGBNormalize, RGBNormalize

__all__ = [
    "FITTED",
    "KINDS",
    "FitImage",
    "Fitted",
    "Mitigation",
    "build",
    "check_disjoint",
    "from_params",
    "params_key",
]

KINDS: dict[str, type] = {
    cls.name: cls
    for cls in (RGBNormalize, HistogramMatch, HistogramMatchLAB, FourierAmplitude, AdaBN)
}
"""Mitigation name → recipe class."""

FITTED: dict[str, type] = {
    cls.name: cls
    for cls in (
        FittedRGBNormalize,
        FittedHistogramMatch,
        FittedHistogramMatchLAB,
        FittedFourierAmplitude,
        FittedAdaBN,
    )
}
"""Mitigation name → fitted class (``from_params``)."""


def _kind(name: str, table: Mapping[str, type]) -> type:
    if name not in table:
        raise ValueError(f"name: expected one of {sorted(table)}, got {name!r}")
    return table[name]


def build(name: str, **options: Any) -> Mitigation:
    """The mitigation ``name`` with its options; ValueError on an unknown name or option."""
    cls = _kind(name, KINDS)
    try:
        inspect.signature(cls).bind(**options)
    except TypeError as err:
        raise ValueError(f"options: {name} takes {inspect.signature(cls)}; {err}") from None
    return cls(**options)


def from_params(name: str, params: Mapping[str, Any]) -> Fitted:
    """The fitted mitigation ``name`` rebuilt from ``params`` (e.g. read from a JSON file)."""
    return _kind(name, FITTED).from_params(params)
