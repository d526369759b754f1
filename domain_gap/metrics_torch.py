"""The per-pixel half of :mod:`domain_gap.metrics`, for a batch in torch, in one pass.

The extraction pass reduces each image's ``(C, H, W)`` logits to a few small arrays (loss,
confusion matrix, mean probabilities, calibration counts, predicted mask). Doing that in numpy
on one thread cost about as much as the forward pass; here it runs on the model's device and
threads, with one max and one exp over the logits feeding every output, and only the small
arrays come back to the host. The work runs on the (B, H, W, C) view of the model's
channels-last logits, one image at a time on the CPU (its dozen passes then hit the cache), the
exponentials go into one buffer reused across a pass (:func:`scratch_buffer`: a fresh 80 MB
block per batch cost ~19k page faults) and the mean probabilities are one product per image
row, summed in float64. The numbers are those of the numpy functions (``sample_loss``,
``predict``, ``confusion_matrices``, ``calibration_bins``, ``class_pixel_fractions``,
``mean_entropy``, ``mean_max_prob``), checked against them in ``tests/test_metrics_torch.py``;
the Tensorleap binder keeps calling the numpy ones on single samples.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields

import numpy as np
import torch

from domain_gap.labels import IGNORE_INDEX

__all__ = ["CHUNK_ELEMENTS", "PixelSummary", "scratch_buffer", "summarize_pixels"]


@dataclass(frozen=True)
class PixelSummary:
    """Small per-image arrays of one batch (host numpy), row i = image i."""

    loss: np.ndarray
    """(B,) float64 mean cross-entropy over non-void pixels (0.0 with none, as ``sample_loss``)."""
    confusion: np.ndarray
    """(B, C, C) int64, rows = ground truth, void excluded (``confusion_matrices``)."""
    prob_mean: np.ndarray
    """(B, C) float64 mean softmax over the valid (unpadded) pixels."""
    pred_frac: np.ndarray
    """(B, C + 1) float64 share of all pixels predicted as each class; last = padding."""
    calibration: np.ndarray
    """(B, bins, 3) float64 calibration counts over labelled valid pixels."""
    pred_small: np.ndarray
    """(B, ⌈H/stride⌉, ⌈W/stride⌉) uint8 prediction, padding = void, every stride-th pixel."""
    entropy: np.ndarray
    """(B,) float64 predictive entropy (nats) averaged over valid pixels (``mean_entropy``)."""
    max_prob: np.ndarray
    """(B,) float64 top softmax probability averaged over valid pixels (``mean_max_prob``)."""


CHUNK_ELEMENTS = 1 << 22
"""Logit values (16 MB of float32) reduced at a time on the CPU: one 19 x 256 x 512 image. The
dozen passes over a chunk then run from the cache; over a whole batch of 8 (80 MB) they ran
from memory, about 20% slower. Other devices take the batch at once."""


def summarize_pixels(
    logits: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    valid: torch.Tensor | np.ndarray,
    n_bins: int,
    stride: int,
) -> PixelSummary:
    """Reduce ``logits`` (B, C, H, W) with ``labels`` (B, H, W) trainIds (255 = void) and the
    ``valid`` (B, H, W) mask of unpadded pixels to a :class:`PixelSummary`.

    Works on the logits' device, a few images at a time on the CPU (:data:`CHUNK_ELEMENTS`);
    numpy inputs are wrapped without a copy.
    """
    x, raw, v = _checked(logits, labels, valid)
    b, c, h, w = x.shape
    step = b if x.device.type != "cpu" else max(1, CHUNK_ELEMENTS // max(c * h * w, 1))
    parts = [
        _summarize(x[i : i + step], raw[i : i + step], v[i : i + step], n_bins, stride)
        for i in range(0, max(b, 1), step)
    ]
    names = [f.name for f in fields(PixelSummary)]
    return PixelSummary(**{k: torch.cat([p[k] for p in parts]).cpu().numpy() for k in names})


def _checked(
    logits: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    valid: torch.Tensor | np.ndarray,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The inputs as float32 logits, labels and a bool mask on the logits' device, checked."""
    x = torch.as_tensor(logits)
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"logits: expected a float (B, C, H, W) tensor, got {x.dtype} {x.shape}")
    x = x.float()
    b, c, h, w = x.shape
    if c > IGNORE_INDEX:
        raise ValueError(f"logits: at most {IGNORE_INDEX} classes fit uint8, got {c}")
    raw = torch.as_tensor(labels, device=x.device)
    v = torch.as_tensor(valid, device=x.device).bool()
    if raw.shape != (b, h, w) or v.shape != (b, h, w):
        raise ValueError(
            f"labels {tuple(raw.shape)} and valid {tuple(v.shape)}: expected {(b, h, w)} "
            f"to match logits {tuple(x.shape)}"
        )
    # checked on the labels as given (uint8: one byte a pixel, and never negative)
    if bool(((raw >= c) & (raw != IGNORE_INDEX)).any()) or (
        raw.dtype != torch.uint8 and bool((raw < 0).any())
    ):
        raise ValueError(f"labels: expected trainIds in 0..{c - 1} or void ({IGNORE_INDEX})")
    return x, raw, v


