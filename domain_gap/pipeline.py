"""The local engine's main job: extract → statistics → summary.json, samples.csv, report.html.

``run_analysis(config, out_dir)`` extracts the analysis subset of every domain (cached), then
compares the source domain with each other domain: latent gap (FD, MMD² with a bandwidth
frozen from the source, KID, C2ST, BBSD), a 2-D latent map, k-means concepts, the
class-conditional gap next to the IoU drop, and metadata drift. Every number comes from
``domain_gap.analysis`` / ``domain_gap.metrics``; this module only wires and writes them.
``run_demo(out_dir)`` does the same on the built-in synthetic sample.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from domain_gap.analysis.cache import FeatureCache, file_sha256
from domain_gap.analysis.concepts import (
    Concepts,
    class_conditional_gap,
    cluster_table,
    fit_concepts,
)
from domain_gap.analysis.drift import (
    drift_fields,
    known_fields,
    metadata_drift,
    score_agreement,
)
from domain_gap.analysis.extract import (
    Features,
    LazyRunner,
    Runner,
    domain_subset,
    extract_domain,
    load_predictions,
    read_model_card,
)
from domain_gap.analysis.frechet import common_fd_dims
from domain_gap.analysis.latent import latent_gap
from domain_gap.analysis.mitigate import choose_fit_records, extract_mitigated, fit_mitigation
from domain_gap.analysis.mmd import median_bandwidth
from domain_gap.analysis.pairwise import pairwise_gaps
from domain_gap.analysis.projection import cached_projection
from domain_gap.analysis.results import (
    SCHEMA_VERSION,
    Bandwidth,
    ClassGap,
    ClusterRow,
    Clusters,
    DomainSample,
    DomainStats,
    Drop,
    FitInfo,
    FleetScale,
    LabelFreeScore,
    LatentGap,
    MetadataDrift,
    ModelInfo,
    PairwiseGaps,
    Projection,
    Summary,
    UserMetadataInfo,
    WhatIf,
    to_json,
)
from domain_gap.analysis.scale import ScalePlan, fill_cache, plan_scale, scale_section
from domain_gap.analysis.stats_utils import fnum, stats_threads
from domain_gap.analysis.whatif import Fix, Settings, what_if
from domain_gap.atomic import write_atomic
from domain_gap.config import Config, load_config
from domain_gap.data.user_metadata import PREFIX as USER_PREFIX
from domain_gap.execution import prefill_cache
from domain_gap.heatmaps.run import CamSink, HeatmapRun, run_heatmaps
from domain_gap.labels import CLASS_NAMES
from domain_gap.metrics import dataset_iou
from domain_gap.model_spec import check_model_config
from domain_gap.outputs import TIMINGS, check_cache_dir, check_out, run_id, write_outputs

EXAMPLES_PER_DOMAIN = 2
"""Example thumbnails per cluster and domain in the report."""
DOMAIN_SPECIFIC_K = 6
"""Most domain-specific samples (by C2ST probability) shown per side."""
SCORE_NAME = "predictive entropy"
SCORE_DEFINITION = (
    "mean over each image's valid pixels of the softmax entropy -sum_c p_c log p_c (nats): "
    "needs no label, higher = the model is less certain"
)
"""The label-free per-image score that drivers rank against on a target without labels."""


class PipelineError(ValueError):
    """The analysis cannot run as configured (one line, names what is wrong)."""


def say(line: str) -> None:
    """One progress line on stderr, written in one call (a signal never splits it from its
    newline, so the next line, an error included, starts on a line of its own)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class _Stages:
    """Prints one line per stage to stderr and keeps the seconds each took."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.enabled:
            say(f"[domain-gap] {name} ...")
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 3)


def is_synthetic(config: Config) -> bool:
    """True when every domain root is a folder of the built-in sample (its stamp is beside it)."""
    from domain_gap.data.sample import STAMP

    roots = [config.resolve(d.root) or "" for d in config.domains]
    return all(not r.startswith("gs://") and (Path(r).parent / STAMP).is_file() for r in roots)


def _subset(config: Config) -> str | None:
    return None if config.analysis.subset == "all" else config.analysis.subset


def extract_all(
    config: Config,
    dataset: Any,
    cache: FeatureCache,
    runner: Runner,
    progress: bool = True,
) -> Features:
    """Features of the analysis subset of every configured domain, in config order.

    With heatmaps on, the same forward also makes their Grad-CAMs (one pass, not two)."""
    sink = CamSink(config, cache) if config.analysis.heatmaps.enabled else None
    passes = analysed_passes(config, dataset)
    prefill_cache(config, dataset, cache, passes, progress)  # executor 'ray': the cluster's pass
    parts = [
        extract_domain(
            config,
            dataset,
            name,
            subset,
            runner=runner,
            cache=cache,
            cam_sink=sink,
            progress=progress,
        )
        for name, subset in passes
    ]
    return with_user_metadata(dataset, Features.concat(parts))


def with_user_metadata(dataset: Any, feats: Features) -> Features:
    """``feats`` with the ``user_<column>`` fields of the domains' ``metadata_csv`` joined."""
    if not getattr(dataset, "user_tables", None):
        return feats
    by_id = {r.sample_id: r for r in dataset.records}
    fields, _ = dataset.user_metadata([by_id[i] for i in feats.sample_ids.tolist()])
    return replace(feats, metadata={**feats.metadata, **fields})


