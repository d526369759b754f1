"""Per-image, per-class attention statistics of a CAM (pure numpy + OpenCV, no torch).

All statistics are taken over the valid (unpadded) pixels only, so padding never receives
attention mass. For a class c with mask M (its predicted, or labelled, pixels) and a CAM map
``a >= 0`` of total mass ``A = sum a``:

* ``on_object``: ``sum_M a / A``, the share of the attention on the class's own pixels;
* ``context``: the share in the ring around the object: the valid pixels outside M within
  ``ring`` x the valid image height of it (Euclidean distance; 0.05 = 12.8 px at 256 rows);
* ``centroid_x``, ``centroid_y``: the attention-weighted mean position, in normalised
  coordinates of the valid box (0 = left / top edge, 1 = right / bottom);
* ``entropy``: the Shannon entropy of the map on the fixed grid, divided by log(cells):
  1 = attention spread evenly, 0 = all of it in one cell.

The fixed grid (:func:`to_grid`) resamples the valid box to ``grid`` cells (area averaging),
so images of any aspect ratio or padding share one set of normalised cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

STAT_NAMES = ("on_object", "context", "centroid_x", "centroid_y", "entropy")
"""Columns of :attr:`AttentionRecords.stats` (and of the per-image stats arrays)."""


def box_of(valid: np.ndarray) -> tuple[slice, slice]:
    """Rows and columns spanning the valid pixels (the whole image when none is valid)."""
    v = np.asarray(valid, dtype=bool)
    if not v.any():
        return slice(0, v.shape[0]), slice(0, v.shape[1])
    rows, cols = np.flatnonzero(v.any(axis=1)), np.flatnonzero(v.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def to_grid(cam: np.ndarray, valid: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The map's valid box area-resampled to ``grid`` (rows, cols), as a distribution (sums to
    1; all zeros when the map has no mass). Padding is zeroed first."""
    rows, cols = box_of(valid)
    masked = np.where(valid, np.asarray(cam, dtype=np.float32), 0.0)[rows, cols]
    small = cv2.resize(masked, (grid[1], grid[0]), interpolation=cv2.INTER_AREA)
    small = np.clip(small.astype(np.float64), 0.0, None)
    total = small.sum()
    return small / total if total > 0 else np.zeros(grid)


def ring_mask(mask: np.ndarray, valid: np.ndarray, width_px: float) -> np.ndarray:
    """Valid pixels outside ``mask`` within ``width_px`` (Euclidean) of it."""
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return np.zeros_like(m)
    outside = (~m).astype(np.uint8)
    dist = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return (~m) & (dist <= width_px) & np.asarray(valid, dtype=bool)


def grid_entropy(p: np.ndarray) -> float:
    """Normalised Shannon entropy of a distribution over grid cells (NaN without mass)."""
    q = np.asarray(p, dtype=np.float64).ravel()
    if q.sum() <= 0:
        return float("nan")
    q = q / q.sum()
    nz = q[q > 0]
    return float(-(nz * np.log(nz)).sum() / np.log(q.size))


def class_stats(
    cam: np.ndarray, mask: np.ndarray, valid: np.ndarray, ring: float, grid: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(:data:`STAT_NAMES` values, grid map) of one class's CAM in one image (NaN stats and a
    zero map when the CAM has no mass on valid pixels)."""
    v = np.asarray(valid, dtype=bool)
    a = np.where(v, np.asarray(cam, dtype=np.float64), 0.0)
    total = a.sum()
    grid_map = to_grid(a, v, grid)
    if not total > 0:
        return np.full(len(STAT_NAMES), np.nan), grid_map
    m = np.asarray(mask, dtype=bool) & v
    rows, cols = box_of(v)
    height, width = rows.stop - rows.start, cols.stop - cols.start
    ys = (np.arange(a.shape[0]) - rows.start + 0.5) / height
    xs = (np.arange(a.shape[1]) - cols.start + 0.5) / width
    values = np.array(
        [
            a[m].sum() / total,
            a[ring_mask(m, v, ring * height)].sum() / total,
            float((a.sum(axis=0) * xs).sum() / total),
            float((a.sum(axis=1) * ys).sum() / total),
            grid_entropy(grid_map),
        ]
    )
    return values, grid_map


def image_stats(
    cams: np.ndarray,
    masks: np.ndarray,
    valid: np.ndarray,
    ring: float,
    grid: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Stats (P, 5) and grid maps (P, rows, cols) of P classes' CAMs (P, H, W) in one image."""
    out = [class_stats(c, m, valid, ring, grid) for c, m in zip(cams, masks, strict=True)]
    if not out:
        return np.zeros((0, len(STAT_NAMES))), np.zeros((0, *grid))
    return np.stack([s for s, _ in out]), np.stack([g for _, g in out])


@dataclass(frozen=True)
class AttentionRecords:
    """Every (image, class) CAM record of the analysed images, row-aligned.

    Row r belongs to image ``image[r]`` (an index into ``sample_ids``) and class ``cls[r]``.
    """

    sample_ids: np.ndarray
    domains: np.ndarray
    image: np.ndarray
    cls: np.ndarray
    stats: np.ndarray
    """(R, 5) :data:`STAT_NAMES`; NaN rows where the CAM had no mass."""
    maps: np.ndarray
    """(R, rows, cols) grid maps, each a distribution (or all zero)."""
    area: np.ndarray
    """(R,) share of the image's valid pixels in the class's mask."""

    def rows(self, domain: str, cls: int) -> np.ndarray:
        """Row indices of one class in one domain's images whose CAM has mass."""
        in_domain = self.domains[self.image] == domain
        return np.flatnonzero(in_domain & (self.cls == cls) & np.isfinite(self.stats[:, 0]))
