"""Colour versus content: how much of the source-to-target mIoU drop is the class mix?

A target domain can score lower for two reasons: it *contains* other things (more vegetation,
fewer pedestrians: a class-mix or content shift) or the same things *look* different (colour,
blur, sensor: an appearance shift). Importance weighting separates the two. Labelled source
images are reweighted so that their class-fraction distribution matches the target's; the
source mIoU under those weights is what the model would score on target *content* with source
*appearance*. Then

    total      = mIoU_source          - mIoU_target
    class_mix  = mIoU_source          - mIoU_weighted_source
    appearance = mIoU_weighted_source - mIoU_target        (total = class_mix + appearance)

Weights: the density ratio ``w(x) = p_t(x) / p_s(x)`` of the content vector ``x`` (square
roots of the per-image class pixel fractions over labelled pixels, read off the confusion
rows) from a logistic-regression domain classifier, ``w = (n_s/n_t) P(t|x) / P(s|x)``. The
square root keeps absent classes (fraction 0) finite, unlike a log, and evens out the scale of
rare and frequent classes. The classifier is fitted once on all images (not cross-fitted): a
regularised linear model on at most 19 features has few parameters per image, so in-sample
overfitting of the weights is small, while cross-fitting would multiply the cost of every
bootstrap refit. Weights are then scaled to mean 1 over the source and capped at
``max_weight`` (the scale is chosen so that the mean stays exactly 1 after capping), so that no
source image counts for more than ``max_weight`` average images. IoU is invariant to scaling the
summed confusion matrix, so only relative weights matter for the weighted mIoU.

Intervals: percentile bootstrap resampling source and target images independently (they are
different images), refitting the weights in every replicate by default: the weights are
estimated from the very images being resampled, so refitting carries their estimation error
into the interval, whereas fixed weights would treat them as known and understate it.
:func:`appearance_recovery` additionally applies each target draw to the target before and
after a fix (paired), as :mod:`domain_gap.analysis.paired` does.

Pure numpy / scikit-learn; results are the frozen types of :mod:`domain_gap.analysis.results`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from domain_gap.analysis.paired import (
    check_bootstrap_args,
    check_confusions,
    excludes_zero,
    weighted_iou,
)
from domain_gap.analysis.results import (
    AppearanceRecovery,
    ClassMixDecomposition,
    Component,
    ImportanceWeights,
)
from domain_gap.analysis.stats_utils import fnum, percentile_interval

__all__ = [
    "DOMINANT_RULE",
    "RECOVERY_RULE",
    "AppearanceRecovery",
    "ClassMixDecomposition",
    "Component",
    "ImportanceWeights",
    "appearance_recovery",
    "cap_weights",
    "class_fractions",
    "class_mix_decomposition",
    "content_features",
    "density_ratio_weights",
    "effective_sample_size",
]

WEIGHT_METHOD = (
    "density ratio p_target/p_source = (n_s/n_t) P(t|x)/P(s|x) from a scikit-learn L2 "
    "LogisticRegression (C={c}, newton-cholesky) on standardised features, fitted on all "
    "images (not cross-fitted); weights scaled to mean 1 over the source and capped at {cap} "
    "(mean kept at 1)"
)
FEATURES = "sqrt of per-image class pixel fractions over labelled pixels (confusion row sums)"
DOMINANT_RULE = (
    "a component explains part of the drop when its CI lies above 0; dominant = 'class mix' or "
    "'appearance' when only that one does, 'both' when both do, 'neither' otherwise"
)
RECOVERY_RULE = (
    "recovered = mIoU_target_after - mIoU_target_before, excess = recovered - appearance; "
    "'harms' if the recovered CI lies below 0, 'no clear recovery' if it does not lie above 0; "
    "otherwise 'more than the appearance share' if the excess CI lies above 0, "
    "'part of the appearance share' if it lies below 0, else 'the appearance share'"
)
SHARE_RULE = (
    "share = component / total, given when |total| >= {m}; its CI (ratio per replicate) only when "
    "the total's CI excludes 0"
)


# --------------------------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def class_fractions(confusion: np.ndarray) -> np.ndarray:
    """Per-image ground-truth class fractions ``(B, C)`` over labelled pixels (confusion rows)."""
    cm = np.asarray(confusion, dtype=np.float64)
    gt = cm.sum(axis=2)
    total = gt.sum(axis=1, keepdims=True)
    return np.divide(gt, total, out=np.zeros_like(gt), where=total > 0)


def content_features(fractions: np.ndarray) -> np.ndarray:
    """The classifier's input: element-wise square root of class fractions (see module doc)."""
    return np.sqrt(np.clip(np.asarray(fractions, dtype=np.float64), 0.0, None))


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2``."""
    w = np.asarray(weights, dtype=np.float64)
    return float(w.sum() ** 2 / np.square(w).sum())


def cap_weights(weights: np.ndarray, max_weight: float) -> np.ndarray:
    """``min(lam * w, max_weight)`` with ``lam`` chosen so that the mean is exactly 1.

    Scaling and capping once would push the mean below 1 and rescaling would break the cap; the
    scale is found exactly instead: with the ``k`` largest weights capped,
    ``lam_k = (n - k * cap) / (sum of the others)``, and the first ``k`` consistent with the
    cap is the solution (the mean of ``min(lam * w, cap)`` increases with ``lam``).
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size < 1 or not np.all(np.isfinite(w)) or (w <= 0).any():
        raise ValueError("weights: expected a 1-D array of finite positive numbers")
    if not max_weight >= 1:
        raise ValueError(f"max_weight: expected >= 1 (weights have mean 1), got {max_weight}")
    n = w.size
    ws = np.sort(w)[::-1]
    k = np.arange(n)
    rest = np.cumsum(ws[::-1])[::-1]  # rest[k] = sum of ws[k:]
    lam = (n - k * max_weight) / rest
    tol = max_weight * (1 + 1e-12)
    ok = (lam * ws <= tol) & (lam > 0)
    ok[1:] &= lam[1:] * ws[:-1] >= max_weight * (1 - 1e-12)
    first = int(np.argmax(ok))  # a solution exists whenever max_weight >= 1
    return np.minimum(lam[first] * w, max_weight)


