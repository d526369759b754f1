"""The result contract: frozen, typed results from the statistics to summary.json and the report.

Every statistic returns one of these types. A result carries what was computed *and how*
(``ci_method``, ``p_floor``, sample sizes) and its ``significant`` flag is decided once, where
the test runs; the report only formats them. :func:`to_json` turns any result into plain
JSON values (NaN → ``None``); fields marked :data:`PER_SAMPLE` hold per-image arrays that
belong in samples.csv, not in summary.json, and are left out. ``summary.schema.json`` next to
this module is generated from these types (:mod:`domain_gap.analysis.schema`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCHEMA_VERSION = "3.0.0"
"""Version of summary.json's layout; bump the major part when a field is removed or renamed."""

PER_SAMPLE = {"per_sample": True}
"""Field metadata: a per-image array kept on the result but not written to summary.json."""

Interval = tuple[float | None, float | None]
"""A two-sided interval ``(lo, hi)``; ``(None, None)`` when it could not be computed."""

NO_INTERVAL: Interval = (None, None)


def per_sample(default: Any = ()) -> Any:
    """A dataclass field holding per-image values (excluded from summary.json)."""
    return field(default=default, metadata=PER_SAMPLE, repr=False, compare=False)


# --------------------------------------------------------------------------- latent gap


@dataclass(frozen=True)
class GapTest:
    """One headline row of the latent-gap table: a statistic, its interval and its test."""

    name: str
    value: float | int | None
    ci: Interval
    ci_method: str
    p_value: float | None
    p_floor: float | None
    """Smallest p-value the test can return (1 / (B + 1) for B permutations); None if analytic."""
    significant: bool | None
    """Decided where the test runs; None when the statistic carries no test."""
    test: str
    """How the p-value or decision was obtained, e.g. "500 permutations"."""
    reading: str
    """What the result means in plain words (follows ``significant``)."""
    spread: float | None = None
    """A spread shown as ``value ± spread`` (KID's SD over subsets), not an interval."""
    note: str = ""


@dataclass(frozen=True)
class SubsampleInfo:
    """A statistic ran on a seeded subsample of a domain, not on all of it (stated so)."""

    n_total: int
    n_used: int
    seed: int
    method: str


@dataclass(frozen=True)
class FieldHistogram:
    """Streamed counts of one numeric metadata field on shared edges, over every image."""

    name: str
    edges: tuple[float, ...]
    source: tuple[int, ...]
    target: tuple[int, ...]
    missing_source: int
    missing_target: int


@dataclass(frozen=True)
class FrechetResult:
    """Fréchet distance between Gaussian fits of the two samples."""

    value: float
    dims: int
    original_dim: int
    reduced: bool
    explained_variance: float
    note: str
    ci: Interval = NO_INTERVAL
    ci_method: str = ""
    bias_corrected: float | None = None
    n_boot: int = 0


@dataclass(frozen=True)
class MMDResult:
    """Unbiased Gaussian-kernel MMD² with its permutation test (exact or on random features)."""

    mmd2: float
    p_value: float
    p_floor: float
    significant: bool
    alpha: float
    bandwidth: float
    bandwidth_rule: str
    standardized: bool
    permutations: int
    n_source: int
    n_target: int
    null_mean: float
    null_q95: float
    ci: Interval
    ci_method: str
    n_boot: int
    method: str
    """How MMD² and its p-value were computed: the exact O(N²) test or random Fourier features."""
    n_features: int
    """Random Fourier features used (0 for the exact test)."""


@dataclass(frozen=True)
class KIDResult:
    """Kernel Inception Distance (cubic-kernel unbiased MMD²)."""

    mean: float
    std: float | None
    """SD over subsets; None when it would measure nothing (``std_note`` says why)."""
    subsets: int
    subset_size: int
    full_sample: float
    ci: Interval
    ci_method: str
    n_boot: int
    significant: bool | None
    """The interval of the full-sample estimate excludes 0 (None without an interval)."""
    std_note: str = ""


@dataclass(frozen=True)
class C2STResult:
    """Classifier two-sample test: a cross-validated domain classifier's AUC."""

    auc: float
    auc_ci: Interval
    ci_method: str
    auc_se: float
    auc_se_delong: float
    auc_se_cv: float
    fold_auc: tuple[float, ...]
    p_value: float
    significant: bool
    """The AUC interval lies above 0.5."""
    alpha: float
    pad: float
    error: float
    folds: int
    n: tuple[int, int]
    probs: tuple[float, ...] = per_sample()
    """Out-of-fold P(target) per sample, source rows first (goes to samples.csv)."""
    most_target_like_source: tuple[int, ...] = per_sample()
    """Row indices into the source of its most target-like samples, most extreme first."""
    most_source_like_target: tuple[int, ...] = per_sample()


