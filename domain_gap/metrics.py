"""Per-sample segmentation metrics on numpy arrays (batched, B >= 1).

Inputs follow one convention everywhere: ``logits`` are ``(B, C, H, W)`` floats, ``labels`` are
``(B, H, W)`` uint8 trainIds with :data:`~domain_gap.labels.IGNORE_INDEX` (255) for void, and
predictions are ``(B, H, W)`` trainIds from an argmax (never a sigmoid threshold). Void pixels
never contribute to a loss, a confusion matrix or an IoU.

Both the Tensorleap binder and the local engine call exactly these functions, so platform and
local numbers agree. Dataset-level IoU sums confusion matrices first, as the Cityscapes
benchmark does, rather than averaging per-image IoUs.
"""

from __future__ import annotations

import numpy as np

from domain_gap.labels import IGNORE_INDEX, NUM_CLASSES, check_train_ids

__all__ = [
    "calibration_bins",
    "class_pixel_fractions",
    "confusion_matrices",
    "dataset_iou",
    "ece_from_bin_stack",
    "ece_from_bins",
    "log_softmax",
    "mean_entropy",
    "mean_max_prob",
    "per_class_iou",
    "pixel_accuracy",
    "pixel_cross_entropy",
    "predict",
    "sample_loss",
    "sample_miou",
    "softmax",
]


def _float_logits(logits: np.ndarray, name: str = "logits") -> np.ndarray:
    x = np.asarray(logits)
    if x.ndim != 4:
        raise ValueError(f"{name}: expected shape (B, C, H, W), got {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name}: expected a float array, got dtype {x.dtype}")
    return x if x.dtype.itemsize >= 4 else x.astype(np.float32)


def _check_labels(labels: np.ndarray, num_classes: int, name: str = "labels") -> np.ndarray:
    """Return labels as an integer (B, H, W) array, raising if a value is neither class nor void."""
    y = check_train_ids(labels, name, num_classes, min_ndim=3)
    if y.ndim != 3:
        raise ValueError(f"{name}: expected shape (B, H, W), got {y.shape}")
    return y


def _check_pred(pred: np.ndarray, num_classes: int) -> np.ndarray:
    p = np.asarray(pred)
    if p.ndim != 3:
        raise ValueError(f"pred: expected shape (B, H, W), got {p.shape}")
    if not np.issubdtype(p.dtype, np.integer):
        raise ValueError(f"pred: expected integer trainIds, got dtype {p.dtype}")
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(
            f"pred: expected trainIds in 0..{num_classes - 1}, found range {p.min()}..{p.max()}"
        )
    return p


