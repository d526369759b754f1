"""Histogram matching in CIE LAB: L, a and b matched to the source separately, then back to RGB.

Matching lightness and the two opponent-colour axes, instead of R, G and B, changes brightness
without shifting hue. Valid pixels are converted with ``skimage.color`` (sRGB, D65, float64).
Each LAB channel is binned on a fixed grid (``LAB_RANGES``, ``bins`` bins): the fitted params are
the pooled CDFs of the source and the target at the bin edges. A target value ``x`` maps to
``G_s⁻¹(G_t(x))`` where ``G`` are the piecewise-linear CDFs through those edges, so the matched
target's CDF equals the source's up to one bin's mass. The result goes back to RGB, clipped to
the sRGB gamut (0..255) by the LAB→RGB conversion: per-channel matching can ask for LAB
colours that no RGB pixel has.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from skimage.color import lab2rgb, rgb2lab

from domain_gap.mitigations.base import FitImage, FittedImageTransform, check_fit_set
from domain_gap.mitigations.checks import check_image_pair, check_keys, param_array

__all__ = [
    "LAB_RANGES",
    "FittedHistogramMatchLAB",
    "HistogramMatchLAB",
    "lab_to_rgb",
    "match_cdf",
    "rgb_to_lab",
]

NAME = "histogram_match_lab"
LAB_RANGES = ((0.0, 100.0), (-128.0, 128.0), (-128.0, 128.0))
"""Fixed bin ranges of L*, a*, b* (they cover the whole sRGB gamut)."""
_KEYS = ("ranges", "source_cdf", "target_cdf")


def rgb_to_lab(pixels: np.ndarray) -> np.ndarray:
    """uint8 RGB ``(N, 3)`` → float64 CIE LAB ``(N, 3)``."""
    return rgb2lab(pixels.reshape(-1, 1, 3).astype(np.float64) / 255.0).reshape(-1, 3)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """float CIE LAB ``(N, 3)`` → float64 RGB ``(N, 3)`` on 0..255, clipped to the gamut."""
    with warnings.catch_warnings():
        # Out-of-gamut LAB colours are expected here; the conversion clips them (documented).
        warnings.filterwarnings("ignore", message=".*negative Z values.*", category=UserWarning)
        rgb = lab2rgb(np.asarray(lab, np.float64).reshape(-1, 1, 3))
    return rgb.reshape(-1, 3) * 255.0


def _edges(ranges: np.ndarray, bins: int) -> np.ndarray:
    return np.stack([np.linspace(lo, hi, bins + 1) for lo, hi in ranges])


def match_cdf(
    x: np.ndarray, edges: np.ndarray, cdf_from: np.ndarray, cdf_to: np.ndarray
) -> np.ndarray:
    """``G_to⁻¹(G_from(x))`` for piecewise-linear CDFs given at ``edges`` (one channel)."""
    q = np.interp(x, edges, cdf_from)
    occupied = np.flatnonzero(np.diff(cdf_to) > 0)
    k = np.clip(np.searchsorted(cdf_to, q, side="left") - 1, occupied[0], occupied[-1])
    mass = cdf_to[k + 1] - cdf_to[k]
    frac = np.clip((q - cdf_to[k]) / np.where(mass > 0, mass, 1.0), 0.0, 1.0)
    return edges[k] + frac * (edges[k + 1] - edges[k])


@dataclass(frozen=True, eq=False)
class FittedHistogramMatchLAB(FittedImageTransform):
    """Fitted LAB CDFs at the bin edges, float64 ``(3, bins + 1)`` each."""

    name: ClassVar[str] = NAME
    ranges: np.ndarray
    source_cdf: np.ndarray
    target_cdf: np.ndarray

    def match_lab(self, lab: np.ndarray) -> np.ndarray:
        """Target LAB ``(N, 3)`` → matched LAB ``(N, 3)`` (before the gamut clip)."""
        edges = _edges(self.ranges, self.source_cdf.shape[1] - 1)
        out = np.empty_like(lab, dtype=np.float64)
        for c in range(3):
            out[:, c] = match_cdf(lab[:, c], edges[c], self.target_cdf[c], self.source_cdf[c])
        return out

    def apply(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """LAB matching on valid pixels; padding unchanged; float32 in 0..255."""
        img, mask = check_image_pair(image, valid)
        out = img.astype(np.float32)
        out[mask] = lab_to_rgb(self.match_lab(rgb_to_lab(img[mask]))).astype(np.float32)
        return out

    def params(self) -> dict[str, Any]:
        return {k: getattr(self, k).tolist() for k in _KEYS}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> FittedHistogramMatchLAB:
        check_keys(params, _KEYS, NAME)
        ranges = param_array(params, "ranges", (3, 2))
        if (ranges[:, 1] <= ranges[:, 0]).any():
            raise ValueError("params['ranges']: expected (low, high) pairs with low < high")
        cdfs = {k: param_array(params, k, (3, None)) for k in ("source_cdf", "target_cdf")}
        for k, cdf in cdfs.items():
            ok = cdf.shape == cdfs["source_cdf"].shape and cdf.shape[1] >= 2
            if not ok or (np.diff(cdf, axis=1) < 0).any() or (cdf[:, 0] != 0).any():
                raise ValueError(f"params[{k!r}]: expected non-decreasing CDF rows from 0 to 1")
            if not np.allclose(cdf[:, -1], 1.0, rtol=0, atol=1e-12):
                raise ValueError(f"params[{k!r}]: expected CDF rows ending at 1")
        return cls(ranges, cdfs["source_cdf"], cdfs["target_cdf"])


def _pooled_lab_cdf(images: Sequence[FitImage], edges: np.ndarray) -> np.ndarray:
    counts = np.zeros((3, edges.shape[1] - 1), np.int64)
    for item in images:
        lab = rgb_to_lab(item.image[item.valid])
        for c in range(3):
            counts[c] += np.histogram(lab[:, c], bins=edges[c])[0]
    cum = np.cumsum(counts, axis=1) / counts.sum(axis=1, keepdims=True)
    return np.concatenate([np.zeros((3, 1)), cum], axis=1)


@dataclass(frozen=True)
class HistogramMatchLAB:
    """LAB per-channel CDF matching on a fixed grid of ``bins`` bins per channel."""

    name: ClassVar[str] = NAME
    bins: int = 256

    def __post_init__(self) -> None:
        if isinstance(self.bins, bool) or not isinstance(self.bins, int) or self.bins < 2:
            raise ValueError(f"bins: expected an integer >= 2, got {self.bins!r}")

    def fit(
        self, source: Sequence[FitImage], target: Sequence[FitImage]
    ) -> FittedHistogramMatchLAB:
        """Pooled valid-pixel LAB CDFs of both sets on the fixed grid."""
        ranges = np.asarray(LAB_RANGES, np.float64)
        edges = _edges(ranges, self.bins)
        source_cdf = _pooled_lab_cdf(check_fit_set(source, "source"), edges)
        target_cdf = _pooled_lab_cdf(check_fit_set(target, "target"), edges)
        return FittedHistogramMatchLAB.from_params(
            {
                "ranges": ranges.tolist(),
                "source_cdf": source_cdf.tolist(),
                "target_cdf": target_cdf.tolist(),
            }
        )