@dataclass(frozen=True)
class BBSDClass:
    """One class's KS test on the per-image mean softmax probability."""

    name: str
    ks: float
    p_value: float
    p_adjusted: float
    significant: bool


@dataclass(frozen=True)
class BBSDResult:
    """Black-box shift detection over all classes (Bonferroni-corrected)."""

    per_class: tuple[BBSDClass, ...]
    any_significant: bool
    min_p_adjusted: float
    correction: str
    alpha: float

    @property
    def shifted(self) -> tuple[str, ...]:
        """Names of the classes whose output distribution shifted."""
        return tuple(r.name for r in self.per_class if r.significant)


@dataclass(frozen=True)
class Verdict:
    """The pre-specified decision (the MMD test) and whether the second opinion agrees."""

    significant: bool
    rule: str
    second_opinion: str
    second_opinion_significant: bool


@dataclass(frozen=True)
class LatentGap:
    """The whole latent-gap comparison of one source with one target."""

    n_source: int
    n_target: int
    dim: int
    alpha: float
    seed: int
    frechet: FrechetResult
    mmd: MMDResult
    kid: KIDResult
    c2st: C2STResult
    bbsd: BBSDResult | None
    verdict: Verdict
    tests: tuple[GapTest, ...]
    """The headline rows, in display order."""

    @property
    def significant(self) -> bool:
        return self.verdict.significant


@dataclass(frozen=True)
class DomainSample:
    """A sample the domain classifier finds typical of one side."""

    sample_id: str
    p_target: float


# --------------------------------------------------------------------------- concepts


@dataclass(frozen=True)
class ClusterRow:
    """One k-means concept: its share in each domain, its loss and a Fisher test."""

    cluster: int
    n: int
    n_source: int
    n_target: int
    share_source: float
    share_target: float
    ratio: float | None
    mean_loss_source: float | None
    mean_loss_target: float | None
    mean_loss: float | None
    status: str
    p_value: float
    p_adjusted: float | None
    significant: bool
    examples: dict[str, tuple[str | int, ...]] | None
    """Per domain, the sample ids (row indices when no ids were given) nearest the centre."""


@dataclass(frozen=True)
class ClassGap:
    """One class: its IoU in each domain next to the gap between its pixel embeddings."""

    class_name: str
    n_source: int
    n_target: int
    iou_source: float | None
    iou_target: float | None
    iou_drop: float | None
    dataset_iou_source: float | None
    dataset_iou_target: float | None
    dataset_iou_drop: float | None
    computable: bool
    mmd2: float | None
    p_value: float | None
    p_adjusted: float | None
    significant: bool
    bandwidth: float | None
    fd: float | None
    fd_dims: int | None
    note: str


@dataclass(frozen=True)
class Projection:
    method: str
    columns: tuple[str, str] = ("map_x", "map_y")


@dataclass(frozen=True)
class Clusters:
    k: int
    method: str
    tables: dict[str, tuple[ClusterRow, ...]]


# --------------------------------------------------------------------------- metadata drift


@dataclass(frozen=True)
class Histogram:
    edges: tuple[float, ...]
    source: tuple[int, ...]
    target: tuple[int, ...]


@dataclass(frozen=True)
class DriftField:
    """One numeric metadata field: how far it shifts and how it goes with the loss."""

    field: str
    n_source: int
    n_target: int
    n_missing_source: int
    n_missing_target: int
    status: str
    p_value: float | None
    p_adjusted: float | None
    significant: bool
    note: str = ""
    mean_source: float | None = None
    mean_target: float | None = None
    std_source: float | None = None
    std_target: float | None = None
    ks: float | None = None
    wasserstein: float | None = None
    wasserstein_sd: float | None = None
    smd: float | None = None
    spearman_rho: float | None = None
    spearman_p: float | None = None
    histogram: Histogram | None = None
    kind: str = "numeric"


