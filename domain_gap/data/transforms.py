"""Bring an image and its label to the model's input size under one of three resize policies.

- ``pad``: keep the aspect ratio, fit inside, centre, pad (image 0, label void 255, invalid);
- ``crop``: keep the aspect ratio, fill, centre-crop;
- ``stretch``: resize both axes independently.

Images use area interpolation when shrinking and bilinear when enlarging; labels use nearest
neighbour (OpenCV's centre-aligned ``INTER_NEAREST_EXACT``, so labels stay aligned with the
area/bilinear-resized image and no new label value ever appears).
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from domain_gap.labels import IGNORE_INDEX

Policy = Literal["pad", "crop", "stretch"]
POLICIES = ("pad", "crop", "stretch")


def _resize(image: np.ndarray, label: np.ndarray | None, h: int, w: int):
    src_h, src_w = image.shape[:2]
    shrinking = h <= src_h and w <= src_w
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    img = image if (h, w) == (src_h, src_w) else cv2.resize(image, (w, h), interpolation=interp)
    lab = None
    if label is not None:
        lab = (
            label
            if (h, w) == (src_h, src_w)
            else cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
        )
    return img, lab


def resize_pair(
    image: np.ndarray, label: np.ndarray | None, height: int, width: int, policy: Policy = "pad"
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Return ``(image uint8 (h,w,3), label uint8 (h,w) or None, valid bool (h,w))``.

    ``valid`` is False only on padding. Inputs are never modified.
    """
    if policy not in POLICIES:
        raise ValueError(f"resize policy: expected one of {list(POLICIES)}, got {policy!r}")
    if height <= 0 or width <= 0:
        raise ValueError(f"resize target: expected positive height and width, got {height}x{width}")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image: expected uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if label is not None:
        label = np.asarray(label)
        if label.shape != image.shape[:2] or label.dtype != np.uint8:
            raise ValueError(
                f"label: expected uint8 {image.shape[:2]} like the image, "
                f"got {label.dtype} {label.shape}"
            )
    src_h, src_w = image.shape[:2]
    if policy == "stretch":
        img, lab = _resize(image, label, height, width)
        return img, lab, np.ones((height, width), bool)
    if policy == "pad":
        scale = min(height / src_h, width / src_w)
        new_h = min(height, max(1, round(src_h * scale)))
        new_w = min(width, max(1, round(src_w * scale)))
    else:
        scale = max(height / src_h, width / src_w)
        new_h = max(height, round(src_h * scale))
        new_w = max(width, round(src_w * scale))
    img, lab = _resize(image, label, new_h, new_w)
    if policy == "crop":
        y0, x0 = (new_h - height) // 2, (new_w - width) // 2
        img = img[y0 : y0 + height, x0 : x0 + width]
        lab = None if lab is None else lab[y0 : y0 + height, x0 : x0 + width]
        return (
            np.ascontiguousarray(img),
            None if lab is None else np.ascontiguousarray(lab),
            np.ones((height, width), bool),
        )
    y0, x0 = (height - new_h) // 2, (width - new_w) // 2
    out_img = np.zeros((height, width, 3), np.uint8)
    out_img[y0 : y0 + new_h, x0 : x0 + new_w] = img
    valid = np.zeros((height, width), bool)
    valid[y0 : y0 + new_h, x0 : x0 + new_w] = True
    out_lab = None
    if lab is not None:
        out_lab = np.full((height, width), IGNORE_INDEX, np.uint8)
        out_lab[y0 : y0 + new_h, x0 : x0 + new_w] = lab
    return out_img, out_lab, valid