def log_softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    """Numerically stable log-softmax along ``axis`` (max subtracted before ``exp``)."""
    x = np.asarray(logits)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    """Numerically stable softmax along ``axis``."""
    x = np.asarray(logits)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _valid_mean(values: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """Mean of ``(B, H, W)`` values over each image's valid pixels, ``(B,)`` float64."""
    v = np.ones(values.shape, bool) if valid is None else np.asarray(valid, bool)
    if v.shape != values.shape:
        raise ValueError(f"valid: shape {v.shape} does not match {values.shape}")
    total = np.where(v, values, 0.0).reshape(len(values), -1).sum(axis=1)
    return total / np.maximum(v.reshape(len(v), -1).sum(axis=1), 1)


def mean_entropy(logits: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Predictive entropy ``-Σ_c p log p`` (nats) averaged over valid pixels, ``(B,)`` float64.

    A label-free uncertainty score: it needs no ground truth.
    """
    logp = log_softmax(_float_logits(logits).astype(np.float64))
    return _valid_mean(-(np.exp(logp) * logp).sum(axis=1), valid)


def mean_max_prob(logits: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """The top softmax probability averaged over valid pixels, ``(B,)`` float64."""
    probs = softmax(_float_logits(logits).astype(np.float64))
    return _valid_mean(probs.max(axis=1), valid)


def pixel_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-pixel cross-entropy ``(B, H, W)`` float32; exactly 0 at void pixels.

    ``CE = logsumexp(logits) - logits[label]``, computed without forming the full softmax.
    """
    x = _float_logits(logits)
    y = _check_labels(labels, x.shape[1])
    if y.shape != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"labels: shape {y.shape} does not match logits {x.shape}")
    valid = y != IGNORE_INDEX
    m = x.max(axis=1)
    lse = m + np.log(np.exp(x - m[:, None]).sum(axis=1))
    target = np.where(valid, y, 0).astype(np.intp)
    picked = np.take_along_axis(x, target[:, None], axis=1)[:, 0]
    return np.where(valid, lse - picked, 0.0).astype(np.float32)


def sample_loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean cross-entropy over each sample's non-void pixels, ``(B,)`` float32.

    A sample with no valid (non-void) pixel has loss 0.0: there is nothing to be wrong about,
    and a finite value keeps platform aggregations free of NaN.
    """
    ce = pixel_cross_entropy(logits, labels).astype(np.float64)
    valid = np.asarray(labels) != IGNORE_INDEX
    count = valid.reshape(valid.shape[0], -1).sum(axis=1)
    total = ce.reshape(ce.shape[0], -1).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0).astype(np.float32)


def predict(logits: np.ndarray) -> np.ndarray:
    """Argmax over the class axis, ``(B, H, W)`` uint8 trainIds."""
    x = _float_logits(logits)
    if x.shape[1] > IGNORE_INDEX:
        raise ValueError(f"logits: at most {IGNORE_INDEX} classes fit uint8, got {x.shape[1]}")
    return x.argmax(axis=1).astype(np.uint8)


def confusion_matrices(
    pred: np.ndarray, labels: np.ndarray, num_classes: int = NUM_CLASSES
) -> np.ndarray:
    """Per-sample confusion matrices ``(B, C, C)`` int64: rows = ground truth, cols = prediction.

    Pixels whose ground truth is void are excluded. One ``bincount`` over
    ``b*C*C + gt*C + pred`` covers the whole batch.
    """
    y = _check_labels(labels, num_classes)
    p = _check_pred(pred, num_classes)
    if p.shape != y.shape:
        raise ValueError(f"pred: shape {p.shape} does not match labels {y.shape}")
    b = y.shape[0]
    valid = y != IGNORE_INDEX
    batch_idx = np.broadcast_to(np.arange(b, dtype=np.int64)[:, None, None], y.shape)
    flat = (
        batch_idx[valid] * (num_classes * num_classes)
        + y[valid].astype(np.int64) * num_classes
        + p[valid].astype(np.int64)
    )
    counts = np.bincount(flat, minlength=b * num_classes * num_classes)
    return counts.reshape(b, num_classes, num_classes).astype(np.int64)


def per_class_iou(confusion: np.ndarray) -> np.ndarray:
    """IoU per class ``(..., C)`` float64: ``TP / (TP + FP + FN)``.

    NaN where a class is absent from both ground truth and prediction (0/0), so that such
    classes drop out of a ``nanmean`` instead of counting as 0 or 1.
    """
    cm = np.asarray(confusion)
    if cm.ndim < 2 or cm.shape[-1] != cm.shape[-2]:
        raise ValueError(f"confusion: expected shape (..., C, C), got {cm.shape}")
    cm = cm.astype(np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    denom = cm.sum(axis=-1) + cm.sum(axis=-2) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.where(denom > 0, denom, 1.0), np.nan)


def _nanmean_last(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN; NaN (without a warning) where all are NaN."""
    present = ~np.isnan(values)
    n = present.sum(axis=-1)
    total = np.where(present, values, 0.0).sum(axis=-1)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def sample_miou(confusion: np.ndarray) -> np.ndarray:
    """Mean IoU over the classes present in ground truth or prediction, ``(...,)`` float64.

    A sample with no valid ground-truth pixel has an all-zero confusion matrix and its mIoU is
    NaN (undefined); callers that need a number must decide how to treat such samples.
    """
    return _nanmean_last(per_class_iou(confusion))


def pixel_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Share of non-void pixels predicted correctly, ``(...,)`` float64; NaN with no valid pixel."""
    cm = np.asarray(confusion)
    if cm.ndim < 2 or cm.shape[-1] != cm.shape[-2]:
        raise ValueError(f"confusion: expected shape (..., C, C), got {cm.shape}")
    cm = cm.astype(np.float64)
    correct = np.trace(cm, axis1=-2, axis2=-1)
    total = cm.sum(axis=(-2, -1))
    return np.where(total > 0, correct / np.where(total > 0, total, 1.0), np.nan)


def dataset_iou(confusion: np.ndarray) -> tuple[np.ndarray, float]:
    """Dataset-level per-class IoU ``(C,)`` and mIoU from summed confusion matrices.

    Accepts one ``(C, C)`` matrix or a stack ``(..., C, C)``, which is summed first (the
    Cityscapes convention). Classes absent from the whole dataset are NaN and excluded from
    the mean.
    """
    cm = np.asarray(confusion)
    if cm.ndim < 2 or cm.shape[-1] != cm.shape[-2]:
        raise ValueError(f"confusion: expected shape (..., C, C), got {cm.shape}")
    total = cm.reshape(-1, *cm.shape[-2:]).sum(axis=0)
    iou = per_class_iou(total)
    return iou, float(_nanmean_last(iou))


def class_pixel_fractions(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Share of each class and of void per sample, ``(B, C + 1)`` float64; last column = void.

    Fractions are over all pixels of the array, so each row sums to 1.
    """
    y = _check_labels(labels, num_classes)
    b = y.shape[0]
    idx = np.where(y == IGNORE_INDEX, num_classes, y).astype(np.int64)
    idx = idx.reshape(b, -1) + (np.arange(b, dtype=np.int64) * (num_classes + 1))[:, None]
    counts = np.bincount(idx.ravel(), minlength=b * (num_classes + 1)).reshape(b, -1)
    n = max(y[0].size, 1)
    return counts / n


def _confidence_and_correct(
    scores: np.ndarray, labels: np.ndarray, kind: str
) -> tuple[np.ndarray, np.ndarray]:
    """Max-softmax confidence (float64) and argmax correctness per pixel, both ``(B, H, W)``."""
    if kind not in ("logits", "probs"):
        raise ValueError(f"kind: expected 'logits' or 'probs', got {kind!r}")
    x = _float_logits(scores, "probs" if kind == "probs" else "logits").astype(np.float64)
    y = _check_labels(labels, x.shape[1])
    if y.shape != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"labels: shape {y.shape} does not match {kind} {x.shape}")
    pred = x.argmax(axis=1)
    if kind == "probs":
        conf = x.max(axis=1)
    else:  # max softmax = 1 / sum(exp(x - max)), no full softmax needed
        conf = 1.0 / np.exp(x - x.max(axis=1, keepdims=True)).sum(axis=1)
    return np.clip(conf, 0.0, 1.0), pred == y