def user_metadata_info(dataset: Any, feats: Features) -> tuple[UserMetadataInfo, ...]:
    """Per domain with a ``metadata_csv``: its columns and the analysed samples without a row."""
    by_id = {r.sample_id: r for r in dataset.records}
    out = []
    for name, table in getattr(dataset, "user_tables", {}).items():
        records = [by_id[i] for i in feats.domain(name).sample_ids.tolist()]
        _, missing = dataset.user_metadata(records)
        out.append(
            UserMetadataInfo(
                name, table.source, table.key, table.columns, len(records), missing[name]
            )
        )
    return tuple(out)


def _domain_stats(f: Features, subset: str) -> DomainStats:
    lab = f.labelled
    if lab.any():
        iou, miou = dataset_iou(f.confusion[lab])
    else:
        iou, miou = np.full(len(CLASS_NAMES), np.nan), None
    return DomainStats(
        n=len(f),
        n_labelled=int(lab.sum()),
        subset=subset,
        loss_mean=float(np.nanmean(f.loss)) if lab.any() else None,
        loss_median=float(np.nanmedian(f.loss)) if lab.any() else None,
        miou_dataset=miou,
        miou_mean=float(np.nanmean(f.miou)) if np.isfinite(f.miou).any() else None,
        pixel_acc_mean=(float(np.nanmean(f.pixel_acc)) if np.isfinite(f.pixel_acc).any() else None),
        class_iou_dataset={name: fnum(v) for name, v in zip(CLASS_NAMES, iou, strict=True)},
    )


@dataclass(frozen=True)
class Comparison:
    """Every source-vs-target statistic of one target."""

    latent_gap: LatentGap
    domain_specific: dict[str, tuple[DomainSample, ...]]
    clusters: tuple[ClusterRow, ...]
    per_class: tuple[ClassGap, ...]
    metadata_drift: MetadataDrift
    rows_source: np.ndarray
    """Row indices of the source samples in the analysed features (for samples.csv)."""
    rows_target: np.ndarray


def _domain_specific(
    gap: LatentGap, s: Features, t: Features, source: str, target: str
) -> dict[str, tuple[DomainSample, ...]]:
    """The samples the domain classifier finds most typical of each side, with P(target)."""
    probs = np.asarray(gap.c2st.probs)
    prob_s, prob_t = probs[: len(s)], probs[len(s) :]
    order_t = np.argsort(-prob_t, kind="stable")[:DOMAIN_SPECIFIC_K]
    order_s = np.argsort(prob_s, kind="stable")[:DOMAIN_SPECIFIC_K]
    return {
        target: tuple(DomainSample(str(t.sample_ids[i]), float(prob_t[i])) for i in order_t),
        source: tuple(DomainSample(str(s.sample_ids[i]), float(prob_s[i])) for i in order_s),
    }


