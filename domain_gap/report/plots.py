"""Report figures as PNG bytes (matplotlib, Agg backend, no display needed).

Each function draws numbers it is given; none computes a statistic.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")
"""Domain colours, in config order (source first)."""

DPI = 80


def domain_colors(domains: Sequence[str]) -> dict[str, str]:
    """A stable colour per domain name, in the given order."""
    return {d: PALETTE[i % len(PALETTE)] for i, d in enumerate(domains)}


def to_png(fig: Figure) -> bytes:
    """Render and close a figure; returns PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def point_sizes(loss: np.ndarray, small: float = 6.0, large: float = 70.0) -> np.ndarray:
    """Marker areas growing linearly with loss between ``small`` and ``large``; NaN → small."""
    x = np.asarray(loss, dtype=float)
    finite = np.isfinite(x)
    if not finite.any():
        return np.full(x.shape, small)
    lo, hi = np.nanmin(x[finite]), np.nanmax(x[finite])
    scaled = (x - lo) / (hi - lo) if hi > lo else np.full(x.shape, 0.5)
    return np.where(finite, small + (large - small) * np.nan_to_num(scaled), small)


def latent_map(
    coords: np.ndarray,
    domains: np.ndarray,
    loss: np.ndarray,
    order: Sequence[str],
    *,
    method: str = "PCA",
    clusters: np.ndarray | None = None,
    centers: np.ndarray | None = None,
) -> bytes:
    """2-D map of the embeddings: colour = domain, point size = loss, cluster ids at centres."""
    colors = domain_colors(order)
    sizes = point_sizes(loss)
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    for name in order:
        m = np.asarray(domains) == name
        ax.scatter(
            coords[m, 0],
            coords[m, 1],
            s=sizes[m],
            c=colors[name],
            alpha=0.55,
            edgecolors="none",
            label=f"{name} (n={int(m.sum())})",
        )
    if centers is not None:
        for k, (cx, cy) in enumerate(np.asarray(centers)):
            ax.annotate(
                str(k),
                (cx, cy),
                ha="center",
                va="center",
                fontsize=9,
                fontweight="bold",
                bbox={"boxstyle": "circle,pad=0.2", "fc": "white", "ec": "0.3", "alpha": 0.85},
            )
    ax.set_title(f"Latent map ({method} of the image embeddings) — point size = loss")
    ax.set_xlabel(f"{method} 1")
    ax.set_ylabel(f"{method} 2")
    ax.legend(loc="best", fontsize=9, markerscale=1.0)
    ax.grid(alpha=0.2)
    return to_png(fig)


def per_class_chart(
    class_names: Sequence[str],
    iou_drop: np.ndarray,
    class_gap: np.ndarray,
    gap_label: str,
) -> bytes:
    """Side-by-side bars per class: IoU drop (source - target) and the class-conditional gap."""
    names = list(class_names)
    y = np.arange(len(names))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.5, 0.28 * len(names) + 1.4), sharey=True)
    drop = np.asarray(iou_drop, dtype=float)
    gap = np.asarray(class_gap, dtype=float)
    ax1.barh(y, np.nan_to_num(drop), color=np.where(drop > 0, "#d62728", "#2ca02c"))
    ax1.axvline(0, color="0.3", lw=0.8)
    ax1.set_title("IoU drop (source - target)")
    ax2.barh(y, np.nan_to_num(gap), color="#9467bd")
    ax2.set_title(gap_label)
    for ax, vals in ((ax1, drop), (ax2, gap)):
        for yi, v in zip(y, vals, strict=True):
            if not np.isfinite(v):
                ax.text(0, yi, " n/a", va="center", fontsize=7, color="0.5")
        ax.grid(axis="x", alpha=0.2)
    ax1.set_yticks(y, names, fontsize=8)
    ax1.invert_yaxis()
    fig.tight_layout()
    return to_png(fig)


def histograms(
    field: str, edges: Sequence[float], counts: Mapping[str, Sequence[int]], order: Sequence[str]
) -> bytes:
    """Per-domain histograms of one field on shared bin ``edges``, each scaled to a density."""
    colors = domain_colors(order)
    e = np.asarray(edges, dtype=float)
    widths = np.diff(e)
    fig, ax = plt.subplots(figsize=(3.6, 2.4))
    for d in order:
        if d not in counts:
            continue
        c = np.asarray(counts[d], dtype=float)
        total = c.sum()
        if total > 0 and widths.size:
            dens = c / (total * np.where(widths > 0, widths, 1.0))
            ax.stairs(dens, e, fill=True, alpha=0.4, color=colors[d], label=f"{d} (n={int(total)})")
    ax.set_title(field, fontsize=9)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return to_png(fig)


