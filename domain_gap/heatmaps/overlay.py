"""The platform's CAM view: the predicted class's closed-form CAM over the image (pure numpy).

The ONNX model's optional ``cam`` output (``models.export``, ``cam=True``) is the Grad-CAM at
the ``classifier`` layer in closed form, ReLU of each class's pre-upsampling score without
its bias, so the binder needs no torch and shows the same maps as the local report at that
layer (after normalisation).
"""

from __future__ import annotations

import numpy as np

from domain_gap.metrics import predict
from domain_gap.visualize import heatmap_overlay

__all__ = ["cam_overlay", "predicted_class_cam"]


def predicted_class_cam(logits: np.ndarray, cam: np.ndarray) -> tuple[int, np.ndarray]:
    """The class predicted on the most pixels and its CAM scaled to [0, 1] (all zero without
    mass). ``logits`` (C, H, W), ``cam`` (C, h, w) of one image."""
    pred = predict(np.asarray(logits)[None])[0]
    counts = np.bincount(pred.ravel(), minlength=logits.shape[0])
    c = int(np.argmax(counts))
    heat = np.clip(np.asarray(cam[c], dtype=np.float64), 0.0, None)
    peak = heat.max()
    return c, heat / peak if peak > 0 else heat


def cam_overlay(image: np.ndarray, logits: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """RGB uint8: the image with the predicted class's CAM blended over it ('jet')."""
    _, heat = predicted_class_cam(logits, cam)
    return heatmap_overlay(image, heat.astype(np.float32), alpha=0.5)