def _compare(
    config: Config,
    feats: Features,
    source: str,
    target: str,
    bandwidth: float,
    labels: np.ndarray,
    centers: np.ndarray,
    stages: _Stages,
) -> Comparison:
    """Every source-vs-target statistic, with sample indices turned into sample ids."""
    is_s, is_t = feats.domains == source, feats.domains == target
    s, t = feats.take(is_s), feats.take(is_t)
    with stages.stage(f"latent gap {source} vs {target}"):
        gap = _latent_gap(config, s, t, bandwidth, _fd_dims(config, feats))
    with stages.stage(f"clusters {source} vs {target}"):
        pair = np.flatnonzero(is_s | is_t)
        rows = cluster_table(
            labels[pair],
            feats.domains[pair],
            feats.loss[pair],
            source,
            target,
            x=feats.embeddings[pair],
            centers=centers,
            examples=EXAMPLES_PER_DOMAIN,
            alpha=config.analysis.alpha,
            ids=feats.sample_ids[pair],
        )
    with stages.stage(f"class-conditional gap {source} vs {target}"):
        per_class = _class_gap(config, s, t)
    with stages.stage(f"metadata drift {source} vs {target}"):
        labelled = bool(t.labelled.any())
        drift = metadata_drift(
            known_fields(drift_fields(s.metadata), USER_PREFIX),
            known_fields(drift_fields(t.metadata), USER_PREFIX),
            t.loss if labelled else t.entropy,
            config.analysis.alpha,
            source_name=source,
            target_name=target,
            score="loss" if labelled else SCORE_NAME,
        )
    return Comparison(
        latent_gap=gap,
        domain_specific=_domain_specific(gap, s, t, source, target),
        clusters=rows,
        per_class=per_class,
        metadata_drift=drift,
        rows_source=np.flatnonzero(is_s),
        rows_target=np.flatnonzero(is_t),
    )


def _fd_dims(config: Config, feats: Features) -> int:
    """One FD dimension count for every comparison of the report (see common_fd_dims)."""
    sizes = [int((feats.domains == d.name).sum()) for d in config.domains]
    return common_fd_dims(feats.embeddings.shape[1], sizes, config.analysis.max_dim)


def _latent_gap(
    config: Config, s: Features, t: Features, bandwidth: float, fd_dims: int
) -> LatentGap:
    a = config.analysis
    return latent_gap(
        s.embeddings,
        t.embeddings,
        bandwidth=bandwidth,
        permutations=a.permutations,
        n_boot=a.bootstrap,
        max_dim=fd_dims,
        alpha=a.alpha,
        seed=config.seed,
        probs_source=s.prob_mean,
        probs_target=t.prob_mean,
        class_names=CLASS_NAMES,
        mmd=a.mmd,
    )


def _class_gap(config: Config, s: Features, t: Features) -> tuple[ClassGap, ...]:
    return class_conditional_gap(
        s.class_emb,
        s.class_counts,
        t.class_emb,
        t.class_counts,
        s.class_iou,
        t.class_iou,
        CLASS_NAMES,
        permutations=config.analysis.permutations,
        alpha=config.analysis.alpha,
        seed=config.seed,
        dataset_iou_source=_dataset_class_iou(s),
        dataset_iou_target=_dataset_class_iou(t),
    )


def _dataset_class_iou(f: Features) -> np.ndarray | None:
    return dataset_iou(f.confusion[f.labelled])[0] if f.labelled.any() else None


def _model_summary(config: Config, cache: FeatureCache) -> ModelInfo:
    card = read_model_card(cache)
    return ModelInfo(
        checkpoint=config.resolve(config.model.checkpoint),
        sha256=cache.model_hash,
        arch=card.get("arch", config.model.arch),
        tap=config.model.tap,
        card=card,
    )


def sample_table(feats: Features, result: Analysis) -> tuple[list[str], list[list[Any]]]:
    """samples.csv: one row per sample (ids, loss, mIoU, label-free scores, cluster, P(target),
    map, metadata)."""
    coords, labels, prob_columns = result.coords, result.clusters, result.prob_columns
    fix_columns = _mitigation_columns(feats, result.mitigated)
    cam_columns = result.heatmaps.columns(feats.sample_ids.tolist()) if result.heatmaps else {}
    meta_keys = [k for k in sorted(feats.metadata) if k != "domain"]
    header = [
        "sample_id",
        "domain",
        "subset",
        "labelled",
        "loss",
        "miou",
        "pixel_acc",
        "entropy",
        "max_prob",
        "cluster",
        *prob_columns,
        "map_x",
        "map_y",
        *fix_columns,
        *cam_columns,
        *meta_keys,
    ]
    rows = []
    for i in range(len(feats)):
        rows.append(
            [
                feats.sample_ids[i],
                feats.domains[i],
                feats.subsets[i],
                int(feats.labelled[i]),
                feats.loss[i],
                feats.miou[i],
                feats.pixel_acc[i],
                feats.entropy[i],
                feats.max_prob[i],
                int(labels[i]),
                *(col[i] for col in prob_columns.values()),
                coords[i, 0],
                coords[i, 1],
                *(col[i] for col in fix_columns.values()),
                *(col[i] for col in cam_columns.values()),
                *(feats.metadata[k][i] for k in meta_keys),
            ]
        )
    return header, rows


