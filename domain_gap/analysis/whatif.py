"""The "What if" numbers: each fix re-measured against the baseline on the same target images.

Pure assembly over per-sample records (no I/O): the mitigated pass of a target's evaluation
subset (:mod:`domain_gap.analysis.mitigate`) is compared with the unmitigated pass row by row.
Performance changes are paired bootstraps (:mod:`~domain_gap.analysis.paired`), the gap to the
source is re-measured with the baseline's kernel bandwidth and z-scoring frozen, the metadata
drift and the concept shares are recomputed on the mitigated images, and the class-mix /
appearance split (:mod:`~domain_gap.analysis.class_mix`) says which share of the drop a fix
recovers. The verdict rests on ΔmIoU alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from domain_gap.analysis.c2st import paired_auc_delta
from domain_gap.analysis.class_mix import appearance_recovery, class_mix_decomposition
from domain_gap.analysis.concepts import Concepts
from domain_gap.analysis.drift import drift_fields, known_fields, metadata_drift
from domain_gap.analysis.extract import Features
from domain_gap.analysis.latent import latent_gap
from domain_gap.analysis.mmd import Scale, paired_mmd_delta, pooled_scale
from domain_gap.analysis.paired import (
    DeltaEstimate,
    PairedInputs,
    mitigation_verdict,
    paired_delta,
)
from domain_gap.analysis.results import (
    ClusterShift,
    FitInfo,
    ImageChange,
    LatentGap,
    MetadataDrift,
    MitigationResult,
    WhatIf,
)
from domain_gap.analysis.stats_utils import fnum
from domain_gap.data.user_metadata import PREFIX as USER_PREFIX
from domain_gap.labels import CLASS_NAMES
from domain_gap.metrics import ece_from_bins, sample_miou

__all__ = ["Fix", "Settings", "compare_fix", "what_if"]


@dataclass(frozen=True)
class Settings:
    """The statistics settings of a what-if run (taken from the analysis config)."""

    permutations: int
    n_boot: int
    max_dim: int | None
    alpha: float
    seed: int


@dataclass(frozen=True)
class Fix:
    """One mitigated pass to compare: its identity, its fit and its records."""

    name: str
    kind: str
    options: Mapping[str, float | int | str]
    fitted_key: str
    fit: FitInfo
    features: Features


def _paired_inputs(f: Features) -> PairedInputs:
    return PairedInputs(confusion=f.confusion, loss=f.loss, calibration=f.calibration)


def _ece(f: Features) -> float | None:
    if not f.labelled.any():
        return None
    value = ece_from_bins(f.calibration[f.labelled].sum(0))
    return value if np.isfinite(value) else None


def _gap_after(
    source: Features, after: Features, bandwidth: float, scale: Scale, s: Settings
) -> LatentGap:
    return latent_gap(
        source.embeddings,
        after.embeddings,
        bandwidth=bandwidth,
        scale=scale,
        permutations=s.permutations,
        n_boot=s.n_boot,
        max_dim=s.max_dim,
        alpha=s.alpha,
        seed=s.seed,
        probs_source=source.prob_mean,
        probs_target=after.prob_mean,
        class_names=CLASS_NAMES,
    )


def _gap_deltas(
    source: Features,
    before: Features,
    after: Features,
    gaps: tuple[LatentGap, LatentGap],
    frozen: tuple[float, Scale],
    s: Settings,
) -> tuple[DeltaEstimate, ...]:
    """Δ MMD² and Δ C2ST AUC with paired intervals; Δ FD as a point value."""
    base, new = gaps
    mmd = paired_mmd_delta(
        source.embeddings,
        before.embeddings,
        after.embeddings,
        frozen[0],
        frozen[1],
        n_boot=s.n_boot,
        alpha=s.alpha,
        seed=s.seed,
    )
    auc = paired_auc_delta(base.c2st, new.c2st, n_boot=s.n_boot, alpha=s.alpha, seed=s.seed)
    fd = DeltaEstimate(
        name="FD",
        before=base.frechet.value,
        after=new.frechet.value,
        delta=new.frechet.value - base.frechet.value,
        ci_low=None,
        ci_high=None,
        significant=False,
        n=len(after),
        alpha=s.alpha,
        ci_method="",
        note="point value only (the FD's own bootstrap intervals are in each latent gap)",
    )
    return (mmd, auc, fd)


def _cluster_shifts(
    concepts: Concepts, source: Features, before: Features, after: Features
) -> tuple[ClusterShift, ...]:
    k = len(concepts.centers)

    def shares(f: Features) -> np.ndarray:
        return np.bincount(concepts.assign(f.embeddings), minlength=k) / max(len(f), 1)

    s, b, a = shares(source), shares(before), shares(after)
    return tuple(ClusterShift(c, float(s[c]), float(b[c]), float(a[c])) for c in range(k))


EXTREMES = 4
"""Images listed (and shown) per fix as most improved and most worsened."""


def _per_image(before: Features, after: Features) -> tuple[tuple[float, ...], tuple[float, ...]]:
    d_miou = sample_miou(after.confusion) - sample_miou(before.confusion)
    d_miou = np.where(before.labelled, d_miou, np.nan)
    return tuple(float(v) for v in d_miou), tuple(float(v) for v in after.loss - before.loss)


def _extremes(
    before: Features, after: Features, d_miou: np.ndarray
) -> tuple[tuple[ImageChange, ...], tuple[ImageChange, ...]]:
    """The images a fix helped and hurt most (by per-image mIoU change, labelled only)."""
    ok = np.flatnonzero(np.isfinite(d_miou))
    order = ok[np.argsort(-d_miou[ok], kind="stable")]

    def change(i: int) -> ImageChange:
        return ImageChange(
            str(before.sample_ids[i]),
            fnum(before.miou[i]),
            fnum(after.miou[i]),
            fnum(d_miou[i]),
        )

    k = min(EXTREMES, len(order) // 2)
    gains = tuple(change(i) for i in order[:k] if d_miou[i] > 0)
    losses = tuple(change(i) for i in order[::-1][:k] if d_miou[i] < 0)
    return gains, losses


def compare_fix(
    source: Features,
    before: Features,
    fix: Fix,
    base_gap: LatentGap,
    concepts: Concepts,
    frozen: tuple[float, Scale],
    s: Settings,
) -> MitigationResult:
    """Every change one fix makes to ``before`` (the target's evaluation subset)."""
    after = fix.features
    if not np.array_equal(after.sample_ids, before.sample_ids):
        raise ValueError(f"{fix.name}: the mitigated pass holds other images than the baseline")
    deltas = paired_delta(
        _paired_inputs(before), _paired_inputs(after), n_boot=s.n_boot, alpha=s.alpha, seed=s.seed
    )
    gap_after = _gap_after(source, after, *frozen, s)
    gap = _gap_deltas(source, before, after, (base_gap, gap_after), frozen, s)
    recovery = None
    if source.labelled.any() and before.labelled.any():
        recovery = appearance_recovery(
            source.confusion[source.labelled],
            before.confusion[before.labelled],
            after.confusion[before.labelled],
            n_boot=s.n_boot,
            alpha=s.alpha,
            seed=s.seed,
        )
    d_miou, d_loss = _per_image(before, after)
    gains, losses = _extremes(before, after, np.asarray(d_miou))
    return MitigationResult(
        name=fix.name,
        kind=fix.kind,
        options=dict(fix.options),
        fitted_key=fix.fitted_key,
        fit=fix.fit,
        deltas=deltas,
        gap=gap,
        gap_after=gap_after,
        drift_after=_drift(source, after, s.alpha),
        clusters=_cluster_shifts(concepts, source, before, after),
        recovery=recovery,
        verdict=mitigation_verdict(deltas, {g.name: g.delta for g in gap}),
        most_improved=gains,
        most_worsened=losses,
        delta_miou_per_image=d_miou,
        delta_loss_per_image=d_loss,
    )


def _drift(source: Features, after: Features, alpha: float) -> MetadataDrift:
    return metadata_drift(
        known_fields(drift_fields(source.metadata), USER_PREFIX),
        known_fields(drift_fields(after.metadata), USER_PREFIX),
        after.loss,
        alpha,
        source_name=source.domains[0] if len(source) else "source",
        target_name=(after.domains[0] if len(after) else "target") + " (mitigated)",
    )


def _best(results: tuple[MitigationResult, ...]) -> str | None:
    helping = [r for r in results if r.verdict.verdict == "helps" and r.verdict.delta_miou]
    return max(helping, key=lambda r: r.verdict.delta_miou or 0.0).name if helping else None


def what_if(
    source: Features,
    before: Features,
    fixes: tuple[Fix, ...],
    base_gap: LatentGap,
    concepts: Concepts,
    bandwidth: float,
    s: Settings,
) -> WhatIf:
    """The what-if section of one target (``before``: its unmitigated evaluation records)."""
    scale = pooled_scale(source.embeddings, before.embeddings)
    decomposition = None
    if source.labelled.any() and before.labelled.any():
        decomposition = class_mix_decomposition(
            source.confusion[source.labelled],
            before.confusion[before.labelled],
            n_boot=s.n_boot,
            alpha=s.alpha,
            seed=s.seed,
        )
    results = tuple(
        compare_fix(source, before, fix, base_gap, concepts, (bandwidth, scale), s) for fix in fixes
    )
    return WhatIf(
        target=str(before.domains[0]),
        evaluated_subset=str(before.subsets[0]),
        n_images=len(before),
        n_labelled=int(before.labelled.sum()),
        ece_source=_ece(source),
        ece_target=_ece(before),
        frozen=(
            "MMD bandwidth and per-feature z-scoring (pooled source + unmitigated target) frozen "
            "from the baseline; C2ST refitted on the mitigated embeddings"
        ),
        decomposition=decomposition,
        mitigations=results,
        best=_best(results),
        note="" if before.labelled.any() else "no labels in the evaluated subset: no ΔmIoU",
    )
