"""The per-image metadata implementation before it was batched (commit ba1b053), kept only as
the reference the batched ``domain_gap.metadata`` functions are checked against."""

from __future__ import annotations

import math

import numpy as np

from domain_gap.labels import IGNORE_INDEX, NUM_CLASSES
from domain_gap.metadata import BRIGHT_LUMA, DARK_LUMA, IMAGE_KEYS, LABEL_KEYS

_NAN = float("nan")


def _check_image_valid(
    image: np.ndarray, valid: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(
            f"image: expected uint8 RGB of shape (H, W, 3), got {img.dtype} {img.shape}"
        )
    mask = np.ones(img.shape[:2], dtype=bool) if valid is None else np.asarray(valid)
    if mask.shape != img.shape[:2] or mask.dtype != bool:
        raise ValueError(
            f"valid: expected a bool mask of shape {img.shape[:2]}, got {mask.dtype} {mask.shape}"
        )
    return img, mask


def _luma(planes: np.ndarray) -> np.ndarray:
    """Rec.601 luma on the 0-255 scale, float64, of (3, H, W) colour planes."""
    r, g, b = (p.astype(np.float64) for p in planes)
    return 0.299 * r + 0.587 * g + 0.114 * b


def _valid_box(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The rectangle the valid pixels fill exactly (padding is bands), or None if they don't."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    inner = mask[box]
    return box if inner.all() and inner.size == np.count_nonzero(mask) else None


def _take(arr: np.ndarray, mask: np.ndarray, box: tuple[slice, slice] | None) -> np.ndarray:
    """``arr[..., mask]`` (row-major order): a slice when the mask is the rectangle ``box``,
    several times faster than the boolean gather and the same values in the same order."""
    if box is None:
        return arr[..., mask]
    return arr[(..., *box)].reshape(*arr.shape[:-2], -1)


def _laplacian_variance(luma: np.ndarray, valid: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian where the pixel and its 4 neighbours are valid.

    Pixels on the image border or next to padding are left out, so the step between content
    and padding is never counted as sharpness.
    """
    if luma.shape[0] < 3 or luma.shape[1] < 3:
        return _NAN
    centre = luma[1:-1, 1:-1]
    lap = luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4.0 * centre
    ok = valid[1:-1, 1:-1] & valid[:-2, 1:-1] & valid[2:, 1:-1] & valid[1:-1, :-2] & valid[1:-1, 2:]
    return float(lap[ok].var()) if ok.any() else _NAN


def _entropy_bits(luma: np.ndarray) -> float:
    """Shannon entropy (bits) of the 256-bin histogram of the rounded luma."""
    hist = np.bincount(np.clip(np.rint(luma), 0, 255).astype(np.intp), minlength=256)
    p = hist[hist > 0] / hist.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


def _colorfulness(rgb: np.ndarray) -> float:
    """Hasler & Süsstrunk (2003) colourfulness on (N, 3) pixels in 0-255."""
    r, g, b = (np.asarray(rgb[:, i], dtype=np.float64) for i in range(3))
    rg = r - g
    yb = 0.5 * (r + g) - b
    sigma = math.hypot(rg.std(), yb.std())
    mu = math.hypot(rg.mean(), yb.mean())
    return float(sigma + 0.3 * mu)


def _half_brightness(luma: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """Mean luma of the upper and lower half of the valid region's rows (sky vs road)."""
    rows = np.flatnonzero(valid.any(axis=1))
    mid = (rows[0] + rows[-1] + 1) // 2
    top, bottom = valid.copy(), valid.copy()
    top[mid:] = False
    bottom[:mid] = False
    t = float(luma[top].mean()) if top.any() else _NAN
    return t, float(luma[bottom].mean())


def image_metadata(image: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
    """Image statistics over the valid pixels of a uint8 RGB model input (keys: IMAGE_KEYS).

    Colour means/stds and ``brightness`` (mean Rec.601 luma) are on the 0-255 scale;
    ``contrast_rms`` is the std of luma/255; ``saturation`` the mean HSV saturation in [0, 1];
    ``sharpness`` the variance of the luma's 4-neighbour Laplacian away from borders and
    padding; ``colorfulness`` Hasler-Süsstrunk; ``entropy`` the luma histogram entropy in bits;
    ``dark_fraction``/``bright_fraction`` the share of luma < 20 / > 235; ``pad_fraction`` the
    share of padding. ``valid=None`` means every pixel is real. Without any valid pixel every
    statistic except ``pad_fraction`` is NaN.
    """
    img, mask = _check_image_valid(image, valid)
    out = dict.fromkeys(IMAGE_KEYS, _NAN)
    out["pad_fraction"] = float(1.0 - mask.mean()) if mask.size else _NAN
    if not mask.any():
        return out
    planes = np.ascontiguousarray(np.moveaxis(img, -1, 0))  # (3, H, W): rows reduce fast
    box = _valid_box(mask)
    channels = _take(planes, mask, box).astype(np.float64)  # (3, N)
    luma_map = _luma(planes)
    luma = _take(luma_map, mask, box)
    means, stds = channels.mean(axis=1), channels.std(axis=1)
    for i, ch in enumerate("rgb"):
        out[f"mean_{ch}"] = float(means[i])
        out[f"std_{ch}"] = float(stds[i])
    out["brightness"] = float(luma.mean())
    out["brightness_top"], out["brightness_bottom"] = _half_brightness(luma_map, mask)
    out["contrast_rms"] = float((luma / 255.0).std())
    cmax, cmin = channels.max(axis=0), channels.min(axis=0)
    out["saturation"] = float(np.where(cmax > 0, (cmax - cmin) / np.maximum(cmax, 1), 0.0).mean())
    out["sharpness"] = _laplacian_variance(luma_map, mask)
    out["colorfulness"] = _colorfulness(channels.T)
    out["entropy"] = _entropy_bits(luma)
    out["dark_fraction"] = float((luma < DARK_LUMA).mean())
    out["bright_fraction"] = float((luma > BRIGHT_LUMA).mean())
    return out


def label_metadata(label: np.ndarray | None, valid: np.ndarray | None = None) -> dict[str, float]:
    """Class composition over the valid pixels (keys: LABEL_KEYS).

    ``frac_<class>`` and ``frac_void`` are shares of the valid (non-padding) pixels and sum to
    1; ``num_classes_present`` counts classes with at least one pixel. With ``label=None``
    (unlabeled sample) or no valid pixel, every value is NaN (code-loader's "absent").
    """
    out = dict.fromkeys(LABEL_KEYS, _NAN)
    if label is None:
        return out
    y = np.asarray(label)
    if y.ndim != 2 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"label: expected integer trainIds of shape (H, W), got {y.dtype} {y.shape}"
        )
    mask = np.ones(y.shape, dtype=bool) if valid is None else np.asarray(valid)
    if mask.shape != y.shape or mask.dtype != bool:
        raise ValueError(
            f"valid: expected a bool mask of shape {y.shape}, got {mask.dtype} {mask.shape}"
        )
    values = y[mask].astype(np.int64)
    bad = (values != IGNORE_INDEX) & ((values < 0) | (values >= NUM_CLASSES))
    if bad.any():
        raise ValueError(
            f"label: values {sorted(set(values[bad].tolist()))[:10]} are neither a trainId in "
            f"0..{NUM_CLASSES - 1} nor void ({IGNORE_INDEX})"
        )
    if values.size == 0:
        return out
    counts = np.bincount(
        np.where(values == IGNORE_INDEX, NUM_CLASSES, values), minlength=NUM_CLASSES + 1
    )
    fractions = counts / values.size
    for key, frac in zip(LABEL_KEYS[: NUM_CLASSES + 1], fractions, strict=True):
        out[key] = float(frac)
    out["num_classes_present"] = float((counts[:NUM_CLASSES] > 0).sum())
    return out
