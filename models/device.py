"""Device choice and deterministic, batched inference helpers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import torch

from models.deeplab import DeepLabV3Plus
from models.embeddings import class_embeddings, image_embedding

__all__ = ["iter_batches", "run_batch", "select_device"]


def select_device(name: Literal["auto", "cpu", "cuda"] | str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU raises."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device: 'cuda' was requested but no CUDA GPU is available")
        torch.backends.cudnn.benchmark = False  # same kernels every run → same numbers
        torch.backends.cudnn.deterministic = True
        return torch.device("cuda")
    raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda', got {name!r}")


def run_batch(
    model: DeepLabV3Plus,
    images: np.ndarray | torch.Tensor,
    device: torch.device | str = "cpu",
    tap: str = "aspp",
    labels: np.ndarray | None = None,
    *,
    logits_on_device: bool = False,
) -> dict[str, Any]:
    """One forward pass in eval mode under ``torch.inference_mode()``.

    ``images`` are normalised ``(B, 3, H, W)`` float32. Returns numpy ``logits`` (B,C,H,W) and
    ``embedding`` (B,d) (:func:`image_embedding` of ``tap``); with ``labels`` (B,H,W) trainIds
    also ``class_embedding`` (B,C,d) and ``class_count`` (B,C) from the same tap.
    ``logits_on_device`` keeps the logits a tensor on ``device``, for a caller that reduces
    them there (the full-resolution logits are the one large output).
    """
    device = torch.device(device)
    x = torch.as_tensor(images, dtype=torch.float32)
    model.eval()
    with torch.inference_mode():
        taps = model.forward_taps(x.to(device))
        out = {
            "logits": taps["logits"] if logits_on_device else taps["logits"].float().cpu().numpy(),
            "embedding": image_embedding(taps, tap).float().cpu().numpy(),
        }
        if labels is not None:
            emb, counts = class_embeddings(taps[tap], labels, model.info.num_classes)
            out["class_embedding"] = emb.float().cpu().numpy()
            out["class_count"] = counts.cpu().numpy().astype(np.int64)
    return out


def iter_batches(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices covering ``range(n)`` in order (the last may be shorter)."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))
