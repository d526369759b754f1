"""Small example images for the report: the model input above its prediction overlay.

Predictions come from the extraction cache (a strided mask, see
``domain_gap.analysis.extract.PRED_STRIDE``); colours and blending are the shared visualizers'.
"""

from __future__ import annotations

import cv2
import numpy as np

from domain_gap.analysis.extract import PRED_STRIDE
from domain_gap.labels import IGNORE_INDEX
from domain_gap.visualize import colorize, overlay

THUMB_WIDTH = 176


def resize_to_width(image: np.ndarray, width: int) -> np.ndarray:
    """Area-resize an RGB image to ``width`` pixels wide, keeping its aspect ratio."""
    h, w = image.shape[:2]
    height = max(1, round(h * width / w))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a trainId mask to ``(height, width)``."""
    return cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def expand_strided(mask: np.ndarray, stride: int, shape: tuple[int, int]) -> np.ndarray:
    """Undo ``full[::stride, ::stride]``: repeat each cell ``stride`` times, crop to ``shape``."""
    big = np.repeat(np.repeat(np.asarray(mask), stride, axis=0), stride, axis=1)
    return big[: shape[0], : shape[1]]


def valid_box(valid: np.ndarray | None, shape: tuple[int, int]) -> tuple[slice, slice]:
    """Rows and columns spanning the real (unpadded) pixels; the whole image without a mask."""
    if valid is None or not np.asarray(valid).any():
        return slice(0, shape[0]), slice(0, shape[1])
    v = np.asarray(valid, dtype=bool)
    rows, cols = np.flatnonzero(v.any(axis=1)), np.flatnonzero(v.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def sample_thumbnail(
    image: np.ndarray,
    pred: np.ndarray | None,
    valid: np.ndarray | None = None,
    width: int = THUMB_WIDTH,
) -> np.ndarray:
    """The input image cropped to its real pixels, and below it the prediction blended over it.

    ``pred`` is a trainId mask at the image's size or a strided one (every
    ``PRED_STRIDE``-th pixel, as cached by the extraction); void (255) is left unblended.
    """
    img = np.asarray(image, dtype=np.uint8)
    rows, cols = valid_box(valid, img.shape[:2])
    small = resize_to_width(img[rows, cols], width)
    if pred is None:
        return small
    mask = np.asarray(pred, dtype=np.uint8)
    if mask.shape != img.shape[:2]:
        mask = expand_strided(mask, PRED_STRIDE, img.shape[:2])
    mask = resize_mask(np.ascontiguousarray(mask[rows, cols]), small.shape[:2])
    blended = overlay(small, colorize(mask), alpha=0.55, where=mask != IGNORE_INDEX)
    return np.concatenate([small, np.full((2, width, 3), 255, np.uint8), blended], axis=0)


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an RGB uint8 image as PNG."""
    ok, buf = cv2.imencode(
        ".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]
    )
    if not ok:
        raise ValueError(f"cannot encode an image of shape {image.shape} as PNG")
    return buf.tobytes()