def _mitigation_columns(
    feats: Features, mitigated: dict[str, dict[str, Features]]
) -> dict[str, np.ndarray]:
    """``loss_<fix>`` and ``miou_<fix>`` per mitigation: its value on the mitigated image (NaN
    for rows it was not applied to)."""
    row = {sid: i for i, sid in enumerate(feats.sample_ids.tolist())}
    columns: dict[str, np.ndarray] = {}
    for fixes in mitigated.values():
        for name, f in fixes.items():
            idx = np.array([row[sid] for sid in f.sample_ids.tolist()], dtype=int)
            for metric, values in (("loss", f.loss), ("miou", f.miou)):
                col = columns.setdefault(f"{metric}_{name}", np.full(len(feats), np.nan))
                col[idx] = values
    return columns


def csv_bytes(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    """CSV text: floats to 6 significant digits, NaN as an empty cell."""

    def cell(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return "" if not np.isfinite(v) else f"{float(v):.6g}"
        return str(v)

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[cell(v) for v in row] for row in rows])
    return buf.getvalue().encode()


@dataclass
class Analysis:
    """Everything computed from the features: the summary and the per-sample columns."""

    summary: Summary
    coords: np.ndarray
    """(N, 2) latent-map coordinates."""
    clusters: np.ndarray
    """(N,) k-means concept of each sample."""
    prob_columns: dict[str, np.ndarray]
    """samples.csv column name → (N,) domain-classifier probability P(target) (NaN elsewhere)."""
    concepts: Concepts | None = None
    """The fitted k-means concepts (mitigated images are assigned to the same clusters)."""
    mitigated: dict[str, dict[str, Features]] = field(default_factory=dict)
    """target → mitigation name → the mitigated records of the target's evaluation subset."""
    fitted: dict[str, dict[str, Any]] = field(default_factory=dict)
    """target → mitigation name → the fitted mitigation (for the report's thumbnails)."""
    whatif_maps: dict[str, WhatIfMap] = field(default_factory=dict)
    """target → the latent map before and after its best fix, in one projection."""
    heatmaps: HeatmapRun | None = None
    """The heatmap stage (CAM statistics, mean maps), when ``analysis.heatmaps`` is enabled."""


@dataclass(frozen=True)
class WhatIfMap:
    """Baseline rows (every domain) and the mitigated target rows, projected together."""

    coords: np.ndarray
    """(N + M, 2): the N baseline rows first, then the M mitigated target rows."""
    groups: np.ndarray
    """(N + M,) domain name, or "<target> (<fix>)" for the mitigated rows."""
    loss: np.ndarray
    fix: str


def analyse(
    config: Config,
    feats: Features,
    *,
    bandwidth: float | None = None,
    progress: bool = False,
    stages: _Stages | None = None,
    projections: Path | None = None,
) -> Analysis:
    """All statistics of ``feats`` (rows of every configured domain).

    ``bandwidth`` freezes the MMD kernel bandwidth (e.g. a baseline run's, to compare a
    mitigation); by default it is the median pairwise distance of the source embeddings. It
    is stored in the summary either way. ``projections``: a folder where the 2-D map is cached
    under the hash of its embeddings (the only file I/O; ``None``: none).
    """
    stages = stages or _Stages(progress)
    source = config.source_domain
    targets = [d.name for d in config.domains if d.name != source]
    if not targets:
        raise PipelineError("config domains: need at least two domains (a source and a target)")
    bandwidth, bw_rule = _bandwidth(config, feats, bandwidth)
    with stages.stage("latent map and clusters"):
        coords, method = cached_projection(
            feats.embeddings, projections, config.analysis.projection, config.seed
        )
        k = min(config.analysis.clusters, len(feats))
        concepts = fit_concepts(feats.embeddings, k, seed=config.seed)
        labels, centers = concepts.labels, concepts.centers

    comparisons = {
        t: _compare(config, feats, source, t, bandwidth, labels, centers, stages) for t in targets
    }
    domains = {
        d.name: _domain_stats(feats.domain(d.name), _subset_name(config, feats, d.name))
        for d in config.domains
    }
    summary = Summary(
        title=f"Domain gap: {source} → {', '.join(targets)}",
        synthetic=False,
        source=source,
        targets=tuple(targets),
        domains=domains,
        sizes={name: d.n for name, d in domains.items()},
        drop={t: Drop.between(domains[source], domains[t]) for t in targets},
        bandwidth=Bandwidth(float(bandwidth), bw_rule),
        latent_gap={t: c.latent_gap for t, c in comparisons.items()},
        domain_specific={t: c.domain_specific for t, c in comparisons.items()},
        projection=Projection(method),
        clusters=Clusters(
            k=int(k),
            method="k-means on standardised, PCA-reduced image embeddings (all domains)",
            tables={t: c.clusters for t, c in comparisons.items()},
        ),
        per_class={t: c.per_class for t, c in comparisons.items()},
        metadata_drift={t: c.metadata_drift for t, c in comparisons.items()},
        config=config.model_dump(mode="json"),
        label_free_score=_label_free_score(config, feats, targets),
        pairwise=_pairwise(config, feats, comparisons, bandwidth, stages),
    )
    return Analysis(
        summary, coords, labels, _prob_columns(comparisons, len(feats)), concepts=concepts
    )


