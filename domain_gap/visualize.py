"""Visualizers: label maps, overlays, loss and error maps as new uint8 RGB images.

Every function returns a fresh array and never writes into its inputs. Colours come from the
one class table (:mod:`domain_gap.labels`); void is always black and never a class colour.
"""

from __future__ import annotations

import cv2
import numpy as np

from domain_gap.labels import (
    CLASS_COLORS,
    CLASS_NAMES,
    IGNORE_INDEX,
    NUM_CLASSES,
    VOID_COLOR,
    check_train_ids,
)

__all__ = [
    "CORRECT_COLOR",
    "LEAP_MASK_LABELS",
    "LEAP_VOID_INDEX",
    "VOID_COLOR",
    "WRONG_COLOR",
    "colorize",
    "error_map",
    "heatmap_overlay",
    "loss_heatmap",
    "mask_for_leap",
    "overlay",
    "to_uint8",
]

CORRECT_COLOR = np.array([0, 190, 0], dtype=np.uint8)
"""error_map colour of correctly predicted pixels (green)."""
WRONG_COLOR = np.array([230, 20, 20], dtype=np.uint8)
"""error_map colour of wrongly predicted pixels (red)."""

LEAP_VOID_INDEX = NUM_CLASSES
"""Index that :func:`mask_for_leap` gives void pixels (one past the last class)."""
LEAP_MASK_LABELS: list[str] = [*CLASS_NAMES, "void"]
"""Labels for Tensorleap's ``LeapImageMask``: the 19 classes, then void at index 19."""

_LUT = np.zeros((256, 3), dtype=np.uint8)
_LUT[:NUM_CLASSES] = CLASS_COLORS
_LUT[IGNORE_INDEX] = VOID_COLOR


def _check_rgb(image: np.ndarray, name: str) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(
            f"{name}: expected uint8 RGB of shape (H, W, 3), got {img.dtype} {img.shape}"
        )
    return img


def _blend(image: np.ndarray, top: np.ndarray, alpha: float) -> np.ndarray:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a value in [0, 1], got {alpha}")
    mixed = (1.0 - alpha) * image.astype(np.float32) + alpha * top.astype(np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def _colormap(values01: np.ndarray, cmap: int) -> np.ndarray:
    """Map values in [0, 1] (NaN → 0) through an OpenCV colormap, returning RGB uint8."""
    v = np.nan_to_num(np.asarray(values01, dtype=np.float64), nan=0.0, posinf=1.0, neginf=0.0)
    idx = np.rint(np.clip(v, 0.0, 1.0) * 255.0).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(idx, cmap), cv2.COLOR_BGR2RGB)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """An image in [0, 1] (float, e.g. ``encoders.raw_image``) → uint8 (rounded, clipped).

    uint8 input is returned as a copy. NaN becomes 0. Shape is kept.
    """
    img = np.asarray(image)
    if img.dtype == np.uint8:
        return img.copy()
    if not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"image: expected uint8 or float in [0, 1], got dtype {img.dtype}")
    scaled = np.nan_to_num(img.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def colorize(labels: np.ndarray) -> np.ndarray:
    """trainIds ``(H, W)`` → RGB ``(H, W, 3)`` uint8 with the Cityscapes colours; void black."""
    return _LUT[check_train_ids(labels).astype(np.intp)]


def overlay(
    image: np.ndarray,
    mask_rgb: np.ndarray,
    alpha: float = 0.5,
    where: np.ndarray | None = None,
) -> np.ndarray:
    """Blend ``mask_rgb`` over ``image``: ``(1 - alpha) * image + alpha * mask``.

    With ``where`` (bool ``(H, W)``), blend only there and keep the image elsewhere (e.g. pass
    ``labels != 255`` to leave void pixels untouched).
    """
    img = _check_rgb(image, "image")
    top = _check_rgb(mask_rgb, "mask_rgb")
    if top.shape != img.shape:
        raise ValueError(f"mask_rgb: shape {top.shape} does not match image {img.shape}")
    out = _blend(img, top, alpha)
    if where is not None:
        keep = np.asarray(where)
        if keep.shape != img.shape[:2] or keep.dtype != bool:
            raise ValueError(f"where: expected a bool mask of shape {img.shape[:2]}")
        out = np.where(keep[..., None], out, img)
    return out


def loss_heatmap(loss_map: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """Per-pixel loss ``(H, W)`` → RGB uint8 with the 'inferno' colormap (0 = near black).

    Scaled to ``[0, vmax]``; by default ``vmax`` is the 99th percentile of the positive finite
    losses, so a few extreme pixels do not wash out the rest. Pass a fixed ``vmax`` to compare
    samples on one scale. Void pixels (loss 0), NaN and negative values show as the darkest
    colour.
    """
    loss = np.asarray(loss_map, dtype=np.float64)
    if loss.ndim != 2:
        raise ValueError(f"loss_map: expected shape (H, W), got {loss.shape}")
    if vmax is None:
        positive = loss[np.isfinite(loss) & (loss > 0)]
        vmax = float(np.percentile(positive, 99)) if positive.size else 1.0
    if not vmax > 0:
        raise ValueError(f"vmax: expected a positive value, got {vmax}")
    return _colormap(loss / vmax, cv2.COLORMAP_INFERNO)


def error_map(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Correct (green) / wrong (red) / void (black) per pixel, RGB ``(H, W, 3)`` uint8."""
    p = np.asarray(pred)
    y = check_train_ids(labels)
    if p.shape != y.shape:
        raise ValueError(f"pred: shape {p.shape} does not match labels {y.shape}")
    out = np.where((p == y)[..., None], CORRECT_COLOR, WRONG_COLOR).astype(np.uint8)
    out[y == IGNORE_INDEX] = VOID_COLOR
    return out


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Overlay a CAM-style heat map (values in [0, 1]) on ``image`` with the 'jet' colormap.

    A heat map at feature resolution is resized (bilinear) to the image size; values are
    clipped to [0, 1] and NaN counts as 0.
    """
    img = _check_rgb(image, "image")
    h = np.asarray(heat, dtype=np.float32)
    if h.ndim != 2:
        raise ValueError(f"heat: expected shape (H, W), got {h.shape}")
    if h.shape != img.shape[:2]:
        h = cv2.resize(h, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    return _blend(img, _colormap(h, cv2.COLORMAP_JET), alpha)


def mask_for_leap(labels: np.ndarray) -> np.ndarray:
    """trainIds → uint8 mask for ``LeapImageMask`` with void mapped to 19 (:data:`LEAP_VOID_INDEX`).

    Use with ``labels=LEAP_MASK_LABELS`` so void is shown as "void", never as a real class.
    """
    y = check_train_ids(labels)
    return np.where(y == IGNORE_INDEX, LEAP_VOID_INDEX, y).astype(np.uint8)