def _log_ratio(source_x: np.ndarray, target_x: np.ndarray, c_reg: float) -> np.ndarray:
    """``log[(n_s/n_t) P(t|x)/P(s|x)]`` at each source row from a logistic domain classifier."""
    x = np.vstack([source_x, target_x])
    y = np.r_[np.zeros(len(source_x)), np.ones(len(target_x))]
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=c_reg, solver="newton-cholesky", max_iter=200).fit(
        scaler.transform(x), y
    )
    logit = clf.decision_function(scaler.transform(source_x))
    return logit + np.log(len(source_x) / len(target_x))


def _check_features(x: object, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] < 2 or not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: expected a finite (n >= 2, d) feature array, got {a.shape}")
    return a


def density_ratio_weights(
    source_x: np.ndarray, target_x: np.ndarray, max_weight: float = 10.0, c_reg: float = 1.0
) -> ImportanceWeights:
    """Importance weights ``p_target/p_source`` at the source rows (see the module docstring).

    ``source_x`` ``(n_s, d)`` and ``target_x`` ``(n_t, d)`` are already-transformed features
    (a 1-D array is one feature).
    """
    xs = _check_features(source_x, "source_x")
    xt = _check_features(target_x, "target_x")
    if xs.shape[1] != xt.shape[1]:
        raise ValueError(
            f"target_x: expected {xs.shape[1]} features like source_x, got {xt.shape[1]}"
        )
    log_w = _log_ratio(xs, xt, c_reg)
    raw = np.exp(log_w - log_w.max())  # scale-free: normalised next
    w = cap_weights(raw / raw.mean(), max_weight)
    ess = effective_sample_size(w)
    return ImportanceWeights(
        weights=tuple(float(v) for v in w),
        ess=ess,
        ess_fraction=ess / len(w),
        max_weight=float(max_weight),
        n_clipped=int(np.sum(w >= max_weight * (1 - 1e-12))),
        n_source=len(xs),
        n_target=len(xt),
        method=WEIGHT_METHOD.format(c=c_reg, cap=max_weight),
    )


# --------------------------------------------------------------------------------------------
# Bootstrap engine
# --------------------------------------------------------------------------------------------