def _bandwidth(config: Config, feats: Features, given: float | None) -> tuple[float, str]:
    """The MMD kernel bandwidth of this run and its rule (frozen either way)."""
    if given is not None:
        return given, "given by the caller (frozen)"
    source = config.source_domain
    value = median_bandwidth(feats.domain(source).embeddings, seed=config.seed)
    return value, f"median pairwise distance of the {source} embeddings (frozen for this run)"


def _pairwise(
    config: Config,
    feats: Features,
    comparisons: dict[str, Comparison],
    bandwidth: float,
    stages: _Stages,
) -> PairwiseGaps | None:
    """The domain x domain matrix, with three or more domains (None otherwise)."""
    if len(config.domains) < 3:
        return None
    source = config.source_domain
    with stages.stage("pairwise domain matrix"):
        return pairwise_gaps(
            {d.name: feats.domain(d.name).embeddings for d in config.domains},
            {(source, t): c.latent_gap for t, c in comparisons.items()},
            bandwidth=bandwidth,
            permutations=config.analysis.permutations,
            alpha=config.analysis.alpha,
            seed=config.seed,
        )


def _subset_name(config: Config, feats: Features, name: str) -> str:
    """The analysed subset of one domain as shown in the summary ("all", "val", "unlabeled")."""
    subsets = sorted(set(feats.domain(name).subsets.tolist()))
    return subsets[0] if config.analysis.subset != "all" and len(subsets) == 1 else "all"


def _label_free_score(config: Config, feats: Features, targets: list[str]) -> LabelFreeScore:
    """The label-free score, its agreement with the loss on every domain with labels, and the
    targets without labels whose drivers were ranked against it."""
    agreement, unlabelled = [], []
    for d in config.domains:
        f = feats.domain(d.name)
        if f.labelled.any():
            lab = f.labelled
            agreement.append(score_agreement(d.name, f.entropy[lab], f.loss[lab]))
        elif d.name in targets:
            unlabelled.append(d.name)
    return LabelFreeScore(SCORE_NAME, SCORE_DEFINITION, tuple(agreement), tuple(unlabelled))


def _prob_columns(comparisons: dict[str, Comparison], n: int) -> dict[str, np.ndarray]:
    """samples.csv columns of the domain classifier's P(target), one per target."""
    columns: dict[str, np.ndarray] = {}
    for t, comp in comparisons.items():
        col = np.full(n, np.nan)
        probs = np.asarray(comp.latent_gap.c2st.probs)
        n_s = len(comp.rows_source)
        col[comp.rows_source], col[comp.rows_target] = probs[:n_s], probs[n_s:]
        columns[f"p_{t}" if len(comparisons) > 1 else "domain_prob"] = col
    return columns


