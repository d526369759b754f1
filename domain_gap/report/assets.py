"""Figures and thumbnails for the report, drawn from the summary and a few per-sample arrays.

Nothing here computes a statistic: histograms come from the drift section's own bin counts,
the per-class chart from the per-class rows, and example samples are the ones the summary
names (cluster examples, most domain-specific samples).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from domain_gap.analysis.results import MetadataDrift, Summary
from domain_gap.report import plots
from domain_gap.report.thumbnails import png_bytes, sample_thumbnail

TOP_DRIVER_HISTOGRAMS = 6
"""Histograms drawn per target: the top drivers, else the most shifted fields."""

Thumb = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]
ThumbnailSource = Callable[[Sequence[str]], Mapping[str, Thumb]]
"""sample ids → {sample id: (model-input image, predicted mask or None, valid mask or None)}."""


@dataclass
class ReportAssets:
    """PNG figures by name and PNG thumbnails by sample id."""

    figures: dict[str, bytes] = field(default_factory=dict)
    thumbnails: dict[str, bytes] = field(default_factory=dict)


def histogram_fields(drift: MetadataDrift, limit: int = TOP_DRIVER_HISTOGRAMS) -> list[str]:
    """Fields to draw: ranked drivers first, then shifted numeric fields by KS statistic."""
    chosen = [d.field for d in drift.drivers][:limit]
    shifted = sorted(
        (r for r in drift.numeric if r.significant and r.histogram is not None),
        key=lambda r: -(r.ks or 0.0),
    )
    for row in shifted:
        if len(chosen) >= limit:
            break
        if row.field not in chosen:
            chosen.append(row.field)
    return chosen


def thumbnail_ids(summary: Summary) -> list[str]:
    """Every sample id the report shows as a thumbnail, in first-mention order."""
    ids: list[str] = []
    for rows in summary.clusters.tables.values():
        for row in rows:
            for members in (row.examples or {}).values():
                ids.extend(str(m) for m in members)
    for sides in summary.domain_specific.values():
        for items in sides.values():
            ids.extend(item.sample_id for item in items)
    return list(dict.fromkeys(ids))


def build_assets(
    summary: Summary,
    *,
    coords: np.ndarray,
    domains: np.ndarray,
    loss: np.ndarray,
    clusters: np.ndarray,
    thumbnail_source: ThumbnailSource,
) -> ReportAssets:
    """Draw every figure of the report and encode the thumbnails it names."""
    order = [summary.source, *summary.targets]
    assets = ReportAssets()
    labels = np.asarray(clusters)
    centers = np.array(
        [coords[labels == c].mean(0) for c in range(int(labels.max()) + 1) if (labels == c).any()]
    )
    assets.figures["latent_map"] = plots.latent_map(
        coords,
        domains,
        loss,
        order,
        method=summary.projection.method.upper(),
        centers=centers,
    )
    assets.figures["loss_hist"] = plots.loss_histograms(
        {d: loss[domains == d] for d in order}, order
    )
    for target in summary.targets:
        rows = summary.per_class[target]
        assets.figures[f"per_class/{target}"] = plots.per_class_chart(
            [r.class_name for r in rows],
            np.array([_num(r.dataset_iou_drop) for r in rows]),
            np.array([_num(r.mmd2) for r in rows]),
            "class-conditional MMD²",
        )
        drift = summary.metadata_drift[target]
        by_field = {r.field: r for r in drift.numeric}
        for name in histogram_fields(drift):
            hist = by_field[name].histogram
            assert hist is not None  # histogram_fields only picks fields that have one
            assets.figures[f"hist/{target}/{name}"] = plots.histograms(
                name,
                hist.edges,
                {summary.source: hist.source, target: hist.target},
                [summary.source, target],
            )
    for sample_id, (image, pred, valid) in thumbnail_source(thumbnail_ids(summary)).items():
        assets.thumbnails[sample_id] = png_bytes(sample_thumbnail(image, pred, valid))
    return assets


def _num(v: float | None) -> float:
    return float("nan") if v is None else float(v)
