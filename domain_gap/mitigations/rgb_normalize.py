"""Per-channel moment matching: the target's pooled RGB mean/std become the source's.

``y = (x - target_mean) * source_std / target_std + source_mean`` per channel. The moments are
pooled over the valid pixels of the fit images. The output is deliberately NOT clipped to
0..255: clipping would move the mean and std away from the source's (the whole point of the
map), and the model's input normaliser (``encoders.normalize_image``) takes any float.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from domain_gap.mitigations.base import FitImage, FittedImageTransform, check_fit_set
from domain_gap.mitigations.checks import check_image_pair, check_keys, param_array
from domain_gap.mitigations.stats import pooled_moments

__all__ = ["FittedRGBNormalize", "RGBNormalize"]

NAME = "rgb_normalize"
_KEYS = ("source_mean", "source_std", "target_mean", "target_std")


@dataclass(frozen=True, eq=False)
class FittedRGBNormalize(FittedImageTransform):
    """Fitted moments, float64 ``(3,)`` each (0..255 scale)."""

    name: ClassVar[str] = NAME
    source_mean: np.ndarray
    source_std: np.ndarray
    target_mean: np.ndarray
    target_std: np.ndarray

    def apply(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """The affine map on valid pixels; padding unchanged; float32, not clipped."""
        img, mask = check_image_pair(image, valid)
        scale = self.source_std / self.target_std
        out = img.astype(np.float32)
        mapped = (img[mask] - self.target_mean) * scale + self.source_mean
        out[mask] = mapped.astype(np.float32)
        return out

    def params(self) -> dict[str, Any]:
        return {k: getattr(self, k).tolist() for k in _KEYS}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> FittedRGBNormalize:
        check_keys(params, _KEYS, NAME)
        arrays = {k: param_array(params, k, (3,)) for k in _KEYS}
        for k in ("source_std", "target_std"):
            if (arrays[k] <= 0).any():
                raise ValueError(f"params[{k!r}]: expected positive values, got {params[k]}")
        return cls(**arrays)


@dataclass(frozen=True)
class RGBNormalize:
    """Per-channel mean/std matching of the target to the source (no options)."""

    name: ClassVar[str] = NAME

    def fit(self, source: Sequence[FitImage], target: Sequence[FitImage]) -> FittedRGBNormalize:
        """Pooled valid-pixel moments of both sets; ValueError if a channel is constant."""
        src_mean, src_std = pooled_moments(check_fit_set(source, "source"))
        tgt_mean, tgt_std = pooled_moments(check_fit_set(target, "target"))
        for name, std in (("source", src_std), ("target", tgt_std)):
            if (std == 0).any():
                flat = np.flatnonzero(std == 0).tolist()
                raise ValueError(
                    f"{name}: expected varying valid pixels, channel(s) {flat} constant"
                )
        return FittedRGBNormalize.from_params(
            {
                "source_mean": src_mean.tolist(),
                "source_std": src_std.tolist(),
                "target_mean": tgt_mean.tolist(),
                "target_std": tgt_std.tolist(),
            }
        )
