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


def to_grid(box: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """A map's valid box (padding already zeroed) area-resampled to ``grid`` (rows, cols), as
    a distribution (sums to 1; all zeros when the map has no mass)."""
    small = cv2.resize(
        np.asarray(box, dtype=np.float32), (grid[1], grid[0]), interpolation=cv2.INTER_AREA
    )
    small = np.clip(small.astype(np.float64), 0.0, None)
    total = small.sum()
    return small / total if total > 0 else np.zeros(grid)


def ring_mask(mask: np.ndarray, valid: np.ndarray, width_px: float) -> np.ndarray:
    """Valid pixels outside ``mask`` within ``width_px`` (Euclidean) of it.

    The distance transform runs on the mask's bounding box grown by the width only: every
    pixel beyond it lies farther than ``width_px`` from the mask, so the ring is exact."""
    m = np.asarray(mask, dtype=bool)
    ring = np.zeros_like(m)
    if not m.any():
        return ring
    reach = int(np.ceil(width_px))
    rows, cols = box_of(m)
    r0, r1 = max(rows.start - reach, 0), min(rows.stop + reach, m.shape[0])
    c0, c1 = max(cols.start - reach, 0), min(cols.stop + reach, m.shape[1])
    outside = ~m[r0:r1, c0:c1]
    dist = cv2.distanceTransform(outside.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    ring[r0:r1, c0:c1] = outside & (dist <= width_px)
    return ring & np.asarray(valid, dtype=bool)


def grid_entropy(p: np.ndarray) -> np.ndarray | float:
    """Normalised Shannon entropy of a distribution over grid cells (NaN without mass); over
    the last two axes, so a stack of maps gives one entropy each."""
    q = np.asarray(p, dtype=np.float64)
    flat = q.reshape(-1) if q.ndim <= 2 else q.reshape(*q.shape[:-2], -1)
    total = flat.sum(axis=-1, keepdims=True)
    r = np.divide(flat, total, out=np.zeros_like(flat), where=total > 0)
    plogp = r * np.log(r, out=np.zeros_like(r), where=r > 0)  # 0 log 0 = 0
    h = np.where(total[..., 0] > 0, -plogp.sum(axis=-1) / np.log(flat.shape[-1]), np.nan)
    return float(h) if h.ndim == 0 else h


def class_stats(
    cam: np.ndarray, mask: np.ndarray, valid: np.ndarray, ring: float, grid: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(:data:`STAT_NAMES` values, grid map) of one class's CAM in one image (NaN stats and a
    zero map when the CAM has no mass on valid pixels)."""
    stats, maps = image_stats(np.asarray(cam)[None], np.asarray(mask)[None], valid, ring, grid)
    return stats[0], maps[0]


def image_stats(
    cams: np.ndarray,
    masks: np.ndarray,
    valid: np.ndarray,
    ring: float,
    grid: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Stats (P, 5) and grid maps (P, rows, cols) of P classes' CAMs (P, H, W) in one image.

    Every statistic lives on valid pixels, so the work runs on the valid box alone, all
    classes at once (float64 sums of the CAMs' own precision, at least float32); the ring
    and the grid map are per class."""
    v = np.asarray(valid, dtype=bool)
    if len(cams) == 0:
        return np.zeros((0, len(STAT_NAMES))), np.zeros((0, *grid))
    rows, cols = box_of(v)
    vb = v[rows, cols]
    cams = np.asarray(cams)
    box = np.where(vb, cams[:, rows, cols].astype(np.result_type(cams, np.float32)), 0.0)
    m = np.asarray(masks, dtype=bool)[:, rows, cols] & vb
    height, width = vb.shape
    by_col = box.sum(axis=1, dtype=np.float64)  # (P, width)
    by_row = box.sum(axis=2, dtype=np.float64)  # (P, height)
    totals = by_col.sum(axis=1)
    maps = np.stack([to_grid(b, grid) for b in box])
    ys = (np.arange(height) + 0.5) / height
    xs = (np.arange(width) + 0.5) / width
    on = np.array([b[k].sum(dtype=np.float64) for b, k in zip(box, m, strict=True)])
    near = np.array(
        [
            b[ring_mask(k, vb, ring * height)].sum(dtype=np.float64)
            for b, k in zip(box, m, strict=True)
        ]
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.stack(
            [
                on / totals,
                near / totals,
                by_col @ xs / totals,
                by_row @ ys / totals,
                grid_entropy(maps),
            ],
            axis=1,
        )
    values[~(totals > 0)] = np.nan
    return values, maps


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
