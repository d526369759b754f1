"""Statistics in bounded memory: streamed moments, streamed histograms, a seeded subsample.

At fleet scale (millions of frames, records in cache shards or on many workers) nothing here
holds more than one chunk plus a fixed-size summary:

- :class:`Moments`: count, mean and scatter matrix of d-dimensional rows, updated chunk by
  chunk and merged across shards (Chan, Golub & LeVeque's pairwise update, float64), so
  that the Fréchet distance of :func:`frechet_streamed` (through
  ``frechet.frechet_from_moments``) uses every image; it equals the in-memory
  :func:`~domain_gap.analysis.frechet.frechet_distance` (same rule for a pooled-PCA
  reduction) to float rounding;
- :class:`StreamHistogram`: counts on fixed edges (from a first pass of :class:`Range`),
  mergeable, with the values below, above and NaN counted apart;
- :class:`Subsample`: the ``size`` samples with the smallest seeded hash of their sample id
  (a bottom-k sample), so the choice is the same whatever the chunking, the order or the
  number of shards; C2ST, the clusters, MMD and the metadata drift tests then run on it
  and say so (:class:`~domain_gap.analysis.results.SubsampleInfo`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from domain_gap.analysis.frechet import frechet_from_moments
from domain_gap.analysis.results import DomainStats, FrechetResult, SubsampleInfo
from domain_gap.analysis.stats_utils import fnum

__all__ = [
    "SUBSAMPLE_METHOD",
    "Moments",
    "Range",
    "StreamHistogram",
    "Subsample",
    "Totals",
    "frechet_streamed",
    "hash_keys",
    "stream_moments",
]

SUBSAMPLE_METHOD = "bottom-k of sha256(seed, sample id): uniform, seeded, order-free"


@dataclass(frozen=True)
class Moments:
    """Count, mean and scatter Σ (x - mean)(x - mean)ᵀ of the rows seen so far (float64)."""

    n: int
    mean: np.ndarray
    scatter: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> Moments:
        """The moments of one chunk (n, d)."""
        z = np.asarray(x, dtype=np.float64)
        if z.ndim != 2:
            raise ValueError(f"Moments.of: expected (n, d) rows, got shape {z.shape}")
        mean = z.mean(0) if len(z) else np.zeros(z.shape[1])
        zc = z - mean
        return cls(len(z), mean, zc.T @ zc)

    def merge(self, other: Moments) -> Moments:
        """The moments of both sets of rows (exact pairwise update)."""
        if self.mean.shape != other.mean.shape:
            raise ValueError(f"Moments.merge: dims {self.mean.shape} and {other.mean.shape}")
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        scatter = self.scatter + other.scatter + np.outer(delta, delta) * (self.n * other.n / n)
        return Moments(n, mean, scatter)

    @property
    def cov(self) -> np.ndarray:
        """Sample covariance (ddof 1), as ``np.cov``."""
        return self.scatter / max(self.n - 1, 1)


def stream_moments(chunks: Iterable[np.ndarray]) -> Moments:
    """:class:`Moments` of the rows of every chunk, one chunk in memory at a time."""
    total: Moments | None = None
    for chunk in chunks:
        part = Moments.of(chunk)
        total = part if total is None else total.merge(part)
    if total is None:
        raise ValueError("stream_moments: no chunks")
    return total


def frechet_streamed(a: Moments, b: Moments, max_dim: int | None = None) -> FrechetResult:
    """The Fréchet distance of two streamed samples with the in-memory rule
    (``frechet.frechet_distance``): the standard FD on the full embedding, unless
    ``k = min(d, max_dim, min(n, m) - 1) < d``; then both Gaussians are projected on the top-k
    axes of the pooled covariance (the merged moments): μ → Aᵀ(μ - m), Σ → AᵀΣA."""
    d = a.mean.shape[0]
    k = min(d, max_dim or d, min(a.n, b.n) - 1)
    if k < 1:
        raise ValueError(f"frechet_streamed: need 2+ rows per side, got {a.n} and {b.n}")
    if k == d:
        value = frechet_from_moments(a.mean, a.cov, b.mean, b.cov)
        note = f"the standard FD on the full {d}-dim embedding, from streamed moments"
        return FrechetResult(value, d, d, False, 1.0, note)
    pooled = a.merge(b)
    w, v = np.linalg.eigh(pooled.cov)
    order = np.argsort(w)[::-1][:k]
    axes = v[:, order]
    total = float(np.clip(w, 0, None).sum())
    kept = float(np.clip(w[order], 0, None).sum()) / total if total > 0 else 1.0
    value = frechet_from_moments(
        axes.T @ (a.mean - pooled.mean),
        axes.T @ a.cov @ axes,
        axes.T @ (b.mean - pooled.mean),
        axes.T @ b.cov @ axes,
    )
    note = (
        f"pooled PCA to {k} of {d} dimensions, keeping {kept:.1%} of the pooled variance, from "
        "streamed moments; not the standard FD, compare only with FDs at the same dims"
    )
    return FrechetResult(value, k, d, True, kept, note)


@dataclass(frozen=True)
class Range:
    """Finite minimum and maximum of the values seen so far (the first histogram pass)."""

    lo: float = np.inf
    hi: float = -np.inf

    def update(self, values: np.ndarray) -> Range:
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        if not v.size:
            return self
        return Range(min(self.lo, float(v.min())), max(self.hi, float(v.max())))

    def merge(self, other: Range) -> Range:
        return Range(min(self.lo, other.lo), max(self.hi, other.hi))

    def edges(self, bins: int) -> np.ndarray:
        """``bins`` equal-width bins over the range (one unit wide when it is a point)."""
        if not np.isfinite(self.lo):
            raise ValueError("Range.edges: no finite value seen")
        hi = self.hi if self.hi > self.lo else self.lo + 1.0
        return np.linspace(self.lo, hi, bins + 1)


@dataclass(frozen=True)
class StreamHistogram:
    """Counts on fixed ``edges`` (last bin closed, as ``np.histogram``), mergeable; values
    outside the edges and NaNs are counted apart, never dropped silently."""

    edges: np.ndarray
    counts: np.ndarray
    below: int = 0
    above: int = 0
    nan: int = 0

    @classmethod
    def empty(cls, edges: np.ndarray) -> StreamHistogram:
        return cls(np.asarray(edges, dtype=np.float64), np.zeros(len(edges) - 1, np.int64))

    def update(self, values: np.ndarray) -> StreamHistogram:
        v = np.asarray(values, dtype=np.float64).ravel()
        nan = int(np.isnan(v).sum())
        v = v[~np.isnan(v)]
        counts, _ = np.histogram(v, self.edges)
        below = int((v < self.edges[0]).sum())
        above = int((v > self.edges[-1]).sum())
        return StreamHistogram(
            self.edges, self.counts + counts, self.below + below, self.above + above, self.nan + nan
        )

    def merge(self, other: StreamHistogram) -> StreamHistogram:
        if not np.array_equal(self.edges, other.edges):
            raise ValueError("StreamHistogram.merge: different edges")
        return StreamHistogram(
            self.edges,
            self.counts + other.counts,
            self.below + other.below,
            self.above + other.above,
            self.nan + other.nan,
        )

    @property
    def n(self) -> int:
        return int(self.counts.sum()) + self.below + self.above + self.nan


@dataclass(frozen=True)
class Totals:
    """Running sums of the per-image quality of one domain (loss, mIoU, pixel accuracy over
    the finite values, as the in-memory means; confusion matrices of the labelled images)."""

    n: int = 0
    n_labelled: int = 0
    loss: tuple[float, int] = (0.0, 0)
    miou: tuple[float, int] = (0.0, 0)
    pixel_acc: tuple[float, int] = (0.0, 0)
    confusion: np.ndarray | None = None

    def update(
        self,
        loss: np.ndarray,
        miou: np.ndarray,
        pixel_acc: np.ndarray,
        confusion: np.ndarray,
        labelled: np.ndarray,
    ) -> Totals:
        """Add one chunk's rows (row-aligned arrays; ``confusion`` is (n, C, C))."""
        lab = np.asarray(labelled, dtype=bool)
        cm = np.asarray(confusion, dtype=np.int64)[lab].sum(0)
        return Totals(
            self.n + len(lab),
            self.n_labelled + int(lab.sum()),
            _add(self.loss, loss),
            _add(self.miou, miou),
            _add(self.pixel_acc, pixel_acc),
            cm if self.confusion is None else self.confusion + cm,
        )

    def stats(self, subset: str, class_names: tuple[str, ...]) -> DomainStats:
        """The domain's :class:`DomainStats` over every image seen (no median: not streamed)."""
        from domain_gap.metrics import dataset_iou

        if self.n_labelled and self.confusion is not None:
            iou, miou = dataset_iou(self.confusion)
        else:
            iou, miou = np.full(len(class_names), np.nan), None
        return DomainStats(
            n=self.n,
            n_labelled=self.n_labelled,
            subset=subset,
            loss_mean=_mean(self.loss),
            loss_median=None,
            miou_dataset=miou,
            miou_mean=_mean(self.miou),
            pixel_acc_mean=_mean(self.pixel_acc),
            class_iou_dataset={c: fnum(v) for c, v in zip(class_names, iou, strict=True)},
        )


