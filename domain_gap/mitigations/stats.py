"""Pooled statistics of the valid pixels of a fit set, streamed image by image.

Pooled means every valid pixel of every image weighs the same (a large frame counts more than a
small one), which is what "the domain's colour distribution" means. uint8 sums are accumulated
in int64, so the moments are exact whatever the number of pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from domain_gap.mitigations.base import FitImage

__all__ = ["pooled_histograms", "pooled_moments"]


def pooled_moments(images: Sequence[FitImage]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std of all valid pixels, float64 ``(3,)`` each."""
    count = 0
    total = np.zeros(3, np.int64)
    squares = np.zeros(3, np.int64)
    for item in images:
        pixels = item.image[item.valid].astype(np.int64)
        count += pixels.shape[0]
        total += pixels.sum(axis=0)
        squares += (pixels * pixels).sum(axis=0)
    mean = total / count
    # N·Σx² - (Σx)² in Python integers (exact, no int64 overflow); one rounding at the division.
    spread = [int(s) * count - int(t) * int(t) for s, t in zip(squares, total, strict=True)]
    var = np.array([v / (count * count) for v in spread], np.float64)
    return mean, np.sqrt(var)


def pooled_histograms(images: Sequence[FitImage]) -> np.ndarray:
    """Per-channel counts of each uint8 value over all valid pixels, int64 ``(3, 256)``."""
    counts = np.zeros((3, 256), np.int64)
    for item in images:
        pixels = item.image[item.valid]
        for c in range(3):
            counts[c] += np.bincount(pixels[:, c], minlength=256)
    return counts
