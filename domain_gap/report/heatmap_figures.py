"""Figures of the "Where the model looks" section: per-class mean maps and outlier overlays.

Everything drawn comes from the heatmap stage (``domain_gap.heatmaps.run.HeatmapRun``): the
per-domain mean grid maps and the outliers the comparison picked. Nothing is computed here
beyond the difference of the two maps shown side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from domain_gap.analysis.results import HeatmapComparison, Summary
from domain_gap.labels import CLASS_NAMES
from domain_gap.report.plots import plt, to_png
from domain_gap.report.thumbnails import png_bytes, resize_to_width, valid_box
from domain_gap.visualize import heatmap_overlay

OVERLAY_WIDTH = 240
"""Width of an outlier overlay in pixels."""


class HeatmapRunLike(Protocol):
    """What the figures read from ``domain_gap.heatmaps.run.HeatmapRun``."""

    means: dict[str, dict[int, np.ndarray]]

    def map_of(self, sample_id: str, class_name: str) -> np.ndarray | None: ...


ImageSource = Callable[[Sequence[str]], Mapping[str, tuple[Any, ...]]]
"""sample ids → {sample id: (model-input image, prediction or None, valid mask or None)}."""


def mean_map_figure(
    source: np.ndarray, target: np.ndarray, names: tuple[str, str], class_name: str
) -> bytes:
    """Source mean | target mean | target - source, on one colour scale per kind."""
    fig, axes = plt.subplots(1, 3, figsize=(6.6, 1.3))
    vmax = float(max(source.max(), target.max(), 1e-12))
    diff = target - source
    dmax = float(max(np.abs(diff).max(), 1e-12))
    panels = [
        (source, f"{names[0]} (mean)", "inferno", 0.0, vmax),
        (target, f"{names[1]} (mean)", "inferno", 0.0, vmax),
        (diff, f"{names[1]} - {names[0]}", "RdBu_r", -dmax, dmax),
    ]
    for ax, (grid, title, cmap, lo, hi) in zip(axes, panels, strict=True):
        shown = ax.imshow(grid, cmap=cmap, vmin=lo, vmax=hi, interpolation="bilinear")
        ax.set_title(f"{class_name}: {title}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(shown, ax=ax, fraction=0.025, pad=0.02).ax.tick_params(labelsize=6)
    return to_png(fig)


def overlay_image(image: np.ndarray, valid: np.ndarray | None, grid: np.ndarray) -> np.ndarray:
    """The image's valid box with a grid map (scaled to its maximum) blended over it."""
    img = np.asarray(image, dtype=np.uint8)
    rows, cols = valid_box(valid, img.shape[:2])
    small = resize_to_width(np.ascontiguousarray(img[rows, cols]), OVERLAY_WIDTH)
    peak = float(grid.max())
    heat = grid / peak if peak > 0 else grid
    return heatmap_overlay(small, heat.astype(np.float32), alpha=0.5)


def _class_figures(
    assets: Any, comp: HeatmapComparison, run: HeatmapRunLike, cached: Callable[..., bytes]
) -> None:
    src, tgt = run.means.get(comp.source, {}), run.means.get(comp.target, {})
    for row in comp.classes:
        c = CLASS_NAMES.index(row.class_name)
        if row.tested and c in src and c in tgt:
            key = f"heatmaps/{comp.target}/{row.class_name}"
            names = (comp.source, comp.target)
            assets.figures[key] = cached(mean_map_figure, src[c], tgt[c], names, row.class_name)


def draw(
    assets: Any,
    summary: Summary,
    run: HeatmapRunLike | None,
    images: ImageSource,
    cached: Callable[..., bytes] | None = None,
) -> None:
    """Add the section's figures to ``assets.figures``: ``heatmaps/<target>/<class>`` and
    ``heatmaps/outlier/<target>/<i>`` (the i-th outlier of the target's comparison).

    ``cached(fn, *args)`` (a :class:`~domain_gap.report.figure_cache.FigureCache`) draws the
    mean-map figures, so that a rerun reads back those whose maps did not change."""
    cached = cached or (lambda fn, *args: fn(*args))
    if run is None or summary.heatmaps is None:
        return
    comparisons = summary.heatmaps.comparisons
    ids = [o.sample_id for comp in comparisons.values() for o in comp.outliers]
    loaded = images(list(dict.fromkeys(ids))) if ids else {}
    for target, comp in comparisons.items():
        _class_figures(assets, comp, run, cached)
        for i, o in enumerate(comp.outliers):
            grid = run.map_of(o.sample_id, o.class_name)
            if o.sample_id in loaded and grid is not None:
                image, _, valid = loaded[o.sample_id]
                png = png_bytes(overlay_image(image, valid, grid))
                assets.figures[f"heatmaps/outlier/{target}/{i}"] = png