def run_analysis(
    config: Config,
    out_dir: str | Path,
    *,
    progress: bool = True,
    bandwidth: float | None = None,
    runner: Runner | None = None,
) -> dict[str, Path]:
    """Analyse the configured domains; write ``report.html``, ``summary.json``, ``samples.csv``.

    ``bandwidth``: see :func:`analyse`. ``runner`` replaces the configured checkpoint's model
    (tests). Returns the paths written.
    """
    from domain_gap.data.dataset import DomainDataset

    out = Path(out_dir)
    stages = _Stages(progress)
    if len(config.domains) < 2:
        raise PipelineError("config domains: need at least two domains (a source and a target)")
    check_out(out)  # before any work: a file, a read-only or a foreign folder fails now
    check_cache_dir(config.resolve(config.cache_dir) or config.cache_dir)
    if runner is None:  # model settings against the checkpoint and the ONNX spec, one line each
        check_model_once(config)
    cache = FeatureCache.for_config(config)  # fails fast on a missing checkpoint
    with stages.stage("index data"):
        dataset = DomainDataset(config)
    frames = dataset.counts()
    if progress:
        say(f"[domain-gap] frames: {format_frames(frames)}")
    base_runner = runner or LazyRunner(config, cache)
    whole = dataset
    with stages.stage("extract"):
        dataset, feats, plan = _extract_stage(config, whole, cache, base_runner, progress)
    with stats_threads(len(feats)):
        result = analyse(config, feats, bandwidth=bandwidth, stages=stages, projections=cache.root)
    fleet = None
    if plan is not None:
        with stages.stage("every frame, streamed"):
            fleet = _fleet_section(config, whole, cache, plan, feats, progress)
        result = replace(result, summary=replace(result.summary, fleet=fleet))
    if config.analysis.mitigations:
        result = run_what_if(config, dataset, cache, base_runner, feats, result, stages, progress)
    if config.analysis.heatmaps.enabled:
        with stages.stage("heatmaps"):
            run = run_heatmaps(config, dataset, cache, base_runner, progress)
        summary = replace(result.summary, heatmaps=run.section)
        result = replace(result, summary=summary, heatmaps=run)
    summary = replace(
        result.summary,
        synthetic=is_synthetic(config),
        model=_model_summary(config, cache),
        user_metadata=user_metadata_info(dataset, feats),
        frames=frames,
        run_id=_run_id(config, cache, feats, fleet),
    )
    return _write_report(config, out, result, summary, feats, dataset, cache, stages, progress)


def _extract_stage(
    config: Config, dataset: Any, cache: FeatureCache, runner: Runner, progress: bool
) -> tuple[Any, Features, ScalePlan | None]:
    """The analysed records in memory: every frame, or at fleet scale the plan's subsample
    (the other frames extracted into the cache first). Returns the dataset the sections
    see (the plan's view at fleet scale), the records and the plan (None: no subsample)."""
    plan = plan_scale(config, dataset, analysed_passes(config, dataset))
    if plan is not None:
        prefill_cache(config, dataset, cache, plan.passes, progress)  # executor 'ray'
        fill_cache(config, dataset, cache, runner, plan, progress)
        dataset = plan.view(dataset)
        if progress:
            say(f"[domain-gap] analysing a seeded subsample: {format_subsample(plan)}")
    return dataset, extract_all(config, dataset, cache, runner, progress), plan


def _write_report(
    config: Config,
    out: Path,
    result: Analysis,
    summary: Summary,
    feats: Features,
    dataset: Any,
    cache: FeatureCache,
    stages: _Stages,
    progress: bool,
) -> dict[str, Path]:
    """Figures, thumbnails and the four output files, staged and swapped in as one."""
    from domain_gap.report.assets import build_assets
    from domain_gap.report.figure_cache import FigureCache
    from domain_gap.report.html import render_report

    with stages.stage("figures and thumbnails"):
        assets = build_assets(
            summary,
            coords=result.coords,
            domains=feats.domains,
            loss=feats.loss,
            clusters=result.clusters,
            thumbnail_source=_thumbnail_source(config, dataset, cache),
            whatif_maps=result.whatif_maps,
            mitigated_source=_mitigated_thumbnail_source(config, dataset, cache, result.fitted),
            heatmaps=result.heatmaps,
            figure_cache=FigureCache(cache.root / "figures"),
        )
    with stages.stage("write outputs"):
        header, rows = sample_table(feats, result)
        header, rows = [*header, "run_id"], [[*row, summary.run_id] for row in rows]
        written = write_outputs(
            out,
            {
                "samples.csv": csv_bytes(header, rows),
                "report.html": render_report(summary, assets).encode(),
                "summary.json": summary_json(summary),
                TIMINGS: timings_json(summary.run_id, stages.seconds),
            },
        )
    if progress:
        say(f"[domain-gap] wrote {out} (run {summary.run_id})")
    return {
        "report": written["report.html"],
        "summary": written["summary.json"],
        "samples": written["samples.csv"],
        "timings": written[TIMINGS],
    }


def timings_json(run_id: str, seconds: dict[str, float]) -> bytes:
    """``timings.json``: seconds per stage up to the output write (which it cannot time itself).

    Kept out of summary.json and the report so that those are the same bytes on every rerun.
    """
    body = {"run_id": run_id, "stages_s": seconds, "total_s": round(sum(seconds.values()), 3)}
    return (json.dumps(body, indent=2) + "\n").encode()


