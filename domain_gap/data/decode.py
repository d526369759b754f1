"""Bytes → arrays for the three file kinds, each failure a DataError naming the file."""

from __future__ import annotations

import json
import math
import struct
import warnings

import cv2
import numpy as np

from domain_gap.data.errors import DataError
from domain_gap.labels import check_train_ids, color_to_train_id, id_to_train_id

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_MAGIC = b"\xff\xd8"
_JPEG_END = b"\xff\xd9"
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
"""JPEG start-of-frame markers (the ones that carry the frame size)."""
DEFAULT_MAX_PIXELS = 100_000_000
"""Default decompression-bomb bound: a frame whose header declares more pixels is refused."""
VOID_LABEL_IDS = range(0, 7)
"""Cityscapes' void label ids 0..6 (unlabeled, ego vehicle, ..., ground)."""
TRAIN_ID_MAX = 18


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


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as a PNG or JPEG header declares them, read without decoding; None
    when the header holds no size (the decoder then reports the file as corrupt)."""
    if data.startswith(_PNG_MAGIC) and len(data) >= 24 and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    if data.startswith(_JPEG_MAGIC):
        i = 2
        while i + 9 <= len(data) and data[i] == 0xFF:
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
                i += 2
                continue
            if marker in _JPEG_SOF:
                height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                return width, height
            i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return None


def check_pixels(data: bytes, source: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuse a frame whose header declares more than ``max_pixels`` pixels, before any
    decoding allocates them (decompression bombs, absurd sizes)."""
    size = header_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise DataError(
            f"{source}: header declares {size[0]}x{size[1]} pixels (WxH), more than "
            f"image.max_pixels = {max_pixels:,}; expected a smaller frame (or raise the bound)"
        )


def _to_uint8(image: np.ndarray, source: str) -> np.ndarray:
    """8-bit as it is; 16-bit by its full range, refused when its values show 8-bit data."""
    if image.dtype == np.uint8:
        return image
    if image.dtype != np.uint16:
        raise DataError(f"{source}: {image.dtype} pixels; expected an 8- or 16-bit image")
    top = int(image.max()) if image.size else 0
    if top <= 255:
        raise DataError(
            f"{source}: 16-bit image whose values stay in 0..{top}, i.e. 8-bit data saved as "
            "16 bits (read as 16-bit it would be black); expected an 8-bit image: re-save it so"
        )
    return np.rint(image.astype(np.float32) / 257.0).astype(np.uint8)


def decode_image(data: bytes, source: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A PNG/JPEG as uint8 RGB (H, W, 3); a 16-bit PNG is scaled by its 16-bit range.

    A constant frame (all black, say) is returned with a warning naming the file."""
    _check_complete(data, source)
    check_pixels(data, source, max_pixels)
    # decoded straight to RGB where OpenCV can (>= 4.10): no separate BGR -> RGB pass
    flag = getattr(cv2, "IMREAD_COLOR_RGB", None)
    raw = cv2.imdecode(
        np.frombuffer(data, np.uint8),
        (cv2.IMREAD_COLOR if flag is None else flag) | cv2.IMREAD_ANYDEPTH,
    )
    if raw is None or raw.size == 0:
        raise DataError(f"{source}: corrupt image, OpenCV cannot decode it; expected a PNG or JPEG")
    rgb = _to_uint8(raw, source)
    if flag is None:
        rgb = cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB)
    if rgb.min() == rgb.max():
        warnings.warn(
            f"{source}: constant image (every pixel {int(rgb.flat[0])}); it is analysed as it is",
            stacklevel=2,
        )
    return rgb


def _palette_indices(data: bytes, source: str) -> np.ndarray:
    """The indices of a palette PNG (OpenCV would expand them to the palette's colours)."""
    import io

    from PIL import Image  # Pillow comes with scikit-image and matplotlib

    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im, dtype=np.uint8).copy()
    except (OSError, ValueError) as exc:
        raise DataError(f"{source}: corrupt palette PNG ({exc})") from None


def decode_label_ids(data: bytes, source: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A single-channel label PNG (ids or trainIds) as uint8 (H, W); a palette PNG (GTA5's
    labels) gives its indices, not the palette's colours."""
    _check_complete(data, source)
    check_pixels(data, source, max_pixels)
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


def check_not_train_ids(ids: np.ndarray, source: str) -> None:
    """Refuse a labelIds array that holds trainIds (the common mistake that turns the source
    mIoU into noise): every id is a trainId (0..18) or 255, and either 255 appears (no
    labelId) or most labelled pixels sit on the void ids 0..6, with no id of 19..33 at all."""
    ids = np.ascontiguousarray(ids, np.uint8)
    if ids.ndim == 2 and ids.size:  # one histogram pass, no index array (np.bincount makes one)
        counts = np.rint(cv2.calcHist([ids], [0], None, [256], [0, 256])).astype(np.int64).ravel()
    else:
        counts = np.bincount(ids.ravel(), minlength=256)
    if counts.sum() == 0 or counts[TRAIN_ID_MAX + 1 : 255].any():
        return
    labelled = int(counts[:255].sum())
    share = counts[: len(VOID_LABEL_IDS)].sum() / labelled if labelled else 0.0
    has_255 = bool(counts[255])
    if has_255 or share > 0.5:
        found = "the value 255 (void in trainIds, no labelId)" if has_255 else ""
        if share > 0.5:
            found += (" and " if found else "") + f"{share:.0%} of pixels on the void ids 0-6"
        raise DataError(
            f"{source}: looks like trainIds, not labelIds ({found}; no id above 18); "
            "expected Cityscapes labelIds, or set label_format: trainIds for this domain"
        )


def decode_label(
    data: bytes,
    source: str,
    image_hw: tuple[int, int] | None = None,
    label_format: str = "labelIds",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """A label PNG (``labelIds``, ``trainIds`` or Cityscapes ``color``) as uint8 trainIds
    (void 255), checked against the image size; labelIds that hold trainIds are refused."""
    decode = decode_image if label_format == "color" else decode_label_ids
    raw = decode(data, source, max_pixels)
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
        check_not_train_ids(raw, source)
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
