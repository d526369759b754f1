"""Figures and thumbnails for the report, drawn from the summary and a few per-sample arrays.

Nothing here computes a statistic: histograms come from the drift section's own bin counts,
the per-class chart from the per-class rows, and example samples are the ones the summary
names (cluster examples, most domain-specific samples).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from domain_gap.analysis.results import MetadataDrift, Summary, WhatIf
from domain_gap.report import heatmap_figures, plots
from domain_gap.report.figure_cache import FigureCache
from domain_gap.report.thumbnails import png_bytes, sample_thumbnail

TOP_DRIVER_HISTOGRAMS = 6
"""Histograms drawn per target: the top drivers, else the most shifted fields."""

Thumb = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]
ThumbnailSource = Callable[[Sequence[str]], Mapping[str, Thumb]]
"""sample ids → {sample id: (model-input image, predicted mask or None, valid mask or None)}."""
MitigatedThumbnailSource = Callable[[str, str, Sequence[str]], Mapping[str, Thumb]]
"""(target, mitigation name, sample ids) → {sample id: (mitigated image, its prediction, valid)}."""

THUMBNAIL_FIXES = 2
"""With at most this many fixes the report shows every fix's images; else the mapped fix's."""


class WhatIfMapLike(Protocol):
    """The before/after latent map of one target (``pipeline.WhatIfMap``)."""

    coords: np.ndarray
    groups: np.ndarray
    loss: np.ndarray
    fix: str


@dataclass
class ReportAssets:
    """PNG figures by name, PNG thumbnails by sample id, and mitigated thumbnails."""

    figures: dict[str, bytes] = field(default_factory=dict)
    thumbnails: dict[str, bytes] = field(default_factory=dict)
    mitigated: dict[str, dict[str, dict[str, bytes]]] = field(default_factory=dict)
    """target → mitigation name → sample id → PNG of the mitigated image and its prediction."""
    whatif_map_fix: dict[str, str] = field(default_factory=dict)
    """target → the fix drawn in its before/after latent map."""
    whatif_fixes: dict[str, list[str]] = field(default_factory=dict)
    """target → the fixes whose most improved and worsened images are shown."""

    def mitigated_thumb(self, target: str, fix: str, sample_id: str) -> bytes | None:
        """The mitigated thumbnail of one image, or None when it was not drawn."""
        return self.mitigated.get(target, {}).get(fix, {}).get(sample_id)


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


def fleet_histogram_fields(summary: Summary, target: str, limit: int = 3) -> list[str]:
    """The drift section's histogram fields that the every-frame histograms also hold; when
    it draws none, the ``limit`` fields of largest KS statistic on the subsample."""
    if summary.fleet is None:
        return []
    streamed = {h.name for h in summary.fleet.histograms.get(target, ())}
    drift = summary.metadata_drift[target]
    chosen = [f for f in histogram_fields(drift) if f in streamed]
    if chosen:
        return chosen
    by_ks = sorted((r for r in drift.numeric if r.ks is not None), key=lambda r: -(r.ks or 0.0))
    return [r.field for r in by_ks if r.field in streamed][:limit]


def _fleet_figures(assets: ReportAssets, summary: Summary, draw: FigureCache) -> None:
    """At fleet scale: the drift section's fields again, counted over every frame."""
    if summary.fleet is None:
        return
    for target, hists in summary.fleet.histograms.items():
        by_name = {h.name: h for h in hists}
        for name in fleet_histogram_fields(summary, target):
            h = by_name[name]
            assets.figures[f"fleet_hist/{target}/{name}"] = draw(
                plots.histograms,
                f"{name}, every frame",
                h.edges,
                {summary.source: h.source, target: h.target},
                [summary.source, target],
            )


def thumbnail_fixes(section: WhatIf, map_fix: str | None = None) -> list[str]:
    """The fixes whose most improved and worsened images the report shows: every fix when
    there are few, else the one in the before/after map (the best, else the first)."""
    names = [m.name for m in section.mitigations]
    if len(names) <= THUMBNAIL_FIXES:
        return names
    chosen = map_fix or section.best or names[0]
    return [chosen] if chosen in names else names[:1]


