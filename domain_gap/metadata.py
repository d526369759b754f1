"""Per-sample metadata: image statistics, class composition and vehicle signals.

These are the input-level quantities used to explain a domain gap (brightness, contrast,
sharpness, colour, scene composition...). Statistics are computed on the *valid* region of the
model input only, so letterbox padding never shifts a mean or creates a fake edge.

Every function returns a fixed set of keys (the binder needs one key set per metadata
function) with plain ``float``/``str`` values:

- :func:`image_metadata` — :data:`IMAGE_KEYS`; NaN when the image has no valid pixel.
- :func:`label_metadata` — :data:`LABEL_KEYS`; **all NaN when the sample has no label**. NaN is
  code-loader's absent value (``code_loader.utils.is_absent_metadata_value``), stored as "none"
  rather than as a fake number, so unlabeled samples are never mistaken for "0 % road".
- :func:`vehicle_metadata` — ``vehicle_<snake_case key>`` for each key given; empty when the
  sample has no vehicle data (no value is ever invented). Pass ``keys`` to get a fixed set,
  with NaN for keys this sample lacks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from domain_gap.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES

__all__ = [
    "IMAGE_KEYS",
    "INFO_KEYS",
    "LABEL_KEYS",
    "compute_metadata",
    "compute_metadata_batch",
    "image_metadata",
    "image_metadata_batch",
    "label_metadata",
    "label_metadata_batch",
    "metadata_keys",
    "vehicle_key",
    "vehicle_metadata",
]

DARK_LUMA = 20.0
"""Luma (0-255) below which a pixel counts as dark."""
BRIGHT_LUMA = 235.0
"""Luma (0-255) above which a pixel counts as bright (near saturation)."""

INFO_KEYS: tuple[str, ...] = (
    "domain",
    "group",
    "file_name",
    "orig_height",
    "orig_width",
    "aspect_ratio",
)
IMAGE_KEYS: tuple[str, ...] = (
    "mean_r",
    "mean_g",
    "mean_b",
    "std_r",
    "std_g",
    "std_b",
    "brightness",
    "brightness_top",
    "brightness_bottom",
    "contrast_rms",
    "saturation",
    "sharpness",
    "colorfulness",
    "entropy",
    "dark_fraction",
    "bright_fraction",
    "pad_fraction",
)
LABEL_KEYS: tuple[str, ...] = (
    *(f"frac_{name.replace(' ', '_')}" for name in CLASS_NAMES),
    "frac_void",
    "num_classes_present",
)

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


_LUMA_LUT = np.stack([w * np.arange(256.0) for w in (0.299, 0.587, 0.114)], axis=-1)[None]
"""(1, 256, 3) float64: each channel value times its Rec.601 weight, the products the per-pixel
formula ``0.299 * r + 0.587 * g + 0.114 * b`` forms (so the sums below are bit for bit its)."""
_HIST_MAX = 1 << 24
"""OpenCV's histograms count in float32: exact up to 2**24 pixels per call."""
_SAT = np.divide(
    np.subtract.outer(np.arange(256.0), np.arange(256.0)),
    np.maximum(np.arange(256.0), 1)[:, None],
)
_SAT[0] = 0.0
"""(256, 256) HSV saturation (max - min) / max of a pixel by its (max, min) channel value."""
_SAT = np.where(_SAT >= 0, _SAT, 0.0)  # (max, min) pairs with min > max never occur


def _luma_maps(images: np.ndarray) -> np.ndarray:
    """Rec.601 luma (0-255, float64) of (B, H, W, 3) uint8 RGB images, as (B, H, W)."""
    b, h, w, _ = images.shape
    if images.size == 0:
        return np.zeros((b, h, w))
    parts = cv2.LUT(images.reshape(b * h, w, 3), _LUMA_LUT)  # one table look-up a channel
    luma = parts[..., 0] + parts[..., 1]
    luma += parts[..., 2]
    return luma.reshape(b, h, w)


