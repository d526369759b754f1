"""Input and parameter validation shared by the mitigations: one clear line per mistake."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "check_image",
    "check_image_pair",
    "check_keys",
    "check_valid",
    "param_array",
    "param_number",
]


def check_image(image: Any, name: str = "image") -> np.ndarray:
    """An RGB uint8 ``(H, W, 3)`` array, else ValueError naming ``name``."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[-1] != 3 or 0 in img.shape:
        raise ValueError(f"{name}: expected an RGB array of shape (H, W, 3), got {img.shape}")
    if img.dtype != np.uint8:
        raise ValueError(f"{name}: expected dtype uint8, got {img.dtype}")
    return img


def check_valid(valid: Any, shape: tuple[int, ...], name: str = "valid") -> np.ndarray:
    """A bool ``shape`` mask with at least one True pixel, else ValueError naming ``name``."""
    mask = np.asarray(valid)
    if mask.dtype != np.bool_ or mask.shape != tuple(shape):
        raise ValueError(
            f"{name}: expected a bool mask of shape {tuple(shape)}, got {mask.dtype} {mask.shape}"
        )
    if not mask.any():
        raise ValueError(f"{name}: expected at least one valid (non-padding) pixel, got none")
    return mask


def check_image_pair(image: Any, valid: Any) -> tuple[np.ndarray, np.ndarray]:
    """``apply``'s arguments: uint8 ``(H, W, 3)`` and a bool ``(H, W)`` mask."""
    img = check_image(image, "image")
    return img, check_valid(valid, img.shape[:2], "valid")


def check_keys(params: Mapping[str, Any], expected: Sequence[str], name: str) -> None:
    """``params`` is a mapping with exactly the ``expected`` keys."""
    if not isinstance(params, Mapping):
        raise ValueError(f"params: expected a mapping for {name}, got {type(params).__name__}")
    if set(params) != set(expected):
        raise ValueError(
            f"params: expected keys {sorted(expected)} for {name}, got {sorted(params)}"
        )


def param_array(params: Mapping[str, Any], key: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """``params[key]`` as a finite float64 array of ``shape`` (None = any length)."""
    try:
        arr = np.asarray(params[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"params[{key!r}]: expected nested lists of numbers") from None
    ok = arr.ndim == len(shape) and all(
        s is None or s == n for s, n in zip(shape, arr.shape, strict=True)
    )
    if not ok:
        want = tuple("N" if s is None else s for s in shape)
        raise ValueError(f"params[{key!r}]: expected shape {want}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"params[{key!r}]: expected finite numbers, got NaN or inf")
    arr.setflags(write=False)
    return arr


def param_number(params: Mapping[str, Any], key: str) -> float:
    """``params[key]`` as a finite float."""
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise ValueError(f"params[{key!r}]: expected a finite number, got {value!r}")
    return float(value)
