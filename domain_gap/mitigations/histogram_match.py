"""Per-channel RGB histogram matching of the target to the source, as 3 lookup tables.

Both histograms are pooled over the valid pixels of the fit images (256 bins, one per uint8
value). A target value ``v`` has quantile ``F_t(v)`` under the target's pooled CDF; it maps to
the source value at that quantile, interpolated linearly between the source's occupied values
(the same rule as ``skimage.exposure.match_histograms``, but with both CDFs fitted once on the
fit sets instead of per image pair). The map is a fixed ``(3, 256)`` table: deterministic,
cheap to apply, stored as params. Outputs stay within the source's range (no clipping needed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from domain_gap.mitigations.base import FitImage, FittedImageTransform, check_fit_set
from domain_gap.mitigations.checks import check_image_pair, check_keys, param_array
from domain_gap.mitigations.stats import pooled_histograms

__all__ = ["FittedHistogramMatch", "HistogramMatch", "matching_lut"]

NAME = "histogram_match"


def matching_lut(source_counts: np.ndarray, target_counts: np.ndarray) -> np.ndarray:
    """``(3, 256)`` counts of each set → float64 ``(3, 256)`` table target value → source value."""
    lut = np.empty((3, 256), np.float64)
    values = np.arange(256, dtype=np.float64)
    for c in range(3):
        target_cdf = np.cumsum(target_counts[c]) / target_counts[c].sum()
        occupied = np.flatnonzero(source_counts[c])
        source_cdf = np.cumsum(source_counts[c])[occupied] / source_counts[c].sum()
        lut[c] = np.interp(target_cdf, source_cdf, values[occupied])
    return lut


@dataclass(frozen=True, eq=False)
class FittedHistogramMatch(FittedImageTransform):
    """The fitted table: ``lut[c, v]`` is the output for value ``v`` of channel ``c``."""

    name: ClassVar[str] = NAME
    lut: np.ndarray

    def apply(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Table lookup on valid pixels; padding unchanged; float32 in 0..255."""
        img, mask = check_image_pair(image, valid)
        out = img.astype(np.float32)
        out[mask] = self.lut[np.arange(3), img[mask]].astype(np.float32)
        return out

    def params(self) -> dict[str, Any]:
        return {"lut": self.lut.tolist()}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> FittedHistogramMatch:
        check_keys(params, ("lut",), NAME)
        lut = param_array(params, "lut", (3, 256))
        if lut.min() < 0 or lut.max() > 255 or (np.diff(lut, axis=1) < 0).any():
            raise ValueError("params['lut']: expected non-decreasing rows within 0..255")
        return cls(lut)


@dataclass(frozen=True)
class HistogramMatch:
    """RGB per-channel CDF matching (no options: 256 bins, one per uint8 value)."""

    name: ClassVar[str] = NAME

    def fit(self, source: Sequence[FitImage], target: Sequence[FitImage]) -> FittedHistogramMatch:
        """Pooled valid-pixel histograms of both sets → the lookup table."""
        source_counts = pooled_histograms(check_fit_set(source, "source"))
        target_counts = pooled_histograms(check_fit_set(target, "target"))
        lut = matching_lut(source_counts, target_counts)
        return FittedHistogramMatch.from_params({"lut": lut.tolist()})