def calibration_bins(
    scores: np.ndarray,
    labels: np.ndarray,
    valid: np.ndarray | None = None,
    n_bins: int = 15,
    *,
    kind: str = "logits",
) -> np.ndarray:
    """Per-image calibration counts ``(B, n_bins, 3)`` float64: pixels, sum of confidence, correct.

    ``scores`` are ``(B, C, H, W)`` logits (``kind="logits"``) or probabilities
    (``kind="probs"``). Confidence is the max-softmax probability; bins are equal-width on
    [0, 1], bin ``k`` holding ``k/n <= conf < (k+1)/n`` and the last one also ``conf == 1``.
    Only labelled non-void pixels count (and, if given, pixels where ``valid`` is True), so
    that summing the rows of any set of images gives that set's bins and a dataset-level ECE
    (:func:`ece_from_bins`) can be bootstrapped over images.
    """
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins: expected an integer >= 1, got {n_bins}")
    n_bins = int(n_bins)
    conf, correct = _confidence_and_correct(scores, labels, kind)
    mask = np.asarray(labels) != IGNORE_INDEX
    if valid is not None:
        v = np.asarray(valid)
        if v.shape != mask.shape or v.dtype != np.bool_:
            raise ValueError(
                f"valid: expected a bool array of shape {mask.shape}, got {v.dtype} {v.shape}"
            )
        mask = mask & v
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bin_idx = np.clip(np.searchsorted(edges[1:-1], conf, side="right"), 0, n_bins - 1)
    b = conf.shape[0]
    batch = np.broadcast_to(np.arange(b)[:, None, None], conf.shape)
    flat = (batch * n_bins + bin_idx)[mask]
    size = b * n_bins
    out = np.stack(
        [
            np.bincount(flat, minlength=size),
            np.bincount(flat, weights=conf[mask], minlength=size),
            np.bincount(flat, weights=correct[mask].astype(np.float64), minlength=size),
        ],
        axis=-1,
    )
    return out.reshape(b, n_bins, 3).astype(np.float64)


def _check_bins(bins: np.ndarray) -> np.ndarray:
    a = np.asarray(bins, dtype=np.float64)
    if a.ndim < 2 or a.shape[-1] != 3:
        raise ValueError(
            f"bins: expected shape (..., n_bins, 3) (count, sum conf, correct), got {a.shape}"
        )
    return a


def ece_from_bin_stack(bins: np.ndarray) -> np.ndarray:
    """ECE of each ``(n_bins, 3)`` block in a ``(..., n_bins, 3)`` stack; NaN with no pixel.

    Vectorised form of :func:`ece_from_bins` (e.g. one ECE per bootstrap replicate).
    """
    a = _check_bins(bins)
    n_b, conf_sum, correct = a[..., 0], a[..., 1], a[..., 2]
    total = n_b.sum(axis=-1)
    # sum_b (n_b/N) |acc_b - conf_b| = sum_b |correct_b - conf_sum_b| / N
    gap = np.abs(correct - conf_sum).sum(axis=-1)
    return np.where(total > 0, gap / np.where(total > 0, total, 1.0), np.nan)


def ece_from_bins(bins_summed: np.ndarray) -> float:
    """Expected calibration error ``sum_b (n_b/N) |acc_b - conf_b|`` of summed bins ``(n_bins, 3)``.

    ``bins_summed`` is :func:`calibration_bins` summed over images (axis 0). NaN when no pixel
    was counted.
    """
    a = np.asarray(bins_summed)
    if a.ndim != 2 or a.shape[-1] != 3:
        raise ValueError(
            f"bins_summed: expected shape (n_bins, 3) (calibration_bins summed over images), "
            f"got {a.shape}"
        )
    return float(ece_from_bin_stack(a))
