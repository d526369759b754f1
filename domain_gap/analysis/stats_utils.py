"""Small shared helpers for the statistics modules: input checks, finite floats, BH, bootstrap.

Everything here is pure numpy/scipy. The statistics modules return the typed results of
:mod:`domain_gap.analysis.results` (``None`` for "not computable").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

import numpy as np

SMALL_STATS_ROWS = 5000
"""Up to this many images per analysis, :func:`stats_threads` runs the statistics on one BLAS
thread."""


def stats_threads(n_rows: int) -> AbstractContextManager[object]:
    """One BLAS thread for the statistics of up to :data:`SMALL_STATS_ROWS` images.

    Their dense algebra is small (covariances of d ≤ 256, logistic fits on a few hundred rows),
    and OpenBLAS's thread hand-off then costs more than the work: on 2 cores an ``eigh`` of a
    128 x 128 covariance took 27 ms on two threads and 1.3 ms on one, and the warm demo rerun
    went from 51 s to 19 s. Larger analyses keep every thread for their big products.
    """
    if n_rows > SMALL_STATS_ROWS:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def as_matrix(a: object, name: str, *, min_rows: int = 2) -> np.ndarray:
    """Return ``a`` as a finite float64 (n, d) array or raise ``ValueError`` naming ``name``."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (samples, features), got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name}: expected at least {min_rows} samples, got {arr.shape[0]}")
    if arr.shape[1] < 1:
        raise ValueError(f"{name}: expected at least one feature column, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise ValueError(f"{name}: expected finite values, found {bad} NaN/inf entries")
    return arr


def check_same_dim(x: np.ndarray, y: np.ndarray, names: tuple[str, str] = ("x", "y")) -> None:
    """Raise when two sample matrices do not share their feature dimension."""
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{names[0]} has {x.shape[1]} features but {names[1]} has {y.shape[1]}; "
            "both domains must be embedded in the same space"
        )


def fnum(v: object) -> float | None:
    """A JSON-safe float: ``None`` for NaN/inf/None, a Python float otherwise."""
    if v is None:
        return None
    f = float(v)  # type: ignore[arg-type]
    return f if math.isfinite(f) else None


def bh_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Benjamini-Hochberg adjusted p-values (step-up, monotone, capped at 1).

    ``None`` entries (tests that could not be run) are kept as ``None`` and do not count in
    the family size.
    """
    idx = [i for i, p in enumerate(p_values) if p is not None]
    out: list[float | None] = [None] * len(p_values)
    if not idx:
        return out
    p = np.array([float(p_values[i]) for i in idx])  # type: ignore[arg-type]
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    adjusted = np.minimum(adjusted, 1.0)
    for rank, j in enumerate(order):
        out[idx[j]] = float(adjusted[rank])
    return out


def percentile_interval(values: np.ndarray, alpha: float) -> list[float | None]:
    """Percentile interval ``[alpha/2, 1 - alpha/2]`` of the finite entries, or ``[None, None]``."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return [None, None]
    lo, hi = np.quantile(v, [alpha / 2, 1 - alpha / 2])
    return [float(lo), float(hi)]


def bootstrap_ci(
    stat: Callable[[np.ndarray, np.ndarray], float],
    x: np.ndarray,
    y: np.ndarray,
    n_boot: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    *,
    method: str = "percentile",
) -> list[float | None]:
    """Bootstrap interval of ``stat(x, y)``, resampling each domain with replacement.

    Replicate ``b`` uses ``rng.integers(0, n, n)`` then ``rng.integers(0, m, m)`` from
    ``np.random.default_rng(seed)``. Replicates where ``stat`` is not finite are dropped.
    ``method="percentile"``: quantiles of the replicates. ``method="basic"``: the pivotal
    interval ``[2θ - q_hi, 2θ - q_lo]`` (θ = ``stat(x, y)``), which corrects a bias that the
    replicates share with the estimate; use it for biased plug-in statistics such as the
    Fréchet distance, whose percentile interval can miss the estimate itself.

    Caveat: resampling with replacement duplicates rows. Plug-in statistics (means, FD) are
    fine with that; kernel U-statistics (MMD², KID) are not, because a duplicated row pairs with
    its own copy (k = 1) and biases the replicate upwards. ``mmd.mmd_test`` and
    ``kid.kid`` therefore bootstrap with copies of the same row excluded, not through here.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot: expected >= 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: expected in (0, 1), got {alpha}")
    if method not in ("percentile", "basic"):
        raise ValueError(f"method: expected 'percentile' or 'basic', got {method!r}")
    values = bootstrap_values(stat, x, y, n_boot, seed)
    if method == "percentile":
        return percentile_interval(values, alpha)
    return basic_interval(float(stat(x, y)), values, alpha)


def bootstrap_values(
    stat: Callable[[np.ndarray, np.ndarray], float],
    x: np.ndarray,
    y: np.ndarray,
    n_boot: int = 200,
    seed: int = 0,
) -> np.ndarray:
    """The ``n_boot`` replicates behind :func:`bootstrap_ci` (NaN where ``stat`` is not finite)."""
    n, m = len(x), len(y)
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    for b in range(n_boot):
        ix = rng.integers(0, n, n)
        iy = rng.integers(0, m, m)
        v = stat(x[ix], y[iy])
        values[b] = np.nan if v is None else float(v)
    return values


def basic_interval(theta: float, values: np.ndarray, alpha: float) -> list[float | None]:
    """Basic (pivotal) bootstrap interval ``[2θ - q_hi, 2θ - q_lo]`` of the estimate ``theta``."""
    lo, hi = percentile_interval(values, alpha)
    if lo is None or hi is None:
        return [None, None]
    return [2 * theta - hi, 2 * theta - lo]
