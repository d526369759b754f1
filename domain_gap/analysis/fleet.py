"""The statistics stage at fleet scale, in memory independent of N beyond the subsample.

Each domain is a re-iterable stream of chunks (sample ids, (n, d) embeddings, metadata
columns), read twice, never held whole:

1. streamed :class:`~domain_gap.analysis.moments.Moments` (FD over every image), a seeded
   bottom-k :class:`~domain_gap.analysis.moments.Subsample` of ``subsample`` images per
   domain, and the range of each numeric metadata field;
2. :class:`~domain_gap.analysis.moments.StreamHistogram` counts of those fields on shared
   edges, over every image.

The latent tests (``latent.latent_gap``: MMD², KID, C2ST) and the metadata drift tests
(``drift.metadata_drift``) then run on the two subsamples, and the result states their size,
seed and method (:class:`~domain_gap.analysis.results.SubsampleInfo`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from domain_gap.analysis.drift import metadata_drift
from domain_gap.analysis.latent import latent_gap
from domain_gap.analysis.moments import (
    Moments,
    Range,
    StreamHistogram,
    Subsample,
    Totals,
    frechet_streamed,
)
from domain_gap.analysis.results import (
    Drop,
    FieldHistogram,
    FleetGap,
    FleetScale,
    FrechetResult,
    SubsampleInfo,
)
from domain_gap.config import Config

__all__ = [
    "Chunk",
    "Quality",
    "Stream",
    "fleet_gap",
    "fleet_gap_for",
    "fleet_scale",
]


@dataclass(frozen=True)
class Quality:
    """Row-aligned per-image quality of a chunk (what :class:`~.moments.Totals` sums)."""

    loss: np.ndarray
    miou: np.ndarray
    pixel_acc: np.ndarray
    confusion: np.ndarray
    """(n, C, C) confusion matrices (rows = ground truth)."""
    labelled: np.ndarray


@dataclass(frozen=True)
class Chunk:
    """A slice of one domain's records."""

    sample_ids: np.ndarray
    embeddings: np.ndarray
    metadata: Mapping[str, np.ndarray]
    quality: Quality | None = None
    """Set for :func:`fleet_scale` (the per-domain performance over every frame)."""


Stream = Callable[[], Iterable[Chunk]]
"""Returns a fresh iterator over a domain's chunks (called once per pass)."""


@dataclass
class _DomainPass:
    moments: Moments | None
    ranges: dict[str, Range]
    totals: Totals
    subsample: Subsample | None


def _domain_pass(stream: Stream, subsample: Subsample | None = None) -> _DomainPass:
    """Moments, numeric field ranges and quality totals of every chunk (one pass), and, given
    an empty ``subsample``, its bottom-k rows (embeddings and ``meta:<field>`` columns)."""
    state = _DomainPass(None, {}, Totals(), subsample)
    for chunk in stream():
        part = Moments.of(chunk.embeddings)
        state.moments = part if state.moments is None else state.moments.merge(part)
        for name, values in chunk.metadata.items():
            if np.asarray(values).dtype.kind in "fiu":
                state.ranges[name] = state.ranges.get(name, Range()).update(values)
        if chunk.quality is not None:
            q = chunk.quality
            state.totals = state.totals.update(q.loss, q.miou, q.pixel_acc, q.confusion, q.labelled)
        if state.subsample is not None:
            rows = {"embedding": np.asarray(chunk.embeddings, dtype=np.float32)}
            rows.update({f"meta:{k}": np.asarray(v) for k, v in chunk.metadata.items()})
            state.subsample = state.subsample.update(chunk.sample_ids, rows)
    if state.moments is None:
        raise ValueError("fleet: a domain stream yielded no chunk")
    return state


def _edges(passes: Mapping[str, _DomainPass], bins: int) -> dict[str, np.ndarray]:
    """Shared edges of each numeric field that every domain has (finite somewhere)."""
    names = set.intersection(*(set(p.ranges) for p in passes.values()))
    out = {}
    for name in sorted(names):
        merged = Range()
        for p in passes.values():
            merged = merged.merge(p.ranges[name])
        if np.isfinite(merged.lo):
            out[name] = merged.edges(bins)
    return out


def _histograms(stream: Stream, edges: Mapping[str, np.ndarray]) -> dict[str, StreamHistogram]:
    hists = {name: StreamHistogram.empty(e) for name, e in edges.items()}
    for chunk in stream():
        for name in hists:
            hists[name] = hists[name].update(chunk.metadata[name])
    return hists