def _hist(images: list[np.ndarray], channels: list[int], mask: np.ndarray, bins: int) -> np.ndarray:
    """Exact int64 counts of ``cv2.calcHist`` over 0..255 (rows in blocks below 2**24 pixels)."""
    h, w = mask.shape
    step = max(1, _HIST_MAX // max(w, 1))
    shape = [bins] * len(channels)
    out = np.zeros(shape, np.int64)
    ranges = [0, 256] * len(channels)
    for r in range(0, h, step):
        part = [np.ascontiguousarray(im[r : r + step]) for im in images]
        m = np.ascontiguousarray(mask[r : r + step]).view(np.uint8)
        counts = cv2.calcHist(part, channels, m, shape, ranges)
        out += np.rint(counts).astype(np.int64).reshape(shape)
    return out


def _moments(img: np.ndarray, mask: np.ndarray) -> tuple[int, list[int], list[list[int]]]:
    """Valid-pixel count n, channel sums S and the exact integer scatter matrix
    M = n * Σ x xᵀ - S Sᵀ of the RGB values, from three 2-D channel histograms."""
    v = np.arange(256, dtype=np.int64)
    pairs = {(0, 1): _hist([img], [0, 1], mask, 256), (0, 2): _hist([img], [0, 2], mask, 256)}
    pairs[(1, 2)] = _hist([img], [1, 2], mask, 256)
    rg = pairs[(0, 1)]
    n = int(rg.sum())
    marg = [rg.sum(axis=1), rg.sum(axis=0), pairs[(0, 2)].sum(axis=0)]
    s = [int(m @ v) for m in marg]
    sq = [int(m @ (v * v)) for m in marg]
    cross = {k: int(v @ hist @ v) for k, hist in pairs.items()}
    g = [[sq[0], cross[(0, 1)], cross[(0, 2)]], [0, sq[1], cross[(1, 2)]], [0, 0, sq[2]]]
    for i in range(3):
        for j in range(i):
            g[i][j] = g[j][i]
    scatter = [[n * g[i][j] - s[i] * s[j] for j in range(3)] for i in range(3)]
    return n, s, scatter


def _var(weights: tuple[int, int, int], scatter: list[list[int]], n: int, scale: int) -> float:
    """Variance of Σ weights·channel / scale over the valid pixels, exact before one rounding."""
    q = sum(weights[i] * weights[j] * scatter[i][j] for i in range(3) for j in range(3))
    return max(q, 0) / (n * n * scale * scale)


def _valid_box(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The rectangle the valid pixels fill exactly (padding is bands), or None if they don't."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    inner = mask[box]
    return box if inner.all() and inner.size == np.count_nonzero(mask) else None


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


def _box_laplacian_variance(luma: np.ndarray, box: tuple[slice, slice]) -> float:
    """:func:`_laplacian_variance` when the valid pixels are exactly ``box``: the same
    Laplacian on the box alone, whose inner pixels are exactly those with 4 valid neighbours."""
    inner = luma[box]
    if inner.shape[0] < 3 or inner.shape[1] < 3:
        return _NAN
    centre = inner[1:-1, 1:-1]
    lap = inner[:-2, 1:-1] + inner[2:, 1:-1] + inner[1:-1, :-2] + inner[1:-1, 2:] - 4.0 * centre
    return float(lap.ravel().var())


def _entropy_bits(hist: np.ndarray) -> float:
    """Shannon entropy (bits) of a 256-bin histogram of the rounded luma."""
    p = hist[hist > 0] / hist.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


def _half_brightness(luma: np.ndarray, valid: np.ndarray, box: tuple | None) -> tuple[float, float]:
    """Mean luma of the upper and lower half of the valid region's rows (sky vs road)."""
    rows = np.flatnonzero(valid.any(axis=1))
    mid = (rows[0] + rows[-1] + 1) // 2
    if box is not None:
        cols = box[1]
        top = luma[box[0].start : mid, cols]
        bottom = luma[mid : box[0].stop, cols]
        t = float(top.mean()) if top.size else _NAN
        return t, float(bottom.mean())
    upper = valid.copy()
    upper[mid:] = False
    lower = valid.copy()
    lower[:mid] = False
    t = float(luma[upper].mean()) if upper.any() else _NAN
    return t, float(luma[lower].mean())


def _check_batch(images: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    imgs = np.asarray(images)
    if imgs.ndim != 4 or imgs.shape[3] != 3 or imgs.dtype != np.uint8:
        raise ValueError(
            f"images: expected uint8 RGB of shape (B, H, W, 3), got {imgs.dtype} {imgs.shape}"
        )
    mask = np.ones(imgs.shape[:3], dtype=bool) if valid is None else np.asarray(valid)
    if mask.shape != imgs.shape[:3] or mask.dtype != bool:
        raise ValueError(
            f"valid: expected a bool mask of shape {imgs.shape[:3]}, got {mask.dtype} {mask.shape}"
        )
    return np.ascontiguousarray(imgs), np.ascontiguousarray(mask)


def image_metadata_batch(
    images: np.ndarray, valid: np.ndarray | None = None
) -> list[dict[str, float]]:
    """:func:`image_metadata` of each image of a (B, H, W, 3) uint8 batch, with ``valid`` its
    (B, H, W) masks, computed for the batch at once.

    The luma maps, channel extremes and dark/bright tests are whole-batch array operations;
    means, standard deviations, contrast and colourfulness come exactly from integer channel
    moments (three 2-D histograms of the valid pixels), saturation from a histogram of each
    pixel's (max, min) channel pair, entropy from a histogram of the rounded luma, and no
    valid pixel is ever gathered when the valid region is a rectangle (letterbox padding).
    """
    imgs, masks = _check_batch(images, valid)
    luma = _luma_maps(imgs)
    cmax = np.maximum(np.maximum(imgs[..., 0], imgs[..., 1]), imgs[..., 2])
    cmin = np.minimum(np.minimum(imgs[..., 0], imgs[..., 1]), imgs[..., 2])
    rounded = np.rint(luma).astype(np.uint8)  # 0 <= luma <= 255 + 3e-14: no clip needed
    dark = ((luma < DARK_LUMA) & masks).sum(axis=(1, 2))
    bright = ((luma > BRIGHT_LUMA) & masks).sum(axis=(1, 2))
    out = []
    for i in range(len(imgs)):
        out.append(
            _image_stats(
                imgs[i], masks[i], luma[i], rounded[i], cmax[i], cmin[i], dark[i], bright[i]
            )
        )
    return out


def _image_stats(
    img: np.ndarray,
    mask: np.ndarray,
    luma: np.ndarray,
    rounded: np.ndarray,
    cmax: np.ndarray,
    cmin: np.ndarray,
    dark: int,
    bright: int,
) -> dict[str, float]:
    out = dict.fromkeys(IMAGE_KEYS, _NAN)
    out["pad_fraction"] = float(1.0 - np.count_nonzero(mask) / mask.size) if mask.size else _NAN
    if not mask.any():
        return out
    n, s, m = _moments(img, mask)
    for i, ch in enumerate("rgb"):
        out[f"mean_{ch}"] = s[i] / n
        out[f"std_{ch}"] = math.sqrt(m[i][i] / (n * n))
    out["brightness"] = (299 * s[0] + 587 * s[1] + 114 * s[2]) / (1000 * n)
    box = _valid_box(mask)
    out["brightness_top"], out["brightness_bottom"] = _half_brightness(luma, mask, box)
    out["contrast_rms"] = math.sqrt(_var((299, 587, 114), m, n, 1000 * 255))
    pairs = _hist([cmax, cmin], [0, 1], mask, 256)
    out["saturation"] = float((pairs * _SAT).sum() / n)
    out["sharpness"] = (
        _laplacian_variance(luma, mask) if box is None else _box_laplacian_variance(luma, box)
    )
    # Hasler & Süsstrunk (2003): rg = r - g, yb = (r + g) / 2 - b
    sigma = math.hypot(math.sqrt(_var((1, -1, 0), m, n, 1)), math.sqrt(_var((1, 1, -2), m, n, 2)))
    mu = math.hypot((s[0] - s[1]) / n, (s[0] + s[1] - 2 * s[2]) / (2 * n))
    out["colorfulness"] = float(sigma + 0.3 * mu)
    out["entropy"] = _entropy_bits(_hist([rounded], [0], mask, 256))
    out["dark_fraction"] = int(dark) / n
    out["bright_fraction"] = int(bright) / n
    return out


def image_metadata(image: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
    """Image statistics over the valid pixels of a uint8 RGB model input (keys: IMAGE_KEYS).

    Colour means/stds and ``brightness`` (mean Rec.601 luma) are on the 0-255 scale;
    ``contrast_rms`` is the std of luma/255; ``saturation`` the mean HSV saturation in [0, 1];
    ``sharpness`` the variance of the luma's 4-neighbour Laplacian away from borders and
    padding; ``colorfulness`` Hasler-Süsstrunk; ``entropy`` the luma histogram entropy in bits;
    ``dark_fraction``/``bright_fraction`` the share of luma < 20 / > 235; ``pad_fraction`` the
    share of padding. ``valid=None`` means every pixel is real. Without any valid pixel every
    statistic except ``pad_fraction`` is NaN. (One image of :func:`image_metadata_batch`.)
    """
    img, mask = _check_image_valid(image, valid)
    return image_metadata_batch(img[None], mask[None])[0]


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
    if y.dtype == np.uint8:  # one histogram of the valid pixels, nothing gathered
        hist = _hist([np.ascontiguousarray(y)], [0], mask, 256)
        bad_values = [int(k) for k in np.flatnonzero(hist[NUM_CLASSES:IGNORE_INDEX])]
        bad_values = [k + NUM_CLASSES for k in bad_values]
        counts = np.append(hist[:NUM_CLASSES], hist[IGNORE_INDEX])
    else:
        values = y[mask].astype(np.int64)
        bad = (values != IGNORE_INDEX) & ((values < 0) | (values >= NUM_CLASSES))
        bad_values = sorted(set(values[bad].tolist()))
        counts = np.bincount(
            np.where(values == IGNORE_INDEX, NUM_CLASSES, np.where(bad, 0, values)),
            minlength=NUM_CLASSES + 1,
        )
    if bad_values:
        raise ValueError(
            f"label: values {bad_values[:10]} are neither a trainId in "
            f"0..{NUM_CLASSES - 1} nor void ({IGNORE_INDEX})"
        )
    n = int(counts.sum())
    if n == 0:
        return out
    fractions = counts / n
    for key, frac in zip(LABEL_KEYS[: NUM_CLASSES + 1], fractions, strict=True):
        out[key] = float(frac)
    out["num_classes_present"] = float((counts[:NUM_CLASSES] > 0).sum())
    return out


def label_metadata_batch(
    labels: Sequence[np.ndarray | None], valid: Sequence[np.ndarray | None]
) -> list[dict[str, float]]:
    """:func:`label_metadata` of each (label, valid mask) pair of a batch."""
    return [label_metadata(y, v) for y, v in zip(labels, valid, strict=True)]


def vehicle_key(name: str) -> str:
    """``"yawRate"`` / ``"yaw rate"`` → ``"vehicle_yaw_rate"`` (JSON-friendly snake_case)."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    snake = re.sub(r"[^0-9a-zA-Z]+", "_", snake).strip("_").lower()
    if not snake:
        raise ValueError(f"vehicle: key {name!r} has no letters or digits")
    return f"vehicle_{snake}"


def vehicle_metadata(
    vehicle: Mapping[str, object] | None, keys: Iterable[str] | None = None
) -> dict[str, float]:
    """Vehicle signals as ``vehicle_<key>`` floats.

    Without ``keys``, one field per key present in ``vehicle`` (nothing when it is empty or
    None). With ``keys``, exactly those fields, NaN where this sample lacks the value: absent,
    never invented. Raises ValueError naming the key when a value is not a number.
    """
    vehicle = vehicle or {}
    out: dict[str, float] = {}
    if keys is not None:
        out = {vehicle_key(k): _NAN for k in keys}
    for name, value in vehicle.items():
        key = vehicle_key(name)
        if keys is not None and key not in out:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            raise ValueError(f"vehicle: {name!r} must be a number, got {value!r}")
        out[key] = float(value)
    return out


def source_metadata(group: str, file_name: str, orig_hw: tuple[int, int]) -> dict[str, float | str]:
    """City or sequence, file name, and the original size and aspect before resizing."""
    h, w = (int(v) for v in orig_hw)
    if h <= 0 or w <= 0:
        raise ValueError(f"orig_hw: expected a positive (height, width), got {tuple(orig_hw)}")
    return {
        "group": str(group),
        "file_name": str(file_name),
        "orig_height": float(h),
        "orig_width": float(w),
        "aspect_ratio": w / h,
    }


def metadata_keys(vehicle_keys: Iterable[str] = ()) -> list[str]:
    """The keys :func:`compute_metadata` returns, in order, for samples with these vehicle keys.

    The label keys are always included (NaN for unlabeled samples).
    """
    return [*INFO_KEYS, *IMAGE_KEYS, *LABEL_KEYS, *(vehicle_key(k) for k in vehicle_keys)]


def compute_metadata(
    image: np.ndarray,
    label: np.ndarray | None,
    valid: np.ndarray | None,
    *,
    domain: str,
    group: str,
    file_name: str,
    orig_hw: tuple[int, int],
    vehicle: Mapping[str, object] | None = None,
    vehicle_keys: Iterable[str] | None = None,
) -> dict[str, float | str]:
    """All metadata of one sample as a flat JSON-friendly dict (see :func:`metadata_keys`).

    ``image`` is the model-input-sized uint8 RGB image, ``label`` its trainIds (None when
    unlabeled: label fields are NaN), ``valid`` the mask of real (non-padding) pixels and
    ``orig_hw`` the size before resizing. Vehicle fields appear only for keys in ``vehicle``;
    pass ``vehicle_keys`` for a fixed set across samples (NaN where a sample lacks one), as
    the Tensorleap binder needs.
    """
    out: dict[str, float | str] = {"domain": str(domain)}
    out.update(source_metadata(group, file_name, orig_hw))
    out.update(image_metadata(image, valid))
    img_hw = np.asarray(image).shape[:2]
    if label is not None and np.asarray(label).shape != img_hw:
        raise ValueError(f"label: shape {np.asarray(label).shape} does not match image {img_hw}")
    out.update(label_metadata(label, valid))
    out.update(vehicle_metadata(vehicle, vehicle_keys))
    return out


def compute_metadata_batch(
    images: np.ndarray,
    labels: Sequence[np.ndarray | None],
    valid: np.ndarray | None,
    infos: Sequence[Mapping[str, Any]],
) -> list[dict[str, float | str]]:
    """:func:`compute_metadata` of every sample of a batch, the image statistics computed for
    the batch at once (:func:`image_metadata_batch`).

    ``images`` (B, H, W, 3) uint8, ``labels`` one trainId map or None per sample, ``valid``
    (B, H, W) bool (None: every pixel real) and ``infos`` one mapping per sample of the
    keyword arguments of :func:`compute_metadata` (``domain``, ``group``, ``file_name``,
    ``orig_hw``, optional ``vehicle`` and ``vehicle_keys``). The result is that of
    :func:`compute_metadata` called on each sample, key for key.
    """
    imgs = np.asarray(images)
    if len(labels) != len(imgs) or len(infos) != len(imgs):
        raise ValueError(
            f"compute_metadata_batch: {len(imgs)} images, {len(labels)} labels, "
            f"{len(infos)} infos; expected one of each per sample"
        )
    masks = [None] * len(imgs) if valid is None else list(np.asarray(valid))
    stats = image_metadata_batch(imgs, valid)
    out = []
    for i, info in enumerate(infos):
        row: dict[str, float | str] = {"domain": str(info["domain"])}
        row.update(source_metadata(info["group"], info["file_name"], info["orig_hw"]))
        row.update(stats[i])
        label = labels[i]
        if label is not None and np.asarray(label).shape != imgs.shape[1:3]:
            raise ValueError(
                f"label: shape {np.asarray(label).shape} does not match image {imgs.shape[1:3]}"
            )
        row.update(label_metadata(label, masks[i]))
        row.update(vehicle_metadata(info.get("vehicle"), info.get("vehicle_keys")))
        out.append(row)
    return out
