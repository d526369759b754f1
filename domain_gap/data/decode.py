"""Bytes → arrays for the three file kinds, each failure a DataError naming the file."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np

from domain_gap.data.errors import DataError
from domain_gap.labels import check_train_ids, color_to_train_id, id_to_train_id

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_MAGIC = b"\xff\xd8"
_JPEG_END = b"\xff\xd9"


def _check_complete(data: bytes, source: str) -> None:
    """Catch truncated files that OpenCV would half-decode (it only warns for those)."""
    if data.startswith(_PNG_MAGIC):
        if not data.rstrip(b"\x00").endswith(_PNG_END):
            raise DataError(
                f"{source}: truncated PNG (no IEND chunk at the end); expected a whole PNG file"
            )
    elif data.startswith(_JPEG_MAGIC):
        if _JPEG_END not in data[-64:]:
            raise DataError(
                f"{source}: truncated JPEG (no end-of-image marker); expected a whole JPEG file"
            )
    else:
        raise DataError(f"{source}: not a PNG or JPEG file (unknown signature {data[:8]!r})")


def decode_image(data: bytes, source: str) -> np.ndarray:
    """A PNG/JPEG as uint8 RGB (H, W, 3)."""
    _check_complete(data, source)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise DataError(f"{source}: corrupt image, OpenCV cannot decode it; expected a PNG or JPEG")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _palette_indices(data: bytes, source: str) -> np.ndarray:
    """The indices of a palette PNG (OpenCV would expand them to the palette's colours)."""
    import io

    from PIL import Image  # Pillow comes with scikit-image and matplotlib

    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im, dtype=np.uint8).copy()
    except (OSError, ValueError) as exc:
        raise DataError(f"{source}: corrupt palette PNG ({exc})") from None


def decode_label_ids(data: bytes, source: str) -> np.ndarray:
    """A single-channel label PNG (ids or trainIds) as uint8 (H, W); a palette PNG (GTA5's
    labels) gives its indices, not the palette's colours."""
    _check_complete(data, source)
    if data.startswith(_PNG_MAGIC) and len(data) > 25 and data[25] == 3:  # IHDR colour type
        return _palette_indices(data, source)
    ids = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if ids is None or ids.size == 0:
        raise DataError(f"{source}: corrupt label PNG, OpenCV cannot decode it")
    if ids.ndim != 2 or ids.dtype != np.uint8:
        hint = " (a colour label image: label_format color)" if ids.ndim == 3 else ""
        raise DataError(
            f"{source}: expected a single-channel 8-bit labelIds PNG, got "
            f"{ids.dtype} with shape {ids.shape}{hint}"
        )
    return ids


def decode_label(
    data: bytes,
    source: str,
    image_hw: tuple[int, int] | None = None,
    label_format: str = "labelIds",
) -> np.ndarray:
    """A label PNG (``labelIds``, ``trainIds`` or Cityscapes ``color``) as uint8 trainIds
    (void 255), checked against the image size."""
    decode = decode_image if label_format == "color" else decode_label_ids
    raw = decode(data, source)
    if image_hw is not None and raw.shape[:2] != tuple(image_hw):
        raise DataError(
            f"{source}: label is {raw.shape[1]}x{raw.shape[0]} (WxH) but its image is "
            f"{image_hw[1]}x{image_hw[0]}; expected the same size"
        )
    try:
        if label_format == "color":
            return color_to_train_id(raw, source=source)
        if label_format == "trainIds":
            return check_train_ids(raw, source).astype(np.uint8)
        return id_to_train_id(raw, source=source)
    except ValueError as exc:  # UnknownLabelIdError is one
        raise DataError(str(exc)) from None


def decode_vehicle(data: bytes, source: str) -> dict[str, float]:
    """A Cityscapes ``*_vehicle.json`` as {key: float}."""
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"{source}: not valid JSON ({exc}); expected a vehicle metadata object"
        ) from None
    if not isinstance(raw, dict):
        raise DataError(f"{source}: expected a JSON object of numbers, got {type(raw).__name__}")
    out = {}
    for key, value in raw.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise DataError(f"{source}: key {key!r} must be a finite number, got {value!r}")
        out[str(key)] = float(value)
    return out