def check_model_once(config: Config) -> None:
    """:func:`check_model_config`, remembered in the cache folder once it passed for these
    exact files and model settings: a warm rerun then neither imports torch nor reads the
    checkpoint (which the check otherwise loads whole)."""
    m = config.model
    ckpt, onnx = config.resolve(m.checkpoint), config.resolve(m.onnx)
    if not ckpt or not Path(ckpt).is_file():
        check_model_config(config)  # raises the one-line error
        return
    parts = [file_sha256(ckpt), m.model_dump_json()]
    if onnx and Path(onnx).is_file():
        parts.append(file_sha256(onnx))
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]
    marker = Path(config.resolve(config.cache_dir) or config.cache_dir) / "checks" / key
    if marker.is_file():
        return
    check_model_config(config)
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(marker, b"model settings agree with the checkpoint and the ONNX file\n")


def analysed_passes(config: Config, dataset: Any) -> list[tuple[str, str | None]]:
    """(domain, analysed subset) of every configured domain, in config order."""
    return [(d.name, domain_subset(config, dataset, d.name)) for d in config.domains]


def format_subsample(plan: ScalePlan) -> str:
    """``a 20000 of 1200000; b ...``: the frames the sections use per domain."""
    return "; ".join(f"{d} {i.n_used} of {i.n_total}" for d, i in plan.info.items())


def _fleet_section(
    config: Config,
    dataset: Any,
    cache: FeatureCache,
    plan: ScalePlan,
    feats: Features,
    progress: bool,
) -> FleetScale:
    """The streamed figures of every frame; histograms of the subsample's numeric fields."""
    numeric = [k for k, v in sorted(feats.metadata.items()) if v.dtype.kind in "fiub"]
    subsets = {d.name: _subset_name(config, feats, d.name) for d in config.domains}
    dim = feats.embeddings.shape[1]
    return scale_section(config, dataset, cache, plan, subsets, numeric, dim, progress)


def format_frames(frames: dict[str, dict[str, int]]) -> str:
    """``{domain: {subset: n}}`` as one line: ``a train=6 val=4; b ...``."""
    return "; ".join(
        f"{d} " + " ".join(f"{k}={n}" for k, n in sorted(c.items())) for d, c in frames.items()
    )


def _run_id(
    config: Config, cache: FeatureCache, feats: Features, fleet: FleetScale | None = None
) -> str:
    """The run id (see :func:`domain_gap.outputs.run_id`) of this analysis (with the
    streamed figures of every frame at fleet scale)."""
    arrays = {f.name: getattr(feats, f.name) for f in fields(feats) if f.name != "metadata"}
    arrays.update({f"metadata.{k}": v for k, v in feats.metadata.items()})
    if fleet is not None:
        arrays["fleet"] = np.frombuffer(json.dumps(to_json(fleet)).encode(), np.uint8)
    return run_id(config.model_dump(mode="json"), cache.model_hash, arrays, SCHEMA_VERSION)


UNLABELED_SKIP = (
    "not tested: the target has no labels, so neither loss nor mIoU can be re-measured, and "
    "every frame is evaluated, so none is left to fit a fix on"
)


def run_what_if(
    config: Config,
    dataset: Any,
    cache: FeatureCache,
    runner: Any,
    feats: Features,
    result: Analysis,
    stages: _Stages,
    progress: bool,
) -> Analysis:
    """Fit, re-extract and re-measure every configured mitigation on every target."""
    a, summary = config.analysis, result.summary
    settings = Settings(a.permutations, a.bootstrap, _fd_dims(config, feats), a.alpha, config.seed)
    source = feats.domain(summary.source)
    sections: dict[str, WhatIf] = {}
    mitigated: dict[str, dict[str, Features]] = {}
    fitted: dict[str, dict[str, Any]] = {}
    maps: dict[str, WhatIfMap] = {}
    skipped: dict[str, str] = {}
    for target in summary.targets:
        before = feats.domain(target)
        if not before.labelled.any():
            skipped[target] = UNLABELED_SKIP  # every frame is evaluated, none left to fit on
            continue
        fixes = _fixes(config, dataset, cache, runner, source, before, stages, progress)
        mitigated[target] = {fix.name: fix.features for fix, _ in fixes}
        fitted[target] = {fix.name: fit for fix, fit in fixes}
        with stages.stage(f"what-if statistics {target}"), stats_threads(len(feats)):
            section = what_if(
                source,
                before,
                tuple(fix for fix, _ in fixes),
                summary.latent_gap[target],
                result.concepts,  # type: ignore[arg-type]
                summary.bandwidth.value,
                settings,
            )
        with stages.stage(f"what-if map {target}"):
            maps[target], method = _what_if_map(
                config, feats, section, mitigated[target], cache.root
            )
        sections[target] = replace(section, map_method=method)
    return replace(
        result,
        summary=replace(summary, mitigations=sections, mitigations_skipped=skipped),
        mitigated=mitigated,
        fitted=fitted,
        whatif_maps=maps,
    )