def _add(acc: tuple[float, int], values: np.ndarray) -> tuple[float, int]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return acc[0] + float(v.sum()), acc[1] + int(v.size)


def _mean(acc: tuple[float, int]) -> float | None:
    return acc[0] / acc[1] if acc[1] else None


def hash_keys(sample_ids: Iterable[str], seed: int) -> np.ndarray:
    """A uniform 64-bit key per sample id, fixed by ``seed`` (sha256 of seed and id)."""
    prefix = f"{seed}\0".encode()
    return np.array(
        [
            int.from_bytes(hashlib.sha256(prefix + s.encode()).digest()[:8], "little")
            for s in sample_ids
        ],
        dtype=np.uint64,
    )


@dataclass(frozen=True)
class Subsample:
    """The ``size`` rows with the smallest :func:`hash_keys` of all rows seen (bottom-k):
    at most ``size`` rows of each column in memory, and the same rows whatever the order."""

    size: int
    seed: int
    n_seen: int
    keys: np.ndarray
    rows: Mapping[str, np.ndarray]

    @classmethod
    def empty(cls, size: int, seed: int) -> Subsample:
        if size < 1:
            raise ValueError(f"Subsample: size must be >= 1, got {size}")
        return cls(size, seed, 0, np.zeros(0, np.uint64), {})

    def update(self, sample_ids: np.ndarray, rows: Mapping[str, np.ndarray]) -> Subsample:
        """Add a chunk: its ids and row-aligned columns (the same names every chunk)."""
        keys = hash_keys([str(s) for s in sample_ids], self.seed)
        cols = {"sample_id": np.asarray(sample_ids, dtype=str), **rows}
        return self._keep(len(keys), keys, cols)

    def merge(self, other: Subsample) -> Subsample:
        """The bottom-k of both (two shards' subsamples)."""
        if (other.size, other.seed) != (self.size, self.seed):
            raise ValueError("Subsample.merge: different size or seed")
        return self._keep(other.n_seen, other.keys, dict(other.rows))

    def _keep(self, n_new: int, keys: np.ndarray, cols: Mapping[str, np.ndarray]) -> Subsample:
        if self.rows:
            keys = np.concatenate([self.keys, keys])
            cols = {k: np.concatenate([self.rows[k], v]) for k, v in cols.items()}
        order = np.argsort(keys, kind="stable")[: self.size]
        return Subsample(
            self.size,
            self.seed,
            self.n_seen + n_new,
            keys[order],
            {k: v[order] for k, v in cols.items()},
        )

    @property
    def info(self) -> SubsampleInfo:
        """What the statistics that use these rows state."""
        return SubsampleInfo(
            n_total=self.n_seen,
            n_used=len(self.keys),
            seed=self.seed,
            method=SUBSAMPLE_METHOD,
        )