def _summarize(
    x: torch.Tensor, raw: torch.Tensor, v: torch.Tensor, n_bins: int, stride: int
) -> dict[str, torch.Tensor]:
    """The :class:`PixelSummary` fields of checked inputs, as tensors on their device."""
    b, c, h, w = x.shape
    n_valid = v.sum(dim=(1, 2))
    y = raw.long()
    labelled = y != IGNORE_INDEX

    # Only the rows holding a valid or labelled pixel take part (letterbox padding is bands of
    # rows that add nothing but the padding count, which comes from ``n_valid``).
    r0, r1 = _rows_used(v | labelled)
    if (r0, r1) != (0, h):
        y, v, labelled = y[:, r0:r1], v[:, r0:r1], labelled[:, r0:r1]
    # (B, H, W, C): a view of the model's channels-last logits, classes innermost
    xl = x.permute(0, 2, 3, 1)[:, r0:r1]
    if xl.stride(-1) != 1 or xl.stride(1) != w * c:
        xl = xl.contiguous()
    top, pred = xl.max(dim=-1)  # first maximum on ties, as numpy's argmax
    picked = xl.gather(-1, torch.where(labelled, y, 0)[..., None])[..., 0]
    e = torch.sub(xl, top[..., None], out=_scratch(xl)).exp_()
    ones = torch.ones(c, dtype=e.dtype, device=e.device)
    # sums over the 19 innermost classes as one matrix-vector product: faster than a sum over
    # the last dimension, which the CPU kernels do not vectorise at this width
    total = torch.mv(e.view(-1, c), ones).view(e.shape[:-1])  # softmax = e / total
    log_total = torch.log(total)
    lse = top + log_total
    ce = torch.where(labelled, lse - picked, 0.0).double().sum(dim=(1, 2))
    n_lab = labelled.sum(dim=(1, 2))
    loss = torch.where(n_lab > 0, ce / n_lab.clamp(min=1), 0.0)

    weight = v / total  # valid pixels weighted by 1 / Σexp: Σ_pixels softmax in one product
    n_div = n_valid.clamp(min=1)
    # one image row per product (float32 over <= W pixels), the rows summed in float64:
    # within ~1e-7 of a float64 sum, where one float32 sum over H x W pixels was off by 6e-5
    rows = torch.matmul(weight[:, :, None, :], e)[:, :, 0]  # (B, H, C)
    prob_mean = rows.sum(dim=1, dtype=torch.float64) / n_div[:, None]
    # entropy = log Σe - Σ e (x - top) / Σe; Σ e·x from e·x in place (e is not needed
    # after this), no second exp
    ex = torch.mv(e.mul_(xl).view(-1, c), ones).view(e.shape[:-1])
    del e
    entropy = log_total - (ex / total - top)
    entropy = torch.where(v, entropy.clamp(min=0.0), 0.0).double().sum(dim=(1, 2)) / n_div
    max_prob = weight.double().sum(dim=(1, 2)) / n_div

    confusion, pred_frac, calibration = _tallies(
        pred, y, labelled, v, 1.0 / total, n_valid, c, n_bins, h * w
    )
    small = torch.full(
        (b, -(-h // stride), -(-w // stride)), IGNORE_INDEX, dtype=torch.uint8, device=x.device
    )
    first = -(-r0 // stride)  # the first kept row (a multiple of stride) inside the used rows
    shown = torch.where(
        v[:, first * stride - r0 :: stride, ::stride],
        pred[:, first * stride - r0 :: stride, ::stride],
        IGNORE_INDEX,
    )
    small[:, first : first + shown.shape[1]] = shown.to(torch.uint8)
    return {
        "loss": loss,
        "confusion": confusion,
        "prob_mean": prob_mean,
        "pred_frac": pred_frac,
        "calibration": calibration,
        "pred_small": small,
        "entropy": entropy,
        "max_prob": max_prob,
    }


def _rows_used(used: torch.Tensor) -> tuple[int, int]:
    """The first and one-past-the-last row of (B, H, W) ``used`` with a True in any image
    ((0, 0) when none is)."""
    rows = torch.nonzero(used.any(dim=2).any(dim=0))
    if rows.numel() == 0:
        return 0, 0
    return int(rows[0, 0]), int(rows[-1, 0]) + 1


_local = threading.local()


@contextmanager
def scratch_buffer() -> Iterator[None]:
    """Within this block (one extraction pass, on this thread) the buffer of the exponentials
    is allocated once, at the largest chunk's size, and reused for every chunk.

    A fresh block per batch (80 MB for 8 x 19 x 256 x 512 float32) is above glibc's mmap
    threshold, so each batch paid ~20k page faults before the exp: ~20 ms of the ~30 ms it
    took. Outside the block every call allocates its own buffer (nothing held)."""
    previous = getattr(_local, "buffers", None)
    _local.buffers = {}
    try:
        yield
    finally:
        _local.buffers = previous


def _scratch(like: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor of the shape, dtype and device of ``like``: a view of the block
    held by :func:`scratch_buffer` (grown when too small), or a new one outside it."""
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        return torch.empty(like.shape, dtype=like.dtype, device=like.device)
    key = (like.dtype, like.device)
    block = buffers.get(key)
    if block is None or block.numel() < like.numel():
        buffers.clear()  # one block at a time
        block = buffers[key] = torch.empty(like.numel(), dtype=like.dtype, device=like.device)
    return block[: like.numel()].view(like.shape)


def _tallies(
    pred: torch.Tensor,
    y: torch.Tensor,
    labelled: torch.Tensor,
    v: torch.Tensor,
    conf: torch.Tensor,
    n_valid: torch.Tensor,
    c: int,
    n_bins: int,
    pixels: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Confusion matrices, predicted-class fractions and calibration counts from one count of
    (image, ground truth or void, prediction, valid, confidence bin) over the pixels, plus
    one sum of the confidences over the same cells (two bincounts where five were).

    The confusion counts labelled pixels (rows = ground truth); the fractions are shares of
    all ``pixels`` with padding in the last column; calibration bin k holds the labelled valid
    pixels with k/n <= conf < (k+1)/n (the last bin closed): (pixels, Σ confidence, correct).
    """
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins: expected an integer >= 1, got {n_bins}")
    b = pred.shape[0]
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64, device=conf.device)
    conf = conf.clamp(0.0, 1.0)
    inner = edges[1:-1].to(conf.dtype)
    k = torch.where(labelled, y, c)  # ground truth, void = c
    k *= c
    k += pred
    k *= 2
    k += v
    k *= n_bins
    k += torch.bucketize(conf, inner, right=True).clamp_(0, n_bins - 1)
    cells = (c + 1) * c * 2 * n_bins
    k += torch.arange(b, device=k.device)[:, None, None] * cells
    flat = k.reshape(-1)
    shape = (b, c + 1, c, 2, n_bins)
    counts = torch.bincount(flat, minlength=b * cells).reshape(shape)
    sums = torch.bincount(flat, weights=conf.reshape(-1).double(), minlength=b * cells)
    sums = sums.reshape(shape)

    confusion = counts[:, :c].sum(dim=(3, 4))
    shown = counts[:, :, :, 1].sum(dim=(1, 3))  # (B, C): valid pixels by prediction
    pad = (pixels - n_valid).to(shown.dtype)[:, None]
    pred_frac = torch.cat([shown, pad], dim=1).double() / max(pixels, 1)
    cal = counts[:, :c, :, 1]  # (B, C, C, bins): labelled valid pixels
    correct = torch.diagonal(cal, dim1=1, dim2=2).sum(dim=-1)  # (B, bins)
    calibration = torch.stack(
        [cal.sum(dim=(1, 2)).double(), sums[:, :c, :, 1].sum(dim=(1, 2)), correct.double()],
        dim=-1,
    )
    return confusion.long(), pred_frac, calibration