def _fixes(
    config: Config,
    dataset: Any,
    cache: FeatureCache,
    runner: Any,
    source: Features,
    before: Features,
    stages: _Stages,
    progress: bool,
) -> list[tuple[Fix, Any]]:
    """Every configured mitigation fitted for one target and its mitigated pass."""
    target = str(before.domains[0])
    eval_ids = [*source.sample_ids.tolist(), *before.sample_ids.tolist()]
    src_fit, tgt_fit, fit_set = choose_fit_records(
        config, dataset, str(source.domains[0]), target, eval_ids
    )
    info = FitInfo(
        fit_set.source_subset,
        fit_set.target_subsets,
        len(fit_set.source_ids),
        len(fit_set.target_ids),
    )
    out = []
    for spec in config.analysis.mitigations:
        with stages.stage(f"mitigation {spec.label} on {target}"):
            fitted = fit_mitigation(
                config, dataset, spec, (src_fit, tgt_fit), fit_set, cache, runner
            )
            after = extract_mitigated(
                config,
                dataset,
                target,
                domain_subset(config, dataset, target),
                spec,
                fitted,
                cache,
                runner,
                progress,
            )
            after = with_user_metadata(dataset, after)  # drift after the fix sees user fields
        out.append((Fix(spec.label, spec.kind, spec.options, fitted.key(), info, after), fitted))
    return out


def _what_if_map(
    config: Config,
    feats: Features,
    section: WhatIf,
    fixes: dict[str, Features],
    projections: Path | None,
) -> tuple[WhatIfMap, str]:
    """Baseline and mitigated target embeddings in one 2-D projection fitted once on both.

    The fix shown is the best one (largest mIoU gain that helps), else the first configured.
    """
    name = section.best or section.mitigations[0].name
    after = fixes[name]
    coords, method = cached_projection(
        np.vstack([feats.embeddings, after.embeddings]),
        projections,
        config.analysis.projection,
        config.seed,
    )
    groups = np.concatenate([feats.domains, np.full(len(after), f"{section.target} ({name})")])
    loss = np.concatenate([feats.loss, after.loss])
    return WhatIfMap(coords, groups, loss, name), method


def summary_json(summary: Summary) -> bytes:
    """summary.json's bytes (see ``domain_gap/analysis/summary.schema.json``)."""
    return json.dumps(to_json(summary), indent=1, allow_nan=False).encode()


def _thumbnail_source(config: Config, dataset: Any, cache: FeatureCache) -> Any:
    """sample ids → (model-input image, strided cached prediction or None, valid mask)."""

    def load(sample_ids: Sequence[str]) -> dict[str, Any]:
        by_id = {r.sample_id: r for r in dataset.records}
        records = [by_id[i] for i in sample_ids if i in by_id]
        preds = load_predictions(config, cache, records)
        out = {}
        for record, pred in zip(records, preds, strict=True):
            prepared = dataset.prepare(record)
            out[record.sample_id] = (prepared.image, pred, prepared.valid)
        return out

    return load


def _mitigated_thumbnail_source(
    config: Config, dataset: Any, cache: FeatureCache, fitted: dict[str, dict[str, Any]]
) -> Any:
    """(target, fix, sample ids) → (mitigated image, prediction of the mitigated pass, valid).

    The image is the prepared model input mapped by the fitted mitigation (rounded to uint8);
    the prediction is read from that fix's pass cache (None when it is not cached).
    """

    def load(target: str, name: str, sample_ids: Sequence[str]) -> dict[str, Any]:
        fix = fitted.get(target, {}).get(name)
        if fix is None:
            return {}
        by_id = {r.sample_id: r for r in dataset.records}
        records = [by_id[i] for i in sample_ids if i in by_id]
        preds = load_predictions(config, cache.for_mitigation(name, fix.key()), records)
        out = {}
        for record, pred in zip(records, preds, strict=True):
            prepared = dataset.prepare(record)
            image = fix.apply(prepared.image, prepared.valid)
            image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
            out[record.sample_id] = (image, pred, prepared.valid)
        return out

    return load


def run_demo(out_dir: str | Path = "out/demo", *, progress: bool = True) -> dict[str, Path]:
    """The built-in SYNTHETIC sample (written when missing) analysed with the demo model."""
    from domain_gap.demo import ensure_demo_inputs

    config = load_config()
    ensure_demo_inputs(config, progress=progress)
    return run_analysis(config, out_dir, progress=progress)
