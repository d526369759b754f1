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
from collections.abc import Iterable, Mapping

import numpy as np

from domain_gap.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES

__all__ = [
    "IMAGE_KEYS",
    "INFO_KEYS",
    "LABEL_KEYS",
    "compute_metadata",
    "image_metadata",
    "label_metadata",
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