@dataclass(frozen=True)
class CategoryDrift:
    """One categorical metadata field: chi-square test of the domain x category table."""

    field: str
    n_source: int
    n_target: int
    categories: tuple[str, ...]
    counts_source: tuple[int, ...]
    counts_target: tuple[int, ...]
    chi2: float
    dof: int
    cramers_v: float
    status: str
    p_value: float
    p_adjusted: float | None
    significant: bool
    note: str
    loss_by_category: dict[str, float | None] | None
    kruskal_p: float | None
    kind: str = "categorical"
    n_missing_source: int = 0
    """Images whose value is missing (an empty string), left out of the test."""
    n_missing_target: int = 0


@dataclass(frozen=True)
class Driver:
    """A field that shifts significantly and goes with the loss: a likely driver of the gap."""

    rank: int
    field: str
    smd: float
    spearman_rho: float
    spearman_p: float | None
    association_significant: bool
    p_adjusted: float | None
    ks: float
    score: float
    aligned: bool
    sentence: str


@dataclass(frozen=True)
class CategoryDriver:
    """A categorical field whose mix shifts significantly and whose categories go with a
    different loss (or label-free score) in the target: a likely driver of the gap."""

    rank: int
    field: str
    cramers_v: float
    p_adjusted: float | None
    kruskal_p: float | None
    association_significant: bool
    """Kruskal-Wallis of the target's score across categories: p < alpha."""
    category: str
    """The category the target has most more of than the source (share difference)."""
    share_source: float
    share_target: float
    score_category: float | None
    """Mean target score in that category."""
    score_rest: float | None
    """Mean target score in the other categories."""
    sentence: str


@dataclass(frozen=True)
class Skipped:
    field: str
    reason: str


@dataclass(frozen=True)
class MetadataDrift:
    """Every shared metadata field tested, and the ranked likely drivers."""

    numeric: tuple[DriftField, ...]
    categorical: tuple[CategoryDrift, ...]
    drivers: tuple[Driver, ...]
    skipped: tuple[Skipped, ...]
    alpha: float
    correction: str
    driver_rule: str
    source: str
    target: str
    score: str = "loss"
    """What the fields are correlated with inside the target: ``loss``, or the label-free
    score (:class:`LabelFreeScore`) when the target has no labels."""
    category_drivers: tuple[CategoryDriver, ...] = ()
    """Categorical fields that shift and whose categories differ in the target's score."""
    category_driver_rule: str = ""


# --------------------------------------------------------------------------- what if: paired
# changes (analysis/paired.py) and the colour/content split (analysis/class_mix.py)


@dataclass(frozen=True)
class DeltaEstimate:
    """``after - before`` of one dataset-level metric with its paired bootstrap interval.

    ``significant`` is True when the interval excludes 0 (lies wholly above or below it).
    """

    name: str
    before: float | None
    after: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    significant: bool
    n: int
    alpha: float
    ci_method: str
    note: str = ""


@dataclass(frozen=True)
class ClassDeltas:
    """Per-class dataset IoU before/after and its paired delta; ``None`` where a class is absent."""

    class_names: tuple[str, ...]
    before: tuple[float | None, ...]
    after: tuple[float | None, ...]
    delta: tuple[float | None, ...]
    ci_low: tuple[float | None, ...]
    ci_high: tuple[float | None, ...]
    significant: tuple[bool, ...]
    n: int
    alpha: float
    ci_method: str


@dataclass(frozen=True)
class PairedDeltas:
    """All paired deltas of one mitigation on one set of target images."""

    miou: DeltaEstimate
    per_class_iou: ClassDeltas
    loss: DeltaEstimate | None
    ece: DeltaEstimate | None
    scalars: tuple[DeltaEstimate, ...]
    n_images: int
    n_labelled: int
    n_boot: int
    alpha: float
    seed: int
    ci_method: str


@dataclass(frozen=True)
class NamedValue:
    """A named number reported beside a verdict (e.g. the change of a gap statistic)."""

    name: str
    value: float | None


@dataclass(frozen=True)
class MitigationVerdict:
    """Does the fix help? Decided on delta mIoU and its CI alone (see ``rule``)."""

    verdict: str
    delta_miou: float | None
    ci_low: float | None
    ci_high: float | None
    alpha: float
    ci_method: str
    rule: str
    gap_deltas: tuple[NamedValue, ...]
    note: str


@dataclass(frozen=True)
class ImportanceWeights:
    """Per-source-image weights towards the target content distribution (mean 1, capped)."""

    ess: float
    ess_fraction: float
    max_weight: float
    n_clipped: int
    n_source: int
    n_target: int
    method: str
    weights: tuple[float, ...] = per_sample()
    """Per source image (in the order given), for samples.csv."""


