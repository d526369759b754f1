"""Embeddings from feature taps: one vector per image, one vector per (image, class).

The per-image embedding is the global average of a tap; the ONNX export computes exactly this
function, so the platform and the local engine see the same vectors.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from domain_gap.labels import IGNORE_INDEX, NUM_CLASSES

__all__ = ["EMBEDDING_TAPS", "class_embeddings", "image_embedding"]

EMBEDDING_TAPS = ("aspp", "decoder", "high", "low")


def image_embedding(taps: Mapping[str, torch.Tensor], tap: str = "aspp") -> torch.Tensor:
    """Global average pooling of ``taps[tap]`` ``(B, d, h, w)`` → ``(B, d)``."""
    if tap not in EMBEDDING_TAPS:
        raise ValueError(f"tap: expected one of {EMBEDDING_TAPS}, got {tap!r}")
    if tap not in taps:
        raise KeyError(f"tap {tap!r} is not among the model's taps {sorted(taps)}")
    feature = taps[tap]
    if feature.ndim != 4:
        raise ValueError(f"tap {tap!r}: expected (B, d, h, w), got {tuple(feature.shape)}")
    return feature.mean(dim=(2, 3))


def class_embeddings(
    feature: torch.Tensor,
    labels: torch.Tensor | np.ndarray,
    num_classes: int = NUM_CLASSES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average a feature map inside each class's mask.

    ``feature`` ``(B, d, h, w)``; ``labels`` ``(B, H, W)`` trainIds with 255 for void, resized
    to ``(h, w)`` by nearest neighbour. Returns ``emb`` ``(B, C, d)`` (zero rows for classes
    without pixels) and ``counts`` ``(B, C)``, the number of feature cells behind each row —
    select rows with ``counts > 0``.
    """
    if feature.ndim != 4:
        raise ValueError(f"feature: expected (B, d, h, w), got {tuple(feature.shape)}")
    y = labels if torch.is_tensor(labels) else torch.from_numpy(np.asarray(labels))
    if y.ndim != 3 or y.shape[0] != feature.shape[0]:
        raise ValueError(
            f"labels: expected (B, H, W) with B={feature.shape[0]}, got {tuple(y.shape)}"
        )
    if y.is_floating_point():
        raise ValueError(f"labels: expected integer trainIds, got dtype {y.dtype}")
    y = y.to(device=feature.device, dtype=torch.int64)
    bad = (y != IGNORE_INDEX) & ((y < 0) | (y >= num_classes))
    if bad.any():
        raise ValueError(
            f"labels: values {sorted(set(y[bad].tolist()))[:10]} are neither a trainId in "
            f"0..{num_classes - 1} nor void ({IGNORE_INDEX})"
        )
    h, w = feature.shape[-2:]
    small = F.interpolate(y[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
    valid = small != IGNORE_INDEX
    masks = F.one_hot(torch.where(valid, small, 0), num_classes).to(feature.dtype)
    masks = masks * valid[..., None].to(feature.dtype)  # (B, h, w, C)
    counts = masks.sum(dim=(1, 2))  # (B, C)
    sums = torch.einsum("bhwc,bdhw->bcd", masks, feature)
    emb = sums / counts.clamp(min=1.0)[..., None]
    return emb, counts