def loss_histograms(
    values: Mapping[str, np.ndarray], order: Sequence[str], bins: int = 24
) -> bytes:
    """Per-domain density histograms of the per-sample loss on shared bins."""
    colors = domain_colors(order)
    finite = {d: np.asarray(values[d], float) for d in order if d in values}
    finite = {d: v[np.isfinite(v)] for d, v in finite.items()}
    pooled = np.concatenate(list(finite.values())) if finite else np.array([])
    fig, ax = plt.subplots(figsize=(5.0, 3.0))
    if pooled.size:
        lo, hi = float(pooled.min()), float(pooled.max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
        for d, v in finite.items():
            if v.size:
                ax.hist(v, bins=edges, density=True, alpha=0.45, color=colors[d], label=d)
    ax.set_title("Per-sample loss (cross-entropy)", fontsize=10)
    ax.set_xlabel("loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return to_png(fig)


def class_delta_bars(
    class_names: Sequence[str], deltas: Mapping[str, Sequence[float | None]]
) -> bytes:
    """Grouped vertical bars: per class, one bar of ΔIoU (after - before) per mitigation.

    Classes without a finite delta for any mitigation are left out; a missing bar stays empty.
    """
    names = list(deltas)
    values = np.array(
        [[np.nan if v is None else float(v) for v in deltas[n]] for n in names], dtype=float
    ).reshape(len(names), len(class_names))
    keep = np.flatnonzero(np.isfinite(values).any(axis=0))
    x = np.arange(len(keep))
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(keep) + 2.0), 3.6))
    for i, name in enumerate(names):
        v = values[i, keep]
        ax.bar(
            x - 0.4 + width * (i + 0.5),
            np.where(np.isfinite(v), v, 0.0),
            width=width,
            color=PALETTE[(i + 2) % len(PALETTE)],
            label=name,
        )
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xticks(x, [class_names[k] for k in keep], rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("ΔIoU (after - before)")
    ax.set_title("Per-class IoU change per mitigation (above 0: the fix recovers the class)")
    ax.grid(axis="y", alpha=0.2)
    if names:
        ax.legend(fontsize=8, ncols=min(len(names), 4))
    if not len(keep):
        ax.text(
            0.5,
            0.5,
            "no class has a computable IoU change",
            ha="center",
            transform=ax.transAxes,
            color="0.4",
        )
    fig.tight_layout()
    return to_png(fig)


def before_after_map(
    coords: np.ndarray,
    groups: np.ndarray,
    loss: np.ndarray,
    order: Sequence[str],
    *,
    target: str,
    mitigated: str,
    method: str = "PCA",
) -> bytes:
    """Two panels of one projection: every domain before, then ``target`` replaced by its
    ``mitigated`` group (the unmitigated target in faint grey); colour = group, size = loss."""
    colors = domain_colors([*order, mitigated])
    sizes = point_sizes(loss)
    g = np.asarray(groups)
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.6), sharex=True, sharey=True)
    panels = (
        ("before", list(order), None),
        (f"after: {mitigated}", [d for d in order if d != target] + [mitigated], target),
    )
    for ax, (title, shown, ghost) in zip(axes, panels, strict=True):
        if ghost is not None:
            m = g == ghost
            ax.scatter(
                coords[m, 0],
                coords[m, 1],
                s=sizes[m],
                c="0.8",
                alpha=0.5,
                edgecolors="none",
                label=f"{ghost} before",
            )
        for name in shown:
            m = g == name
            ax.scatter(
                coords[m, 0],
                coords[m, 1],
                s=sizes[m],
                c=colors[name],
                alpha=0.6,
                edgecolors="none",
                label=f"{name} (n={int(m.sum())})",
            )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"{method} 1")
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.2)
    axes[0].set_ylabel(f"{method} 2")
    fig.suptitle(
        f"Latent map before and after the fix ({method} fitted once on both); point size = loss",
        fontsize=10,
    )
    fig.tight_layout()
    return to_png(fig)