@dataclass(frozen=True)
class Component:
    """One mIoU difference with its bootstrap interval and its share of a reference total."""

    name: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    significant: bool
    share: float | None = None
    share_ci_low: float | None = None
    share_ci_high: float | None = None


@dataclass(frozen=True)
class ClassMixDecomposition:
    """The source-to-target mIoU drop split into a class-mix and an appearance share."""

    miou_source: float | None
    miou_weighted_source: float | None
    miou_target: float | None
    total: Component
    class_mix: Component
    appearance: Component
    dominant: str
    dominant_rule: str
    share_rule: str
    weights: ImportanceWeights
    features: str
    n_source: int
    n_target: int
    n_boot: int
    n_boot_used: int
    alpha: float
    seed: int
    ci_method: str


@dataclass(frozen=True)
class AppearanceRecovery:
    """How much of the drop a fix on the target recovers, against the appearance share."""

    miou_source: float | None
    miou_weighted_source: float | None
    miou_target_before: float | None
    miou_target_after: float | None
    recovered: Component
    appearance: Component
    excess: Component
    fraction_of_appearance: Component
    fraction_of_total: Component
    verdict: str
    rule: str
    n_source: int
    n_target: int
    n_boot: int
    n_boot_used: int
    alpha: float
    seed: int
    ci_method: str


# --------------------------------------------------------------------------- what if


@dataclass(frozen=True)
class FitInfo:
    """The frames a mitigation was fitted on: never the evaluated ones."""

    source_subset: str
    target_subsets: tuple[str, ...]
    n_source: int
    n_target: int


@dataclass(frozen=True)
class ClusterShift:
    """One concept's share of the target images before and after a fix."""

    cluster: int
    share_source: float
    share_target_before: float
    share_target_after: float


@dataclass(frozen=True)
class ImageChange:
    """One target image whose mIoU a fix changed most."""

    sample_id: str
    miou_before: float | None
    miou_after: float | None
    delta_miou: float | None


@dataclass(frozen=True)
class MitigationResult:
    """One fix re-measured on a target's evaluation subset, every change against the baseline."""

    name: str
    kind: str
    options: dict[str, float | int | str]
    fitted_key: str
    """sha256 of the fitted parameters: the cache key of the mitigated pass."""
    fit: FitInfo
    deltas: PairedDeltas
    """after - before of mIoU, per-class IoU, loss and ECE, paired over the same images."""
    gap: tuple[DeltaEstimate, ...]
    """after - before of the latent-gap statistics to the source (frozen kernel and scale)."""
    gap_after: LatentGap
    drift_after: MetadataDrift
    clusters: tuple[ClusterShift, ...]
    recovery: AppearanceRecovery | None
    verdict: MitigationVerdict
    most_improved: tuple[ImageChange, ...]
    """The labelled images with the largest mIoU gain, largest first."""
    most_worsened: tuple[ImageChange, ...]
    delta_miou_per_image: tuple[float, ...] = per_sample()
    """Per target image (evaluation order), mIoU after - before (NaN when unlabelled)."""
    delta_loss_per_image: tuple[float, ...] = per_sample()


@dataclass(frozen=True)
class WhatIf:
    """The "What if" section of one target: its baseline, the colour/content split, the fixes."""

    target: str
    evaluated_subset: str
    n_images: int
    n_labelled: int
    ece_source: float | None
    ece_target: float | None
    frozen: str
    """How the gap statistics stay comparable (bandwidth and z-scoring of the baseline)."""
    decomposition: ClassMixDecomposition | None
    mitigations: tuple[MitigationResult, ...]
    best: str | None
    """The fix with the largest mIoU gain whose verdict is "helps" (None if none helps)."""
    map_method: str = ""
    """Projection of the before/after latent map (fitted once on both), when drawn."""
    note: str = ""


# --------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class DomainStats:
    """Performance of the model on one domain's analysis subset."""

    n: int
    n_labelled: int
    subset: str
    loss_mean: float | None
    loss_median: float | None
    miou_dataset: float | None
    miou_mean: float | None
    pixel_acc_mean: float | None
    class_iou_dataset: dict[str, float | None]


