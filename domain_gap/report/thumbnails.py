"""Small example images for the report: the model input above its prediction overlay.

Predictions come from the extraction cache (a strided mask, see
``domain_gap.analysis.extract.PRED_STRIDE``); colours and blending are the shared visualizers'.
"""

from __future__ import annotations

import cv2
import numpy as np

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


def sample_thumbnail(
    image: np.ndarray, pred: np.ndarray | None, width: int = THUMB_WIDTH
) -> np.ndarray:
    """The input image, and below it the predicted classes blended over it (uint8 RGB)."""
    small = resize_to_width(np.asarray(image, dtype=np.uint8), width)
    if pred is None:
        return small
    mask = resize_mask(np.asarray(pred, dtype=np.uint8), small.shape[:2])
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