def _labelled(confusion: object, name: str) -> np.ndarray:
    """Float64 ``(B, C, C)`` of the labelled images only; at least 2 of them."""
    cm = check_confusions(confusion, name, min_images=1)
    cm = cm[cm.sum(axis=(1, 2)) > 0]
    if len(cm) < 2:
        raise ValueError(f"{name}: expected at least 2 labelled images, got {len(cm)}")
    return cm


def _mious(
    src: np.ndarray, tgt: np.ndarray, after: np.ndarray | None, w: np.ndarray
) -> list[float]:
    """[mIoU_source, mIoU_weighted_source, mIoU_target(, mIoU_target_after)] of one sample."""
    row = [weighted_iou(src, np.ones((1, len(src))))[1][0], weighted_iou(src, w[None])[1][0]]
    for cm in (tgt,) if after is None else (tgt, after):
        row.append(weighted_iou(cm, np.ones((1, len(cm))))[1][0])
    return row


_DRAWS_MEMO: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
"""Recent bootstrap draws and refitted weights by input hash: the decomposition and every fix
of one target resample the same source and target images, so they share one set of fits."""


def _bootstrap_draws(
    xs: np.ndarray, xt: np.ndarray, w_full: np.ndarray, opts: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(n_boot, n_s)`` source draws, ``(n_boot, n_t)`` target draws and the source weights of
    each replicate (refitted on the replicate, or the full-sample weights of the drawn rows)."""
    keys = ("seed", "n_boot", "refit", "max_weight", "c_reg")
    h = hashlib.sha256(repr([opts[k] for k in keys] + [xs.shape, xt.shape]).encode())
    for a in (xs, xt, w_full):
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    key = h.hexdigest()
    if key not in _DRAWS_MEMO:
        rng = np.random.default_rng(opts["seed"])
        ns, nt, n_boot = len(xs), len(xt), opts["n_boot"]
        src_i, tgt_j = np.empty((n_boot, ns), np.int64), np.empty((n_boot, nt), np.int64)
        weights = np.empty((n_boot, ns))
        for b in range(n_boot):
            i, j = rng.integers(0, ns, ns), rng.integers(0, nt, nt)
            src_i[b], tgt_j[b] = i, j
            if opts["refit"]:
                fit_b = density_ratio_weights(xs[i], xt[j], opts["max_weight"], opts["c_reg"])
                weights[b] = fit_b.weights
            else:
                weights[b] = w_full[i]
        while len(_DRAWS_MEMO) >= 4:
            _DRAWS_MEMO.pop(next(iter(_DRAWS_MEMO)))
        _DRAWS_MEMO[key] = (src_i, tgt_j, weights)
    return _DRAWS_MEMO[key]


def _replicates(
    src: np.ndarray,
    tgt: np.ndarray,
    after: np.ndarray | None,
    opts: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, ImportanceWeights]:
    """Full-sample mIoUs, ``(n_boot, k)`` replicate mIoUs and the full-sample weights.

    Source and target images are drawn independently; one target draw serves before and after.
    """
    xs, xt = content_features(class_fractions(src)), content_features(class_fractions(tgt))
    fit = density_ratio_weights(xs, xt, opts["max_weight"], opts["c_reg"])
    w_full = np.asarray(fit.weights)
    point = np.array(_mious(src, tgt, after, w_full))
    src_i, tgt_j, weights = _bootstrap_draws(xs, xt, w_full, opts)
    reps = np.empty((opts["n_boot"], point.size))
    for b, (i, j, w) in enumerate(zip(src_i, tgt_j, weights, strict=True)):
        reps[b] = _mious(src[i], tgt[j], None if after is None else after[j], w)
    return point, reps, fit


def _component(name: str, value: float, reps: np.ndarray, alpha: float) -> Component:
    lo, hi = percentile_interval(reps, alpha)
    return Component(name, fnum(value), lo, hi, excludes_zero(lo, hi))


def _with_share(
    comp: Component, reps: np.ndarray, total: Component, total_reps: np.ndarray, opts: dict
) -> Component:
    """Add ``comp / total`` (and its CI when the total's CI excludes 0) to ``comp``."""
    if comp.value is None or total.value is None or abs(total.value) < opts["min_total"]:
        return comp
    lo = hi = None
    if total.significant:
        with np.errstate(invalid="ignore", divide="ignore"):
            lo, hi = percentile_interval(reps / total_reps, opts["alpha"])
    return dataclasses.replace(
        comp, share=comp.value / total.value, share_ci_low=lo, share_ci_high=hi
    )


def _options(n_boot: int, alpha: float, seed: int, max_weight: float, refit: bool, **kw) -> dict:
    check_bootstrap_args(n_boot, alpha)
    if not max_weight >= 1:
        raise ValueError(f"max_weight: expected >= 1 (weights have mean 1), got {max_weight}")
    opts = {"n_boot": int(n_boot), "alpha": float(alpha), "seed": int(seed)}
    opts.update(max_weight=float(max_weight), refit=bool(refit), c_reg=1.0, **kw)
    weights = "refitted in every resample" if refit else "fixed at the full-sample fit"
    opts["ci_method"] = (
        f"percentile bootstrap, {opts['n_boot']} resamples, source and target images drawn "
        f"independently, weights {weights}" + opts.pop("ci_extra", "")
    )
    return opts


def _check_classes(src: np.ndarray, other: np.ndarray, name: str) -> None:
    if other.shape[1:] != src.shape[1:]:
        raise ValueError(
            f"{name}: expected {src.shape[1]} classes like source_confusion, got {other.shape[1:]}"
        )


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def _dominant(class_mix: Component, appearance: Component) -> str:
    cm_pos = class_mix.ci_low is not None and class_mix.ci_low > 0
    ap_pos = appearance.ci_low is not None and appearance.ci_low > 0
    return {(True, True): "both", (True, False): "class mix", (False, True): "appearance"}.get(
        (cm_pos, ap_pos), "neither"
    )


def class_mix_decomposition(
    source_confusion: np.ndarray,
    target_confusion: np.ndarray,
    n_boot: int = 500,
    alpha: float = 0.05,
    seed: int = 0,
    *,
    max_weight: float = 10.0,
    refit: bool = True,
    min_total: float = 0.005,
) -> ClassMixDecomposition:
    """Split ``mIoU_source - mIoU_target`` into class-mix and appearance shares, with CIs.

    Inputs are per-image confusion matrices ``(B, C, C)``; unlabelled (all-zero) images are
    dropped. Shares are fractions of the total when ``|total| >= min_total``.
    """
    opts = _options(n_boot, alpha, seed, max_weight, refit, min_total=float(min_total))
    src = _labelled(source_confusion, "source_confusion")
    tgt = _labelled(target_confusion, "target_confusion")
    _check_classes(src, tgt, "target_confusion")
    point, reps, fit = _replicates(src, tgt, None, opts)
    keep = np.isfinite(reps).all(axis=1)
    reps = reps[keep]
    parts = {"total": (0, 2), "class_mix": (0, 1), "appearance": (1, 2)}
    comps = {
        k: _component(k, point[a] - point[b], reps[:, a] - reps[:, b], opts["alpha"])
        for k, (a, b) in parts.items()
    }
    total_reps = reps[:, 0] - reps[:, 2]
    for k, (a, b) in parts.items():
        comps[k] = _with_share(comps[k], reps[:, a] - reps[:, b], comps["total"], total_reps, opts)
    return ClassMixDecomposition(
        miou_source=fnum(point[0]),
        miou_weighted_source=fnum(point[1]),
        miou_target=fnum(point[2]),
        **comps,
        dominant=_dominant(comps["class_mix"], comps["appearance"]),
        dominant_rule=DOMINANT_RULE,
        share_rule=SHARE_RULE.format(m=opts["min_total"]),
        weights=fit,
        features=FEATURES,
        n_source=len(src),
        n_target=len(tgt),
        n_boot=opts["n_boot"],
        n_boot_used=int(keep.sum()),
        alpha=opts["alpha"],
        seed=opts["seed"],
        ci_method=opts["ci_method"],
    )


def _recovery_verdict(recovered: Component, excess: Component) -> str:
    if recovered.ci_high is not None and recovered.ci_high < 0:
        return "harms"
    if recovered.ci_low is None or recovered.ci_low <= 0:
        return "no clear recovery"
    if excess.ci_low is not None and excess.ci_low > 0:
        return "more than the appearance share"
    if excess.ci_high is not None and excess.ci_high < 0:
        return "part of the appearance share"
    return "the appearance share"


def _ratio(
    name: str, num: float, den: float, reps: tuple, den_comp: Component, opts: dict
) -> Component:
    """``num / den`` as a Component; CI from replicate ratios when ``den``'s CI lies above 0."""
    if den_comp.value is None or den < opts["min_total"]:
        return Component(name, None, None, None, False)
    lo = hi = None
    if den_comp.ci_low is not None and den_comp.ci_low > 0:
        lo, hi = percentile_interval(reps[0] / reps[1], opts["alpha"])
    return Component(name, fnum(num / den), lo, hi, excludes_zero(lo, hi))


def _paired_targets(
    src: np.ndarray, target_before: object, target_after: object
) -> tuple[np.ndarray, np.ndarray]:
    """The images labelled in ``target_before``, before and after, checked to be paired."""
    before = check_confusions(target_before, "target_before", min_images=1)
    after = check_confusions(target_after, "target_after", min_images=1)
    if after.shape != before.shape:
        raise ValueError(
            f"target_after: expected the shape of target_before {before.shape} "
            f"(the same images in the same order), got {after.shape}"
        )
    labelled = before.sum(axis=(1, 2)) > 0
    if not np.array_equal(labelled, after.sum(axis=(1, 2)) > 0):
        raise ValueError(
            "target_after: expected the same labelled images as target_before "
            "(an image is labelled in one and empty in the other)"
        )
    tgt = _labelled(before, "target_before")
    _check_classes(src, tgt, "target_before")
    return tgt, after[labelled]


def appearance_recovery(
    source_confusion: np.ndarray,
    target_before: np.ndarray,
    target_after: np.ndarray,
    n_boot: int = 500,
    alpha: float = 0.05,
    seed: int = 0,
    *,
    max_weight: float = 10.0,
    refit: bool = True,
    min_total: float = 0.005,
) -> AppearanceRecovery:
    """Which share of the drop a fix recovers: ``mIoU_after - mIoU_before`` vs the appearance share.

    ``target_before`` and ``target_after`` hold the same target images in the same order; the
    images labelled in ``target_before`` are used in both. Each replicate draws source images
    and (independently) target images, the latter applied to before and after alike (paired).
    ``fraction_of_appearance`` = recovered / appearance (1 = exactly the appearance share).
    """
    extra = "; each target draw applied to the target before and after the fix (paired)"
    opts = _options(
        n_boot, alpha, seed, max_weight, refit, min_total=float(min_total), ci_extra=extra
    )
    src = _labelled(source_confusion, "source_confusion")
    tgt, after = _paired_targets(src, target_before, target_after)
    point, reps, _ = _replicates(src, tgt, after, opts)
    keep = np.isfinite(reps).all(axis=1)
    reps = reps[keep]
    a = opts["alpha"]
    rec_r, app_r, tot_r = reps[:, 3] - reps[:, 2], reps[:, 1] - reps[:, 2], reps[:, 0] - reps[:, 2]
    recovered = _component("recovered", point[3] - point[2], rec_r, a)
    appearance = _component("appearance", point[1] - point[2], app_r, a)
    excess = _component("excess_over_appearance", point[3] - point[1], reps[:, 3] - reps[:, 1], a)
    total = _component("total", point[0] - point[2], tot_r, a)
    rec, app, tot = point[3] - point[2], point[1] - point[2], point[0] - point[2]
    return AppearanceRecovery(
        miou_source=fnum(point[0]),
        miou_weighted_source=fnum(point[1]),
        miou_target_before=fnum(point[2]),
        miou_target_after=fnum(point[3]),
        recovered=recovered,
        appearance=appearance,
        excess=excess,
        fraction_of_appearance=_ratio(
            "fraction_of_appearance", rec, app, (rec_r, app_r), appearance, opts
        ),
        fraction_of_total=_ratio("fraction_of_total", rec, tot, (rec_r, tot_r), total, opts),
        verdict=_recovery_verdict(recovered, excess),
        rule=RECOVERY_RULE,
        n_source=len(src),
        n_target=len(tgt),
        n_boot=opts["n_boot"],
        n_boot_used=int(keep.sum()),
        alpha=a,
        seed=opts["seed"],
        ci_method=opts["ci_method"],
    )