def changed_images(section: WhatIf, fix: str) -> list[str]:
    """Sample ids of one fix's most improved then most worsened images."""
    m = next(r for r in section.mitigations if r.name == fix)
    return [c.sample_id for c in (*m.most_improved, *m.most_worsened)]


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
    whatif_maps: Mapping[str, WhatIfMapLike] | None = None,
    mitigated_source: MitigatedThumbnailSource | None = None,
    heatmaps: heatmap_figures.HeatmapRunLike | None = None,
    figure_cache: FigureCache | None = None,
) -> ReportAssets:
    """Draw every figure of the report and encode the thumbnails it names.

    ``whatif_maps`` (target → before/after latent map) and ``mitigated_source`` (mitigated
    images and predictions) feed the "What if" section; without them it has no map and shows
    the changed images before the fix only. ``heatmaps`` (the heatmap stage's run) feeds the
    "Where the model looks" section. ``figure_cache`` reads back figures and thumbnails whose
    inputs did not change instead of drawing them again.
    """
    draw = figure_cache or FigureCache(None)
    order = [summary.source, *summary.targets]
    assets = ReportAssets()
    labels = np.asarray(clusters)
    centers = np.array(
        [coords[labels == c].mean(0) for c in range(int(labels.max()) + 1) if (labels == c).any()]
    )
    assets.figures["latent_map"] = draw(
        plots.latent_map,
        coords,
        domains,
        loss,
        order,
        method=summary.projection.method.upper(),
        centers=centers,
    )
    assets.figures["loss_hist"] = draw(
        plots.loss_histograms, {d: loss[domains == d] for d in order}, order
    )
    for target in summary.targets:
        rows = summary.per_class[target]
        assets.figures[f"per_class/{target}"] = draw(
            plots.per_class_chart,
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
            assets.figures[f"hist/{target}/{name}"] = draw(
                plots.histograms,
                name,
                hist.edges,
                {summary.source: hist.source, target: hist.target},
                [summary.source, target],
            )
    _fleet_figures(assets, summary, draw)
    heatmap_figures.draw(assets, summary, heatmaps, thumbnail_source, draw)
    shown = _what_if_figures(assets, summary, whatif_maps or {}, draw)
    ids = thumbnail_ids(summary) + [i for sec, fix in shown for i in changed_images(sec, fix)]
    for sample_id, (image, pred, valid) in thumbnail_source(list(dict.fromkeys(ids))).items():
        assets.thumbnails[sample_id] = draw(thumbnail_png, image, pred, valid)
    if mitigated_source is not None:
        for section, fix in shown:
            thumbs = mitigated_source(section.target, fix, changed_images(section, fix))
            assets.mitigated.setdefault(section.target, {})[fix] = {
                i: draw(thumbnail_png, *thumb) for i, thumb in thumbs.items()
            }
    return assets


def thumbnail_png(image: np.ndarray, pred: np.ndarray | None, valid: np.ndarray | None) -> bytes:
    """One sample's thumbnail (image beside its predicted mask) as PNG bytes."""
    return png_bytes(sample_thumbnail(image, pred, valid))


def _what_if_figures(
    assets: ReportAssets,
    summary: Summary,
    maps: Mapping[str, WhatIfMapLike],
    draw: FigureCache,
) -> list[tuple[WhatIf, str]]:
    """Draw the what-if figures of every target; returns the (section, fix) pairs whose
    changed images are shown (kept in ``assets.whatif_fixes``)."""
    order = [summary.source, *summary.targets]
    shown: list[tuple[WhatIf, str]] = []
    for target, section in summary.mitigations.items():
        if section.mitigations:
            assets.figures[f"whatif/classes/{target}"] = draw(
                plots.class_delta_bars,
                section.mitigations[0].deltas.per_class_iou.class_names,
                {m.name: m.deltas.per_class_iou.delta for m in section.mitigations},
            )
        wmap = maps.get(target)
        if wmap is not None:
            assets.whatif_map_fix[target] = wmap.fix
            extra = [g for g in dict.fromkeys(np.asarray(wmap.groups).tolist()) if g not in order]
            assets.figures[f"whatif/map/{target}"] = draw(
                plots.before_after_map,
                wmap.coords,
                wmap.groups,
                wmap.loss,
                order,
                target=target,
                mitigated=str(extra[0]) if extra else f"{target} ({wmap.fix})",
                method=(section.map_method or summary.projection.method).upper(),
            )
        fixes = thumbnail_fixes(section, wmap.fix if wmap is not None else None)
        assets.whatif_fixes[target] = fixes
        shown.extend((section, fix) for fix in fixes)
    return shown


def _num(v: float | None) -> float:
    return float("nan") if v is None else float(v)
