"""The per-pixel half of :mod:`domain_gap.metrics`, for a whole batch in torch, in one pass.

The extraction pass reduces each image's ``(C, H, W)`` logits to a few small arrays (loss,
confusion matrix, mean probabilities, calibration counts, predicted mask). Doing that in numpy
on one thread cost about as much as the forward pass; here it runs on the model's device and
threads, with one max and one exp over the logits feeding every output, and only the small
arrays come back to the host. The work runs on the (B, H, W, C) view of the model's
channels-last logits, the exponentials go into one buffer reused across a pass
(:func:`scratch_buffer`: a fresh 80 MB block per batch cost ~19k page faults) and the mean
probabilities are one product per image row, summed in float64. The numbers are those of the
numpy functions (``sample_loss``, ``predict``, ``confusion_matrices``, ``calibration_bins``,
``class_pixel_fractions``, ``mean_entropy``, ``mean_max_prob``), checked against them in
``tests/test_metrics_torch.py``; the Tensorleap binder keeps calling the numpy ones on single
samples.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from domain_gap.labels import IGNORE_INDEX

__all__ = ["PixelSummary", "scratch_buffer", "summarize_pixels"]


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


def summarize_pixels(
    logits: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    valid: torch.Tensor | np.ndarray,
    n_bins: int,
    stride: int,
) -> PixelSummary:
    """Reduce ``logits`` (B, C, H, W) with ``labels`` (B, H, W) trainIds (255 = void) and the
    ``valid`` (B, H, W) mask of unpadded pixels to a :class:`PixelSummary`.

    Works on the logits' device; numpy inputs are wrapped without a copy.
    """
    x = torch.as_tensor(logits)
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"logits: expected a float (B, C, H, W) tensor, got {x.dtype} {x.shape}")
    x = x.float()
    b, c, h, w = x.shape
    if c > IGNORE_INDEX:
        raise ValueError(f"logits: at most {IGNORE_INDEX} classes fit uint8, got {c}")
    y = torch.as_tensor(labels, device=x.device).long()
    v = torch.as_tensor(valid, device=x.device).bool()
    if y.shape != (b, h, w) or v.shape != (b, h, w):
        raise ValueError(
            f"labels {tuple(y.shape)} and valid {tuple(v.shape)}: expected {(b, h, w)} "
            f"to match logits {tuple(x.shape)}"
        )
    labelled = y != IGNORE_INDEX
    if bool(((y >= c) & labelled).any()) or bool((y < 0).any()):
        raise ValueError(f"labels: expected trainIds in 0..{c - 1} or void ({IGNORE_INDEX})")

    # (B, H, W, C): a view of the model's channels-last logits, classes innermost
    xl = x.permute(0, 2, 3, 1)
    if not xl.is_contiguous():
        xl = xl.contiguous()
    top, pred = xl.max(dim=-1)  # first maximum on ties, as numpy's argmax
    picked = xl.gather(-1, torch.where(labelled, y, 0)[..., None])[..., 0]
    e = torch.sub(xl, top[..., None], out=_scratch(xl)).exp_()
    total = e.sum(dim=-1)  # (B, H, W); softmax = e / total, confidence = 1 / total
    log_total = torch.log(total)
    lse = top + log_total
    ce = torch.where(labelled, lse - picked, 0.0).double().sum(dim=(1, 2))
    n_lab = labelled.sum(dim=(1, 2))
    loss = torch.where(n_lab > 0, ce / n_lab.clamp(min=1), 0.0)

    weight = v / total  # valid pixels weighted by 1 / Σexp: Σ_pixels softmax in one product
    n_valid = v.sum(dim=(1, 2)).clamp(min=1)
    # one image row per product (float32 over <= W pixels), the rows summed in float64:
    # within ~1e-7 of a float64 sum, where one float32 sum over H x W pixels was off by 6e-5
    rows = torch.matmul(weight[:, :, None, :], e)[:, :, 0]  # (B, H, C)
    prob_mean = rows.sum(dim=1, dtype=torch.float64) / n_valid[:, None]
    # entropy = log Σe - Σ e (x - top) / Σe; Σ e·x in one einsum, no second exp
    ex = torch.einsum("bhwc,bhwc->bhw", e, xl)
    del e
    entropy = log_total - (ex / total - top)
    entropy = torch.where(v, entropy.clamp(min=0.0), 0.0).double().sum(dim=(1, 2)) / n_valid
    max_prob = weight.double().sum(dim=(1, 2)) / n_valid

    shown = torch.where(v, pred, IGNORE_INDEX)
    return PixelSummary(
        loss=loss.cpu().numpy(),
        confusion=_confusion(pred, y, labelled, c).cpu().numpy(),
        prob_mean=prob_mean.cpu().numpy(),
        pred_frac=_fractions(shown, c).cpu().numpy(),
        calibration=_calibration(1.0 / total, pred == y, labelled & v, n_bins).cpu().numpy(),
        pred_small=shown[:, ::stride, ::stride].to(torch.uint8).cpu().numpy(),
        entropy=entropy.cpu().numpy(),
        max_prob=max_prob.cpu().numpy(),
    )


_local = threading.local()


@contextmanager
def scratch_buffer() -> Iterator[None]:
    """Within this block (one extraction pass, on this thread) the (B, H, W, C) buffer of the
    exponentials is allocated once and reused for every batch of the same shape.

    A fresh 80 MB block per batch (8 x 19 x 256 x 512 float32) is above glibc's mmap
    threshold, so each batch paid ~20k page faults before the exp: ~20 ms of the ~30 ms it
    took. Outside the block every call allocates its own buffer (nothing held)."""
    previous = getattr(_local, "buffers", None)
    _local.buffers = {}
    try:
        yield
    finally:
        _local.buffers = previous


def _scratch(like: torch.Tensor) -> torch.Tensor:
    """A contiguous buffer of the shape, dtype and device of ``like`` (see scratch_buffer)."""
    key = (tuple(like.shape), like.dtype, like.device)
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        return torch.empty(key[0], dtype=like.dtype, device=like.device)
    if key not in buffers:
        buffers.clear()  # one shape at a time: the last batch of a pass is smaller
        buffers[key] = torch.empty(key[0], dtype=like.dtype, device=like.device)
    return buffers[key]


def _confusion(pred: torch.Tensor, y: torch.Tensor, labelled: torch.Tensor, c: int) -> torch.Tensor:
    b = y.shape[0]
    size = b * c * c
    batch = torch.arange(b, device=y.device)[:, None, None]
    flat = y * c  # in place from here: no further full-size temporaries
    flat += pred
    flat += batch * (c * c)
    flat.masked_fill_(~labelled, size)  # void → a spare bin
    return torch.bincount(flat.reshape(-1), minlength=size + 1)[:size].reshape(b, c, c).long()


def _fractions(shown: torch.Tensor, c: int) -> torch.Tensor:
    b = shown.shape[0]
    idx = shown.masked_fill(shown == IGNORE_INDEX, c).reshape(b, -1)
    idx += torch.arange(b, device=shown.device)[:, None] * (c + 1)
    counts = torch.bincount(idx.reshape(-1), minlength=b * (c + 1)).reshape(b, c + 1)
    return counts.double() / max(shown[0].numel(), 1)


def _calibration(
    conf: torch.Tensor, correct: torch.Tensor, mask: torch.Tensor, n_bins: int
) -> torch.Tensor:
    """Equal-width confidence bins, bin k holding k/n <= conf < (k+1)/n (last one closed)."""
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins: expected an integer >= 1, got {n_bins}")
    b = conf.shape[0]
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64, device=conf.device)
    conf = conf.clamp(0.0, 1.0)
    inner = edges[1:-1].to(conf.dtype)
    idx = torch.bucketize(conf, inner, right=True).clamp_(0, n_bins - 1)
    size = b * n_bins
    idx += torch.arange(b, device=conf.device)[:, None, None] * n_bins
    flat = idx.masked_fill_(~mask, size).reshape(-1)  # unused → a spare bin

    def tally(weights: torch.Tensor | None) -> torch.Tensor:
        w = None if weights is None else weights.reshape(-1).double()
        return torch.bincount(flat, weights=w, minlength=size + 1)[:size].double()

    stacked = torch.stack([tally(None), tally(conf), tally(correct)], dim=-1)
    return stacked.reshape(b, n_bins, 3)
