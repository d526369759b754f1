"""Paired bootstrap for a mitigation what-if: the same target images measured before and after.

A fix (colour transfer, test-time normalisation, fine-tuning, ...) is judged by the change
after - before of dataset-level metrics on one fixed set of target images. Because both runs
see the same images, most image-to-image variation (hard scenes stay hard) cancels in the
difference. The bootstrap keeps that: each replicate draws ONE multiset of image indices and
applies it to before and after alike, so the interval reflects only how the *change* varies
across images, which is far narrower than resampling the two runs independently.

Dataset-level metrics are recomputed per replicate the way the benchmark defines them: mIoU and
per-class IoU from summed confusion matrices, ECE from summed calibration bins
(:func:`domain_gap.metrics.calibration_bins`), loss and extra scalars as means over images.

Pure numpy; results are the frozen types of :mod:`domain_gap.analysis.results`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from domain_gap.analysis.results import (
    ClassDeltas,
    DeltaEstimate,
    MitigationVerdict,
    NamedValue,
    PairedDeltas,
)
from domain_gap.analysis.stats_utils import fnum, percentile_interval
from domain_gap.labels import CLASS_NAMES, NUM_CLASSES
from domain_gap.metrics import ece_from_bin_stack, per_class_iou

__all__ = [
    "VERDICT_RULE",
    "ClassDeltas",
    "DeltaEstimate",
    "MitigationVerdict",
    "NamedValue",
    "PairedDeltas",
    "PairedInputs",
    "mitigation_verdict",
    "paired_delta",
]

VERDICT_RULE = (
    "helps if the (1 - alpha) paired bootstrap CI of delta mIoU (after - before) lies above 0, "
    "harms if it lies below 0, no clear effect otherwise (or when the CI is not computable); "
    "gap statistics are reported beside the verdict and never change it"
)

LOSS_NOTE = "images with a NaN loss before or after (unlabelled) are excluded from the loss"


# --------------------------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedInputs:
    """Per-image measurements of one run (before or after) on the target images, in one order.

    ``confusion`` ``(B, C, C)`` (all-zero for an unlabelled image); ``loss`` ``(B,)`` with NaN
    for unlabelled images; ``calibration`` ``(B, n_bins, 3)`` from
    :func:`domain_gap.metrics.calibration_bins`; ``scalars`` maps a name to a ``(B,)`` per-image
    value (NaN = missing), reported as the change of its mean over images.
    """

    confusion: np.ndarray
    loss: np.ndarray | None = None
    calibration: np.ndarray | None = None
    scalars: Mapping[str, np.ndarray] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Input checks (shared with class_mix)
# --------------------------------------------------------------------------------------------


def check_bootstrap_args(n_boot: int, alpha: float) -> None:
    """Raise ``ValueError`` unless ``n_boot`` is an integer >= 1 and ``0 < alpha < 1``."""
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot: expected an integer >= 1, got {n_boot!r}")
    if not 0 < float(alpha) < 1:
        raise ValueError(f"alpha: expected a number in (0, 1), got {alpha!r}")


def check_confusions(confusion: object, name: str, *, min_images: int = 2) -> np.ndarray:
    """Return ``confusion`` as float64 ``(B, C, C)`` with at least one labelled image, or raise."""
    cm = np.asarray(confusion, dtype=np.float64)
    if cm.ndim != 3 or cm.shape[1] != cm.shape[2]:
        raise ValueError(f"{name}: expected per-image confusion matrices (B, C, C), got {cm.shape}")
    if cm.shape[0] < min_images:
        raise ValueError(f"{name}: expected at least {min_images} images, got {cm.shape[0]}")
    if not np.all(np.isfinite(cm)) or (cm < 0).any():
        raise ValueError(f"{name}: expected finite, non-negative pixel counts")
    if not (cm.sum(axis=(1, 2)) > 0).any():
        raise ValueError(f"{name}: expected at least one labelled image, all {len(cm)} are empty")
    return cm


def _per_image(values: object, name: str, n: int) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},) (one value per image), got {v.shape}")
    if np.isinf(v).any():
        raise ValueError(f"{name}: expected finite values or NaN (missing), found inf")
    return v


def _pair_optional(before: object, after: object, name: str) -> bool:
    if (before is None) != (after is None):
        raise ValueError(f"{name}: expected it in both before and after or in neither")
    return before is not None


def _check_calibration(bins: object, name: str, n: int) -> np.ndarray:
    a = np.asarray(bins, dtype=np.float64)
    if a.ndim != 3 or a.shape[0] != n or a.shape[2] != 3:
        raise ValueError(f"{name}: expected calibration bins ({n}, n_bins, 3), got {a.shape}")
    if not np.all(np.isfinite(a)) or (a < 0).any():
        raise ValueError(f"{name}: expected finite, non-negative bin sums")
    return a


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def bootstrap_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, n)`` multiplicities of a with-replacement draw of ``n`` of ``n`` items.

    Equivalent to drawing indices with ``rng.integers``; counts let a replicate's summed
    confusion be one matrix product.
    """
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def nanmean_rows(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN; NaN (no warning) where a row is all NaN."""
    present = ~np.isnan(values)
    n = present.sum(axis=-1)
    total = np.where(present, values, 0.0).sum(axis=-1)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def weighted_iou(confusion: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class IoU ``(R, C)`` and mIoU ``(R,)`` of ``sum_i weights[r, i] * confusion[i]``."""
    b, c, _ = confusion.shape
    summed = (weights @ confusion.reshape(b, c * c)).reshape(-1, c, c)
    iou = per_class_iou(summed)
    return iou, nanmean_rows(iou)


def excludes_zero(lo: float | None, hi: float | None) -> bool:
    """True when the interval ``[lo, hi]`` lies wholly above or wholly below 0."""
    return lo is not None and hi is not None and (lo > 0 or hi < 0)


def delta_estimate(
    name: str,
    before: float,
    after: float,
    reps: np.ndarray,
    n: int,
    alpha: float,
    how: str,
    note: str = "",
) -> DeltaEstimate:
    """``after - before`` with the percentile interval of its bootstrap replicates ``reps``."""
    lo, hi = percentile_interval(reps, alpha)
    b, a = fnum(before), fnum(after)
    return DeltaEstimate(
        name=name,
        before=b,
        after=a,
        delta=None if a is None or b is None else a - b,
        ci_low=lo,
        ci_high=hi,
        significant=excludes_zero(lo, hi),
        n=n,
        alpha=float(alpha),
        ci_method=how,
        note=note,
    )


def _mean_delta(
    name: str, before: np.ndarray, after: np.ndarray, counts: np.ndarray, alpha: float, how: str
) -> DeltaEstimate:
    """Change of the mean over images where both values are finite (NaN = missing, excluded)."""
    keep = np.isfinite(before) & np.isfinite(after)
    if not keep.any():
        raise ValueError(f"{name}: expected at least one image with a value before and after")
    d = after[keep] - before[keep]
    w = counts[:, keep]
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = (w @ d) / w.sum(axis=1)
    return delta_estimate(
        name, before[keep].mean(), after[keep].mean(), reps, int(keep.sum()), alpha, how
    )


def _class_names(c: int) -> tuple[str, ...]:
    return CLASS_NAMES if c == NUM_CLASSES else tuple(f"class_{i}" for i in range(c))


def _iou_deltas(
    before: np.ndarray, after: np.ndarray, counts: np.ndarray, alpha: float, how: str
) -> tuple[DeltaEstimate, ClassDeltas]:
    """mIoU delta and per-class IoU deltas from summed confusions, one draw for both runs."""
    ones = np.ones((1, before.shape[0]))
    (iou_b,), (miou_b,) = weighted_iou(before, ones)
    (iou_a,), (miou_a,) = weighted_iou(after, ones)
    rep_iou_b, rep_miou_b = weighted_iou(before, counts)
    rep_iou_a, rep_miou_a = weighted_iou(after, counts)
    n = int((before.sum(axis=(1, 2)) > 0).sum())
    miou = delta_estimate("miou", miou_b, miou_a, rep_miou_a - rep_miou_b, n, alpha, how)
    per_class = [
        delta_estimate(name, iou_b[k], iou_a[k], rep_iou_a[:, k] - rep_iou_b[:, k], n, alpha, how)
        for k, name in enumerate(_class_names(before.shape[1]))
    ]
    classes = ClassDeltas(
        class_names=tuple(e.name for e in per_class),
        before=tuple(e.before for e in per_class),
        after=tuple(e.after for e in per_class),
        delta=tuple(e.delta for e in per_class),
        ci_low=tuple(e.ci_low for e in per_class),
        ci_high=tuple(e.ci_high for e in per_class),
        significant=tuple(e.significant for e in per_class),
        n=n,
        alpha=float(alpha),
        ci_method=how,
    )
    return miou, classes


def _ece_delta(
    before: np.ndarray, after: np.ndarray, counts: np.ndarray, alpha: float, how: str
) -> DeltaEstimate:
    """Dataset ECE delta: bins summed over the drawn images, ECE per replicate."""
    b, k, _ = before.shape
    ece_b = float(ece_from_bin_stack(before.sum(axis=0)))
    ece_a = float(ece_from_bin_stack(after.sum(axis=0)))
    rep_b = ece_from_bin_stack((counts @ before.reshape(b, -1)).reshape(-1, k, 3))
    rep_a = ece_from_bin_stack((counts @ after.reshape(b, -1)).reshape(-1, k, 3))
    n = int((before[..., 0].sum(axis=1) > 0).sum())
    return delta_estimate("ece", ece_b, ece_a, rep_a - rep_b, n, alpha, how)


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def _check_pair(before: PairedInputs, after: PairedInputs) -> tuple[np.ndarray, np.ndarray]:
    cm_b = check_confusions(before.confusion, "before.confusion")
    cm_a = check_confusions(after.confusion, "after.confusion")
    if cm_a.shape != cm_b.shape:
        raise ValueError(
            f"after.confusion: expected the shape of before.confusion {cm_b.shape} "
            f"(the same images in the same order), got {cm_a.shape}"
        )
    if not np.array_equal(cm_b.sum(axis=(1, 2)) > 0, cm_a.sum(axis=(1, 2)) > 0):
        raise ValueError(
            "after.confusion: expected the same labelled images as before.confusion "
            "(an image is labelled in one run and empty in the other)"
        )
    return cm_b, cm_a


def _optional_deltas(
    before: PairedInputs, after: PairedInputs, counts: np.ndarray, alpha: float, how: str
) -> tuple[DeltaEstimate | None, DeltaEstimate | None, tuple[DeltaEstimate, ...]]:
    n = counts.shape[1]
    loss = ece = None
    if _pair_optional(before.loss, after.loss, "loss"):
        lb = _per_image(before.loss, "before.loss", n)
        la = _per_image(after.loss, "after.loss", n)
        loss = dataclasses.replace(_mean_delta("loss", lb, la, counts, alpha, how), note=LOSS_NOTE)
    if _pair_optional(before.calibration, after.calibration, "calibration"):
        cb = _check_calibration(before.calibration, "before.calibration", n)
        ca = _check_calibration(after.calibration, "after.calibration", n)
        if ca.shape != cb.shape:
            raise ValueError(f"after.calibration: expected shape {cb.shape}, got {ca.shape}")
        ece = _ece_delta(cb, ca, counts, alpha, how)
    if set(before.scalars) != set(after.scalars):
        raise ValueError(
            f"scalars: expected the same names before and after, got {sorted(before.scalars)} "
            f"and {sorted(after.scalars)}"
        )
    scalars = tuple(
        _mean_delta(
            name,
            _per_image(before.scalars[name], f"before.scalars[{name!r}]", n),
            _per_image(after.scalars[name], f"after.scalars[{name!r}]", n),
            counts,
            alpha,
            how,
        )
        for name in sorted(before.scalars)
    )
    return loss, ece, scalars


def paired_delta(
    before: PairedInputs,
    after: PairedInputs,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> PairedDeltas:
    """after - before of mIoU, per-class IoU, loss, ECE and extra scalars on the same images.

    Point deltas come from the full sample. Intervals: percentile bootstrap over images, where
    each of the ``n_boot`` replicates draws one multiset of image indices (``B`` of ``B``, with
    replacement, from ``np.random.default_rng(seed)``) and applies it to before and after alike.
    Replicates where a metric is undefined (e.g. no labelled image drawn) are dropped for it.
    """
    check_bootstrap_args(n_boot, alpha)
    cm_b, cm_a = _check_pair(before, after)
    n_boot = int(n_boot)
    how = (
        f"paired percentile bootstrap over images, {n_boot} resamples "
        "(one image draw per resample, applied to before and after)"
    )
    counts = bootstrap_counts(cm_b.shape[0], n_boot, np.random.default_rng(seed))
    miou, classes = _iou_deltas(cm_b, cm_a, counts, alpha, how)
    loss, ece, scalars = _optional_deltas(before, after, counts, alpha, how)
    return PairedDeltas(
        miou=miou,
        per_class_iou=classes,
        loss=loss,
        ece=ece,
        scalars=scalars,
        n_images=int(cm_b.shape[0]),
        n_labelled=miou.n,
        n_boot=n_boot,
        alpha=float(alpha),
        seed=int(seed),
        ci_method=how,
    )


def _verdict_note(verdict: str, gaps: tuple[NamedValue, ...]) -> str:
    shrank = [g.name for g in gaps if g.value is not None and g.value < 0]
    grew = [g.name for g in gaps if g.value is not None and g.value > 0]
    if verdict == "harms" and shrank:
        return (
            f"gap statistics shrank ({', '.join(shrank)}) but mIoU fell: the domains look more "
            "alike to these statistics while the model does worse"
        )
    if verdict == "helps" and grew:
        return f"mIoU rose although gap statistics grew ({', '.join(grew)})"
    return ""


def mitigation_verdict(
    deltas: PairedDeltas, gap_deltas: Mapping[str, float | None] | None = None
) -> MitigationVerdict:
    """ "helps" / "harms" / "no clear effect" from the delta-mIoU CI alone (:data:`VERDICT_RULE`).

    ``gap_deltas`` (after - before of gap statistics where smaller means closer domains, e.g.
    Fréchet distance or MMD) are carried beside the verdict; a fix that shrinks them but lowers
    mIoU is still "harms", and ``note`` says so.
    """
    m = deltas.miou
    if m.ci_low is not None and m.ci_low > 0:
        verdict = "helps"
    elif m.ci_high is not None and m.ci_high < 0:
        verdict = "harms"
    else:
        verdict = "no clear effect"
    gaps = tuple(NamedValue(str(k), fnum(v)) for k, v in (gap_deltas or {}).items())
    return MitigationVerdict(
        verdict=verdict,
        delta_miou=m.delta,
        ci_low=m.ci_low,
        ci_high=m.ci_high,
        alpha=m.alpha,
        ci_method=m.ci_method,
        rule=VERDICT_RULE,
        gap_deltas=gaps,
        note=_verdict_note(verdict, gaps),
    )