def _field_histograms(
    edges: Mapping[str, np.ndarray],
    source: Mapping[str, StreamHistogram],
    target: Mapping[str, StreamHistogram],
) -> tuple[FieldHistogram, ...]:
    """Source and target counts of every field on its shared ``edges``."""
    return tuple(
        FieldHistogram(
            name=k,
            edges=tuple(float(e) for e in edges[k]),
            source=tuple(int(c) for c in source[k].counts),
            target=tuple(int(c) for c in target[k].counts),
            missing_source=source[k].nan,
            missing_target=target[k].nan,
        )
        for k in edges
    )


def _sub_metadata(sub: Subsample) -> dict[str, np.ndarray]:
    return {k[len("meta:") :]: v for k, v in sub.rows.items() if k.startswith("meta:")}


def fleet_gap(
    source: Stream,
    target: Stream,
    *,
    subsample: int = 20_000,
    seed: int = 0,
    max_dim: int | None = None,
    permutations: int = 500,
    n_boot: int = 200,
    alpha: float = 0.05,
    bins: int = 20,
) -> FleetGap:
    """Source against target at any N: FD and histograms over every image, the tests on a
    seeded subsample of at most ``subsample`` images per domain (see the module docstring)."""
    a = _domain_pass(source, Subsample.empty(subsample, seed))
    b = _domain_pass(target, Subsample.empty(subsample, seed))
    assert a.moments is not None and b.moments is not None
    assert a.subsample is not None and b.subsample is not None
    edges = _edges({"source": a, "target": b}, bins)
    ha, hb = _histograms(source, edges), _histograms(target, edges)
    xs, ys = a.subsample.rows["embedding"], b.subsample.rows["embedding"]
    latent = latent_gap(
        xs, ys, permutations=permutations, n_boot=n_boot, max_dim=max_dim, alpha=alpha, seed=seed
    )
    drift = metadata_drift(
        _sub_metadata(a.subsample),
        _sub_metadata(b.subsample),
        None,
        alpha,
        source_name="source",
        target_name="target",
        bins=bins,
    )
    histograms = _field_histograms(edges, ha, hb)
    return FleetGap(
        n_source=a.moments.n,
        n_target=b.moments.n,
        frechet=frechet_streamed(a.moments, b.moments, max_dim),
        latent=latent,
        drift=drift,
        histograms=histograms,
        subsample_source=a.subsample.info,
        subsample_target=b.subsample.info,
    )


def fleet_gap_for(config: Config, source: Stream, target: Stream) -> FleetGap:
    """:func:`fleet_gap` with the config's settings (``analysis.subsample``, ``seed``,
    ``max_dim``, ``permutations``, ``bootstrap``, ``alpha``)."""
    a = config.analysis
    return fleet_gap(
        source,
        target,
        subsample=a.subsample,
        seed=config.seed,
        max_dim=a.max_dim,
        permutations=a.permutations,
        n_boot=a.bootstrap,
        alpha=a.alpha,
    )


def fleet_scale(
    streams: Mapping[str, Stream],
    source: str,
    subsample: Mapping[str, SubsampleInfo],
    subsets: Mapping[str, str],
    class_names: tuple[str, ...],
    *,
    max_dim: int | None = None,
    bins: int = 20,
) -> FleetScale:
    """Every domain over every frame, in two passes of its stream (memory: one chunk plus
    d x d moments and fixed-size counts): FD of each target against ``source`` from streamed
    moments, the domains' performance and drops from quality totals (chunks need
    ``quality``), and histograms of the numeric metadata fields on edges shared by all
    domains. ``subsample`` and ``subsets`` are stated as given."""
    passes = {name: _domain_pass(stream) for name, stream in streams.items()}
    edges = _edges(passes, bins)
    hists = {name: _histograms(stream, edges) for name, stream in streams.items()}
    targets = [name for name in streams if name != source]
    src = passes[source]
    assert all(p.moments is not None for p in passes.values())
    frechet: dict[str, FrechetResult] = {
        t: frechet_streamed(src.moments, passes[t].moments, max_dim)  # type: ignore[arg-type]
        for t in targets
    }
    histograms = {t: _field_histograms(edges, hists[source], hists[t]) for t in targets}
    domains = {n: p.totals.stats(subsets[n], class_names) for n, p in passes.items()}
    return FleetScale(
        subsample=dict(subsample),
        domains=domains,
        drop={t: Drop.between(domains[source], domains[t]) for t in targets},
        frechet=frechet,
        histograms=histograms,
    )