@dataclass(frozen=True)
class Drop:
    loss_increase: float | None
    miou_dataset_drop: float | None
    miou_mean_drop: float | None

    @classmethod
    def between(cls, src: DomainStats, tgt: DomainStats) -> Drop:
        """Target minus source loss, source minus target mIoU (None where either is)."""

        def diff(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else float(a) - float(b)

        return cls(
            loss_increase=diff(tgt.loss_mean, src.loss_mean),
            miou_dataset_drop=diff(src.miou_dataset, tgt.miou_dataset),
            miou_mean_drop=diff(src.miou_mean, tgt.miou_mean),
        )


@dataclass(frozen=True)
class Bandwidth:
    value: float
    rule: str


@dataclass(frozen=True)
class ModelInfo:
    checkpoint: str | None
    sha256: str
    arch: str
    tap: str
    card: dict[str, Any]


@dataclass(frozen=True)
class PairGap:
    """MMD² and C2ST AUC between two domains (``a`` before ``b`` in config order)."""

    a: str
    b: str
    n_a: int
    n_b: int
    mmd2: float
    mmd_p: float | None
    mmd_p_floor: float | None
    mmd_significant: bool
    auc: float
    auc_ci: Interval
    auc_significant: bool
    """The AUC interval lies above 0.5."""


@dataclass(frozen=True)
class PairwiseGaps:
    """Every pair of domains (3+ domains): which pairs differ, at one frozen bandwidth."""

    domains: tuple[str, ...]
    pairs: tuple[PairGap, ...]
    bandwidth: float
    permutations: int
    alpha: float
    method: str
    """How the cells were computed (source pairs reuse their latent-gap section)."""


@dataclass(frozen=True)
class UserMetadataInfo:
    """One domain's ``metadata_csv``: what was joined, and how many samples had no row."""

    domain: str
    file: str
    key: str
    """The CSV column the rows were joined on (``sample_id`` or ``file_name``)."""
    columns: tuple[str, ...]
    """The fields it adds, as ``user_<column>``."""
    n_samples: int
    """Analysed samples of the domain."""
    n_missing: int
    """Of those, samples without a row (their fields are NaN or empty, never invented)."""


@dataclass(frozen=True)
class ScoreAgreement:
    """How well the label-free score tracks the real loss on one labelled domain."""

    domain: str
    n: int
    """Images with both a loss and a score."""
    spearman_rho: float | None
    spearman_p: float | None
    note: str = ""


@dataclass(frozen=True)
class LabelFreeScore:
    """The per-image score that needs no label, which drivers rank against on unlabeled targets."""

    name: str
    definition: str
    agreement: tuple[ScoreAgreement, ...]
    """Its Spearman correlation with the loss on every domain with labels."""
    used_for: tuple[str, ...]
    """Targets without labels, whose drivers were ranked against this score."""


@dataclass(frozen=True)
class Summary:
    """summary.json: everything the report shows, as computed by the statistics."""

    title: str
    synthetic: bool
    source: str
    targets: tuple[str, ...]
    domains: dict[str, DomainStats]
    sizes: dict[str, int]
    drop: dict[str, Drop]
    bandwidth: Bandwidth
    latent_gap: dict[str, LatentGap]
    domain_specific: dict[str, dict[str, tuple[DomainSample, ...]]]
    projection: Projection
    clusters: Clusters
    per_class: dict[str, tuple[ClassGap, ...]]
    metadata_drift: dict[str, MetadataDrift]
    config: dict[str, Any]
    model: ModelInfo | None = None
    mitigations: dict[str, WhatIf] = field(default_factory=dict)
    mitigations_skipped: dict[str, str] = field(default_factory=dict)
    """Targets the configured fixes were not tested on, each with the reason (no labels)."""
    heatmaps: Heatmaps | None = None
    """Where the model looks (class-conditional Grad-CAM per domain), when computed."""
    label_free_score: LabelFreeScore | None = None
    """The label-free score and how well it tracks the loss (always computed by the pipeline)."""
    user_metadata: tuple[UserMetadataInfo, ...] = ()
    """The domains' ``metadata_csv`` joins (empty when no domain has one)."""
    pairwise: PairwiseGaps | None = None
    """The domain x domain matrix of MMD² and C2ST AUC, with three or more domains."""
    frames: dict[str, dict[str, int]] = field(default_factory=dict)
    """Frames indexed per domain and subset (train / val / unlabeled; after max_samples)."""
    fleet: FleetScale | None = None
    """Set when a domain had more frames than ``analysis.subsample`` (see FleetScale)."""
    run_id: str = ""
    """Hash of what determines this result (settings, data as measured, model, code and schema
    version); samples.csv and report.html repeat it, so files of different runs are told apart."""
    schema_version: str = SCHEMA_VERSION


# --------------------------------------------------------------------------- serialisation


def to_json(obj: Any) -> Any:
    """Plain JSON values of a result (dataclasses → objects, tuples → lists, NaN/inf → None).

    Per-sample fields (:func:`per_sample`) are left out.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_json(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not f.metadata.get("per_sample")
        }
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_json(obj.tolist())
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.str_):
        return str(obj)
    return obj


# --------------------------------------------------------------------------- where the model
# looks: class-conditional Grad-CAM statistics per domain (domain_gap/heatmaps)


@dataclass(frozen=True)
class AttentionTest:
    """One attention statistic of one class, source against target, with its permutation test.

    ``value_source``/``value_target`` are the per-domain means (one number; two for the
    centroid (x, y); none for the mean-map distance). ``effect`` is target - source for a
    share or the entropy, the distance between the mean centroids, or the Jensen-Shannon
    distance between the mean maps; the test statistic is its absolute value.
    """

    statistic: str
    value_source: tuple[float | None, ...]
    value_target: tuple[float | None, ...]
    effect: float | None
    p_value: float | None
    p_floor: float | None
    p_adjusted: float | None
    significant: bool
    reading: str


@dataclass(frozen=True)
class ClassAttention:
    """Where the model looks for one class in each domain, and whether it differs."""

    class_name: str
    n_source: int
    n_target: int
    """Images in which the class is present (and its CAM has mass)."""
    tested: bool
    tests: tuple[AttentionTest, ...]
    significant: bool
    """Some test of this class is significant after Benjamini-Hochberg."""
    sentence: str
    """The headline in plain words (the most significant change, else the shares)."""
    note: str = ""


@dataclass(frozen=True)
class AttentionOutlier:
    """A target image whose attention for a class differs most from the source's mean map."""

    sample_id: str
    class_name: str
    js_distance: float
    """Jensen-Shannon distance (base 2) of its grid map to the class's source mean map."""
    on_object: float | None
    context: float | None


@dataclass(frozen=True)
class HeatmapComparison:
    """Attention of the model in the source and one target, class by class."""

    source: str
    target: str
    classes: tuple[ClassAttention, ...]
    """Every class present in either domain; ``tested`` for those in enough images of both."""
    n_tests: int
    alpha: float
    correction: str
    permutations: int
    test: str
    any_significant: bool
    outliers: tuple[AttentionOutlier, ...]


@dataclass(frozen=True)
class Heatmaps:
    """The "Where the model looks" section: how the CAMs were made and every comparison."""

    layer: str
    target_masks: str
    """"predicted" or "labelled": the pixels whose class-c logits are summed."""
    method: str
    statistics: str
    """Definitions of the per-image statistics (ring width, centroid units, entropy)."""
    ring: float
    grid: tuple[int, int]
    min_images: int
    min_area: float
    n_images: dict[str, int]
    comparisons: dict[str, HeatmapComparison]


@dataclass(frozen=True)
class FleetScale:
    """``analyze`` above ``analysis.subsample`` frames in a domain: every other section of the
    report ran on the seeded subsample stated here; these figures are over every frame,
    streamed from the cache in memory independent of the number of frames."""

    subsample: dict[str, SubsampleInfo]
    """Per domain: the frames of its analysed subset and the subsample the sections used."""
    domains: dict[str, DomainStats]
    """Per domain, over every frame (``loss_median`` is None: medians are not streamed)."""
    drop: dict[str, Drop]
    """Per target, over every frame."""
    frechet: dict[str, FrechetResult]
    """Per target: source vs target FD from streamed moments of every frame."""
    histograms: dict[str, tuple[FieldHistogram, ...]]
    """Per target: each numeric metadata field, source vs target counts over every frame."""


@dataclass(frozen=True)
class FleetGap:
    """The latent gap and the metadata drift at fleet scale, in bounded memory
    (``analysis.fleet``): FD and the histograms over every image, the tests on a subsample."""

    n_source: int
    n_target: int
    frechet: FrechetResult
    """From streamed moments of every image."""
    latent: LatentGap
    """FD, MMD², KID, C2ST and the verdict on the subsamples below."""
    drift: MetadataDrift
    """Metadata drift tests on the subsamples below (an exact subsample, not binned)."""
    histograms: tuple[FieldHistogram, ...]
    subsample_source: SubsampleInfo
    subsample_target: SubsampleInfo
