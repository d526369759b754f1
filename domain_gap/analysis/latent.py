"""Latent-space domain-gap statistics: FD, MMD (permutation test), KID, C2ST, BBSD, bootstrap.

Inputs are per-image embeddings, ``x`` for the source domain (n, d) and ``y`` for the target
domain (m, d). Every public function is pure, deterministic given ``seed`` and returns plain
JSON-serialisable values (``None`` where a number is not computable, with the reason in a
``note`` field).

Kernel statistics (MMD², KID) run through one streaming engine, :func:`kernel_forms`: it
walks the upper triangle of the pooled (N = n + m) kernel matrix in square blocks and, for
each block, accumulates the quadratic forms ``wᵀ K₀ w`` of many weight vectors at once as a
matrix product (K₀ is K with its diagonal set to 0). One pass therefore evaluates the observed
statistic, all permutation statistics and all bootstrap replicates:

* time O(N² · (d + k)) for k weight vectors (k = 1 + B permutations + 3 per bootstrap
  replicate), half of it saved by symmetry;
* memory O(N·d + N·k_chunk + b²): the block edge b and the columns per pass k_chunk are
  chosen so that the working set stays within ``memory_budget_mb`` (default 256 MiB; more
  passes over the kernel when many columns do not fit at once, and never below the O(N·d)
  floor of holding the data). The N x N matrix is never held.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats
from scipy.spatial.distance import pdist
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from domain_gap.analysis.stats_utils import (
    as_matrix,
    basic_interval,
    bootstrap_ci,
    bootstrap_values,
    check_same_dim,
    percentile_interval,
)

__all__ = [
    "Kernel",
    "bbsd",
    "bootstrap_ci",
    "c2st",
    "delong_auc",
    "frechet_distance",
    "frechet_with_ci",
    "kernel_forms",
    "kid",
    "latent_gap",
    "median_bandwidth",
    "mmd2_unbiased",
    "mmd_test",
    "standardize_pooled",
]

Dtype = Literal["float64", "float32"]


# --------------------------------------------------------------------------- Fréchet distance


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _fd_value(x: np.ndarray, y: np.ndarray) -> float:
    """‖μx - μy‖² + Tr Σx + Tr Σy - 2 Tr (Σx^½ Σy Σx^½)^½, always real and ≥ 0.

    The eigen route on symmetric matrices replaces ``sqrtm(Σx Σy)``, whose product is not
    symmetric and yields complex noise when the covariances are near singular.
    """
    mu = x.mean(0) - y.mean(0)
    cx = np.atleast_2d(np.cov(x, rowvar=False))
    cy = np.atleast_2d(np.cov(y, rowvar=False))
    sx = _sqrt_psd(cx)
    inner = sx @ cy @ sx
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_sqrt = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    value = float(mu @ mu) + float(np.trace(cx)) + float(np.trace(cy)) - 2.0 * tr_sqrt
    return max(value, 0.0)


def _pca_project(x: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Project both samples on the top-k principal axes of the pooled data.

    Returns the projections and the share of pooled variance they keep. Exact eigen
    decomposition of the pooled d x d covariance: deterministic, O(N d² + d³).
    """
    z = np.vstack([x, y])
    mean = z.mean(0)
    zc = z - mean
    cov = zc.T @ zc / max(len(z) - 1, 1)
    w, v = np.linalg.eigh(cov)
    order = np.argsort(w)[::-1][:k]
    axes = v[:, order]
    total = float(np.clip(w, 0, None).sum())
    kept = float(np.clip(w[order], 0, None).sum()) / total if total > 0 else 1.0
    return (x - mean) @ axes, (y - mean) @ axes, kept


def _fd_prepare(
    x: np.ndarray, y: np.ndarray, max_dim: int
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    n, m, d = len(x), len(y), x.shape[1]
    k = min(max_dim, min(n, m) - 1, d)
    meta: dict[str, Any] = {"dims": int(k), "original_dim": int(d), "reduced": k < d}
    if k < d:
        xp, yp, kept = _pca_project(x, y, k)
        why = []
        if d > max_dim:
            why.append(f"d = {d} > max_dim = {max_dim}")
        if min(n, m) - 1 < min(d, max_dim):
            why.append(f"fewer samples than dimensions (min(n, m) = {min(n, m)})")
        meta["explained_variance"] = kept
        meta["note"] = (
            f"computed in {k} pooled-PCA dimensions ({'; '.join(why)}), keeping "
            f"{kept:.1%} of the pooled variance; compare only with FDs at the same dims"
        )
        return xp, yp, meta
    meta["explained_variance"] = 1.0
    meta["note"] = f"computed in the full {d} dimensions"
    return x, y, meta


def frechet_distance(
    x: np.ndarray, y: np.ndarray, max_dim: int = 64, seed: int = 0
) -> dict[str, Any]:
    """Fréchet distance between Gaussian fits of two samples (FID-style), safe when N < d.

    When ``d > max_dim`` or ``min(n, m) - 1 < d``, both samples are first projected on the
    top ``k = min(max_dim, min(n, m) - 1, d)`` principal axes of the pooled data, so that both
    covariances can be full rank; the result says so (``reduced``, ``dims``, ``note``).
    ``seed`` is accepted for a uniform signature; the exact PCA used here is deterministic.

    Returns ``{"value", "dims", "original_dim", "reduced", "explained_variance", "note"}``.
    """
    del seed
    xs = as_matrix(x, "x (source embeddings)")
    ys = as_matrix(y, "y (target embeddings)")
    check_same_dim(xs, ys)
    if max_dim < 1:
        raise ValueError(f"max_dim: expected >= 1, got {max_dim}")
    xp, yp, meta = _fd_prepare(xs, ys, max_dim)
    return {"value": _fd_value(xp, yp), **meta}


def frechet_with_ci(
    x: np.ndarray,
    y: np.ndarray,
    *,
    max_dim: int = 64,
    n_boot: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """:func:`frechet_distance` plus a bootstrap interval and a bias-corrected value.

    The plug-in FD is biased upwards by roughly O(k²/N) in k dimensions (large when N is a few
    hundred), and each bootstrap replicate roughly doubles that bias, so a percentile interval
    can miss the estimate altogether. ``ci`` is therefore the basic (pivotal) interval
    ``[2·FD - q_hi, 2·FD - q_lo]`` clipped at 0, and ``bias_corrected`` is
    ``max(0, 2·FD - mean(replicates))``. The PCA projection is fitted once and kept fixed.
    """
    xs = as_matrix(x, "x (source embeddings)")
    ys = as_matrix(y, "y (target embeddings)")
    check_same_dim(xs, ys)
    xp, yp, meta = _fd_prepare(xs, ys, max_dim)
    value = _fd_value(xp, yp)
    reps = bootstrap_values(_fd_value, xp, yp, n_boot=n_boot, seed=seed)
    lo, hi = basic_interval(value, reps, alpha)
    finite = reps[np.isfinite(reps)]
    return {
        "value": value,
        "ci": [None if lo is None else max(0.0, lo), None if hi is None else max(0.0, hi)],
        "ci_method": "basic bootstrap (pivotal), clipped at 0",
        "bias_corrected": max(0.0, 2 * value - float(finite.mean())) if finite.size else None,
        "n_boot": int(n_boot),
        **meta,
    }


# --------------------------------------------------------------------------- kernels / engine


@dataclass(frozen=True)
class Kernel:
    """``gaussian``: exp(-‖a-b‖²/(2sigma²)); ``cubic``: (aᵀb/d + 1)³ (the KID kernel)."""

    kind: Literal["gaussian", "cubic"]
    bandwidth: float = 1.0
    dim: int = 1


def _kernel_block(
    a: np.ndarray, b: np.ndarray, a_sq: np.ndarray, b_sq: np.ndarray, kernel: Kernel
) -> np.ndarray:
    """Kernel values between row blocks ``a`` and ``b`` (in their dtype)."""
    g = a @ b.T
    if kernel.kind == "cubic":
        g /= kernel.dim
        g += 1.0
        return g * g * g
    g *= -2.0
    g += a_sq[:, None]
    g += b_sq[None, :]
    np.maximum(g, 0.0, out=g)
    g *= -1.0 / (2.0 * kernel.bandwidth**2)
    np.exp(g, out=g)
    return g


MIN_BLOCK = 64
"""Smallest block edge; below it the Python loop overhead dominates."""


def _block_size(n_total: int, k: int, itemsize: int, budget_bytes: float) -> int:
    """Largest block edge b whose working set fits ``budget_bytes``.

    Per block: the kernel block (b² items), its product with the weights (b·k items) and the
    float64 operands of the accumulation (2·b·k float64).
    """
    lin = k * (itemsize + 16) / itemsize
    per = max(budget_bytes, 0.0) / itemsize
    b = int((-lin + math.sqrt(lin * lin + 4 * per)) / 2)
    return max(MIN_BLOCK, min(n_total, b))


def kernel_forms(
    z: np.ndarray,
    kernel: Kernel,
    weights: np.ndarray,
    *,
    dtype: Dtype = "float64",
    memory_budget_mb: float = 256.0,
    reserved_bytes: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Quadratic forms ``q_j = w_jᵀ K₀ w_j`` and row sums ``r = K₀ 1`` of the pooled kernel.

    ``K₀`` is the kernel matrix of the rows of ``z`` with a zero diagonal (so forms exclude
    self-pairs). ``weights`` is (N, k). Blocks of the upper triangle are computed once each;
    results are accumulated in float64 whatever ``dtype`` the blocks use. The block edge is
    the largest whose working set fits ``memory_budget_mb`` minus what ``z``, ``weights``,
    their working-dtype copies and the caller's ``reserved_bytes`` already take (at least
    ``MIN_BLOCK``).
    """
    dt = np.dtype(dtype)
    n_total = len(z)
    k = weights.shape[1]
    zz = np.ascontiguousarray(z, dtype=dt)
    w = np.ascontiguousarray(weights, dtype=dt)
    sq = np.einsum("ij,ij->i", zz, zz)
    held = reserved_bytes + z.nbytes + w.nbytes + (zz.nbytes if zz is not z else 0)
    held += weights.nbytes if w is not weights else 0
    b = _block_size(n_total, k, dt.itemsize, memory_budget_mb * 2**20 - held)
    q = np.zeros(k, dtype=np.float64)
    r = np.zeros(n_total, dtype=np.float64)
    starts = list(range(0, n_total, b))
    for bi, i0 in enumerate(starts):
        i1 = min(i0 + b, n_total)
        for j0 in starts[bi:]:
            j1 = min(j0 + b, n_total)
            kb = _kernel_block(zz[i0:i1], zz[j0:j1], sq[i0:i1], sq[j0:j1], kernel)
            if i0 == j0:
                np.fill_diagonal(kb, 0.0)
            contrib = np.einsum("ij,ij->j", w[i0:i1], kb @ w[j0:j1], dtype=np.float64)
            r[i0:i1] += kb.sum(1, dtype=np.float64)
            if i0 == j0:
                q += contrib
            else:
                q += 2.0 * contrib
                r[j0:j1] += kb.sum(0, dtype=np.float64)
            del kb
    return q, r


def _pooled(x: np.ndarray, y: np.ndarray, kernel: Kernel) -> np.ndarray:
    """Stack the samples; centre them for the translation-invariant Gaussian kernel.

    Centring leaves every Gaussian kernel value unchanged and keeps ‖a‖² + ‖b‖² - 2aᵀb
    accurate in floating point.
    """
    z = np.vstack([x, y])
    if kernel.kind == "gaussian":
        z -= z.mean(0)
    return z


def _mmd2_from_forms(sxx: np.ndarray, s_r: np.ndarray, total: float, n: int, m: int) -> np.ndarray:
    """Unbiased MMD² from ``sxx = sᵀK₀s``, ``s_r = sᵀ(K₀1)`` and ``total = 1ᵀK₀1``.

    With s the indicator of the rows labelled "source": Σ_xy = s_r - sxx and
    Σ_yy = total - 2·s_r + sxx (off-diagonal sums).
    """
    sxy = s_r - sxx
    syy = total - 2.0 * s_r + sxx
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)


class _BootstrapColumns:
    """Weight columns of tie-excluded bootstrap replicates, generated lazily in order.

    Replicate b draws ``rng.integers(0, n, n)`` then ``rng.integers(0, m, m)`` and gives three
    columns on the pooled rows: the source counts c_x, the target counts c_y, and c_x + c_y.
    The sums of squared counts are kept for :meth:`replicates`.
    """

    def __init__(self, rng: np.random.Generator, n: int, m: int, n_boot: int) -> None:
        self.rng, self.n, self.m, self.n_boot = rng, n, m, n_boot
        self.sq_x: list[float] = []
        self.sq_y: list[float] = []
        self._pending: list[np.ndarray] = []

    def __len__(self) -> int:
        return 3 * self.n_boot

    def next_column(self) -> np.ndarray:
        if not self._pending:
            n, m = self.n, self.m
            cx = np.bincount(self.rng.integers(0, n, n), minlength=n).astype(np.float64)
            cy = np.bincount(self.rng.integers(0, m, m), minlength=m).astype(np.float64)
            self.sq_x.append(float(cx @ cx))
            self.sq_y.append(float(cy @ cy))
            zx, zy = np.zeros(m), np.zeros(n)
            self._pending = [np.r_[cx, zx], np.r_[zy, cy], np.r_[cx, cy]]
        return self._pending.pop(0)

    def replicates(self, q: np.ndarray) -> np.ndarray:
        """MMD² per replicate from the forms of its three columns.

        A row drawn c times makes c(c-1) ordered pairs with its own copies; those are left out
        (K₀ has a zero diagonal) and so are they from the pair counts (n² - Σc²), so each
        replicate is an unbiased U-statistic over distinct original samples.
        """
        n, m = self.n, self.m
        qx, qy, qs = q[0::3], q[1::3], q[2::3]
        cross = (qs - qx - qy) / 2.0
        return (
            qx / (n * n - np.array(self.sq_x))
            + qy / (m * m - np.array(self.sq_y))
            - 2.0 * cross / (n * m)
        )


def _check_bandwidth(bandwidth: float) -> float:
    bw = float(bandwidth)
    if not math.isfinite(bw) or bw <= 0:
        raise ValueError(f"bandwidth: expected a finite value > 0, got {bandwidth!r}")
    return bw


def median_bandwidth(
    x: np.ndarray, max_points: int = 2000, seed: int = 0, *, standardize: bool = True
) -> float:
    """Median pairwise Euclidean distance of the source sample (Gaussian-kernel sigma).

    ``standardize`` (default, matching :func:`mmd_test`) first z-scores each feature with the
    sample's own mean and SD, so the value is in the units the standardised test works in;
    ``standardize=False`` measures raw distances (for ``mmd_test(..., standardize=False)``).
    At most ``max_points`` rows are used (a seeded subsample without replacement). Freeze the
    value once per analysis and pass it to :func:`mmd_test` for every mitigation so that MMD²
    stays comparable. Memory O(max_points²) (16 MB at the default), outside the
    ``memory_budget_mb`` of the tests. If all sampled rows coincide, the mean of the nonzero
    distances of the full sample is used, and 1.0 if there are none.
    """
    xs = as_matrix(x, "x (source embeddings)")
    if standardize:
        sd = xs.std(0)
        sd[sd == 0] = 1.0
        xs = (xs - xs.mean(0)) / sd
    if max_points < 2:
        raise ValueError(f"max_points: expected >= 2, got {max_points}")
    if len(xs) > max_points:
        rng = np.random.default_rng(seed)
        xs_sub = xs[np.sort(rng.choice(len(xs), max_points, replace=False))]
    else:
        xs_sub = xs
    dist = pdist(xs_sub)  # max_points²/2 float64: 16 MB at the default
    med = float(np.median(dist, overwrite_input=True))  # reorders dist; its values stay
    if med > 0:
        return med
    nonzero = dist[dist > 0]
    if nonzero.size == 0 and len(xs_sub) < len(xs):
        nonzero = pdist(xs[: min(len(xs), 4 * max_points)])
        nonzero = nonzero[nonzero > 0]
    return float(nonzero.mean()) if nonzero.size else 1.0


def standardize_pooled(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Z-score every feature with the mean and SD of the pooled samples (constant → 0).

    The transform is a symmetric function of the pooled rows, so permutation tests run on
    its output remain exact.
    """
    z = np.vstack([x, y])
    mean = z.mean(0)
    sd = z.std(0)
    sd[sd == 0] = 1.0
    return (x - mean) / sd, (y - mean) / sd


def mmd2_unbiased(
    x: np.ndarray,
    y: np.ndarray,
    bandwidth: float,
    *,
    dtype: Dtype = "float64",
    memory_budget_mb: float = 256.0,
) -> float:
    """Unbiased MMD² with the Gaussian kernel k(a, b) = exp(-‖a - b‖² / (2 s²)), s = bandwidth.

    Memory-bounded (blockwise, no N x N matrix); O(N² d) time.
    """
    xs = as_matrix(x, "x (source embeddings)")
    ys = as_matrix(y, "y (target embeddings)")
    check_same_dim(xs, ys)
    kernel = Kernel("gaussian", _check_bandwidth(bandwidth))
    n, m = len(xs), len(ys)
    s = np.zeros((n + m, 1))
    s[:n] = 1.0
    q, r = kernel_forms(
        _pooled(xs, ys, kernel), kernel, s, dtype=dtype, memory_budget_mb=memory_budget_mb
    )
    return float(_mmd2_from_forms(q, s[:, 0] @ r, float(r.sum()), n, m)[0])


def _chunk_columns(n_total: int, d: int, n_cols: int, itemsize: int, budget_bytes: float) -> int:
    """Weight columns per pass: the (N, chunk) weights and the permutations' row indices take
    at most a third of what the budget leaves after the pooled data (float64 plus a
    working-dtype copy)."""
    left = budget_bytes - n_total * d * (8 + itemsize)
    per_col = n_total * (itemsize + 8)
    return max(1, min(n_cols, int(left / 3 / per_col)))


def _permutation_forms(
    z: np.ndarray,
    kernel: Kernel,
    n: int,
    permutations: int,
    seed: int,
    *,
    dtype: Dtype,
    memory_budget_mb: float,
    extra: _BootstrapColumns | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forms for [identity, B permutations, extra columns] in as few passes as the budget allows.

    Permutation b (0-based) labels ``rng.permutation(N)[:n]`` as source, with
    ``rng = np.random.default_rng(seed)`` drawn in order. Returns the forms of all columns,
    ``s_r = sᵀ(K₀1)`` for the identity and permutation columns, and the row sums ``K₀1``.
    Weight columns are generated per pass, so at most one pass's columns are held.
    """
    n_total, d = z.shape
    dt = np.dtype(dtype)
    n_cols = 1 + permutations + (0 if extra is None else len(extra))
    chunk = _chunk_columns(n_total, d, n_cols, dt.itemsize, memory_budget_mb * 2**20)
    rng = np.random.default_rng(seed)
    q_all = np.empty(n_cols)
    s_r = np.empty(1 + permutations)
    row_sums = np.zeros(n_total)
    for c0 in range(0, n_cols, chunk):
        c1 = min(c0 + chunk, n_cols)
        w = np.zeros((n_total, c1 - c0), dtype=dt)
        members: list[tuple[int, np.ndarray]] = []  # (column, source rows) of this pass
        for j, col in enumerate(range(c0, c1)):
            if col <= permutations:
                rows = np.arange(n) if col == 0 else rng.permutation(n_total)[:n]
                rows = rows.astype(np.int32 if n_total < 2**31 else np.int64)
                members.append((col, rows))
                w[rows, j] = 1.0
            else:
                w[:, j] = extra.next_column()  # type: ignore[union-attr]
        q_all[c0:c1], row_sums = kernel_forms(
            z,
            kernel,
            w,
            dtype=dtype,
            memory_budget_mb=memory_budget_mb,
            reserved_bytes=sum(rows.nbytes for _, rows in members),
        )
        del w
        for col, rows in members:
            s_r[col] = row_sums[rows].sum()
    return q_all, s_r, row_sums


def mmd_test(
    x: np.ndarray,
    y: np.ndarray,
    bandwidth: float | None = None,
    permutations: int = 500,
    seed: int = 0,
    *,
    n_boot: int = 0,
    alpha: float = 0.05,
    dtype: Dtype = "float64",
    memory_budget_mb: float = 256.0,
    standardize: bool = True,
) -> dict[str, Any]:
    """Permutation two-sample test on the unbiased Gaussian-kernel MMD².

    ``standardize`` (default) first z-scores every feature with the pooled mean and SD
    (:func:`standardize_pooled`). Raw embeddings are usually dominated by one or two
    high-variance directions (image brightness, texture), so the median-bandwidth kernel sees
    little else: in ``benchmarks/validity.py`` a 5 % colour cast is found with power 0.3 on
    raw features and 1.0 standardised, at the same type-I error. Pooled statistics are
    symmetric in the samples, so the permutation test stays exact. ``bandwidth`` is then in
    standardised units: to keep numbers comparable across mitigations, freeze the
    ``bandwidth`` returned by the baseline run and pass it again.

    ``bandwidth=None`` uses the median pairwise distance of the (standardised) source
    sample, seeded. A frozen bandwidth from ``median_bandwidth(source)`` (source z-scored by
    its own statistics) is on the same scale up to the small pooled-vs-source SD difference.
    The p-value is
    ``(1 + #{b : MMD²_b ≥ MMD²_obs}) / (B + 1)``, never 0. The observed and all B permuted
    statistics come from the same streaming pass (see the module docstring: O(N²(d + B)) time,
    memory bounded by ``memory_budget_mb``); with ``n_boot > 0`` the same pass also gives a
    percentile bootstrap interval (``ci``) from replicates that exclude copies of the same row.

    Returns ``{"mmd2", "p_value", "bandwidth", "bandwidth_rule", "standardized",
    "permutations", "n_source", "n_target", "null_mean", "null_q95", "ci", "n_boot",
    "alpha"}``.
    """
    xs = as_matrix(x, "x (source embeddings)")
    ys = as_matrix(y, "y (target embeddings)")
    check_same_dim(xs, ys)
    if permutations < 1:
        raise ValueError(f"permutations: expected >= 1, got {permutations}")
    if standardize:
        xs, ys = standardize_pooled(xs, ys)
    rule = "given"
    if bandwidth is None:
        bandwidth = median_bandwidth(xs, seed=seed, standardize=False)  # xs is already scaled
        rule = "median pairwise distance of the " + (
            "standardised source sample" if standardize else "source sample"
        )
    kernel = Kernel("gaussian", _check_bandwidth(bandwidth))
    n, m = len(xs), len(ys)
    z = _pooled(xs, ys, kernel)
    boot_cols = None
    if n_boot > 0:
        boot_cols = _BootstrapColumns(np.random.default_rng([seed, 1]), n, m, n_boot)
    q, s_r, r = _permutation_forms(
        z,
        kernel,
        n,
        permutations,
        seed,
        dtype=dtype,
        memory_budget_mb=memory_budget_mb,
        extra=boot_cols,
    )
    stats_all = _mmd2_from_forms(q[: 1 + permutations], s_r, float(r.sum()), n, m)
    observed, null = float(stats_all[0]), stats_all[1:]
    # Ties (equal up to rounding) count as exceedances: the conservative side. The rounding
    # band scales like eps * mean kernel / n (float32 vs float64 differences measured at
    # ~300 eps k/n for n = 200..5000, about 1e-3 of the null spread).
    kbar = float(r.sum()) / (n + m) ** 2
    tol = 1000.0 * float(np.finfo(np.dtype(dtype)).eps) * max(kbar, 1e-300) / min(n, m)
    exceed = int(np.sum(null >= observed - tol))
    ci: list[float | None] = [None, None]
    if boot_cols is not None:
        ci = percentile_interval(boot_cols.replicates(q[1 + permutations :]), alpha)
    return {
        "mmd2": observed,
        "p_value": (1 + exceed) / (permutations + 1),
        "bandwidth": float(bandwidth),
        "bandwidth_rule": rule,
        "standardized": bool(standardize),
        "permutations": int(permutations),
        "n_source": n,
        "n_target": m,
        "null_mean": float(null.mean()),
        "null_q95": float(np.quantile(null, 0.95)),
        "ci": ci,
        "n_boot": int(n_boot),
        "alpha": float(alpha),
    }


# --------------------------------------------------------------------------- KID


def _cubic_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with the cubic polynomial kernel, dense (used on KID subsets)."""
    d = x.shape[1]
    n, m = len(x), len(y)
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    sxx = kxx.sum() - np.trace(kxx)
    syy = kyy.sum() - np.trace(kyy)
    return float(sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * kxy.mean())


def kid(
    x: np.ndarray,
    y: np.ndarray,
    subsets: int = 50,
    subset_size: int | None = None,
    seed: int = 0,
    *,
    n_boot: int = 0,
    alpha: float = 0.05,
    memory_budget_mb: float = 256.0,
) -> dict[str, Any]:
    """Kernel Inception Distance: unbiased MMD² with k(a, b) = (aᵀb / d + 1)³.

    ``mean``/``std`` are over ``subsets`` random subsets of ``subset_size`` rows per domain
    (default ``min(1000, n, m)``, drawn without replacement); ``std`` is the spread across
    subsets, not an interval. With ``n_boot > 0``, ``ci`` is a percentile bootstrap interval
    of the full-sample estimate ``full_sample`` (same estimand, tie-excluded replicates,
    one streaming pass).
    """
    xs = as_matrix(x, "x (source embeddings)")
    ys = as_matrix(y, "y (target embeddings)")
    check_same_dim(xs, ys)
    n, m = len(xs), len(ys)
    size = min(1000, n, m) if subset_size is None else int(subset_size)
    if not 2 <= size <= min(n, m):
        raise ValueError(f"subset_size: expected 2..{min(n, m)} (min(n, m)), got {subset_size}")
    if subsets < 1:
        raise ValueError(f"subsets: expected >= 1, got {subsets}")
    rng = np.random.default_rng(seed)
    vals = np.array(
        [
            _cubic_mmd2(
                xs[rng.choice(n, size, replace=False)], ys[rng.choice(m, size, replace=False)]
            )
            for _ in range(subsets)
        ]
    )
    kernel = Kernel("cubic", dim=xs.shape[1])
    boot = _BootstrapColumns(np.random.default_rng([seed, 2]), n, m, n_boot) if n_boot else None
    q, s_r, r = _permutation_forms(
        _pooled(xs, ys, kernel),
        kernel,
        n,
        0,
        seed,
        dtype="float64",
        memory_budget_mb=memory_budget_mb,
        extra=boot,
    )
    full = float(_mmd2_from_forms(q[:1], s_r, float(r.sum()), n, m)[0])
    ci: list[float | None] = [None, None]
    if boot is not None:
        ci = percentile_interval(boot.replicates(q[1:]), alpha)
    return {
        "mean": float(vals.mean()),
        "std": float(vals.std(ddof=1)) if subsets > 1 else 0.0,
        "subsets": int(subsets),
        "subset_size": int(size),
        "full_sample": full,
        "ci": ci,
        "n_boot": int(n_boot),
    }


# --------------------------------------------------------------------------- C2ST


def delong_auc(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """AUC of scores ``pos`` (positives) against ``neg`` and its DeLong standard error.

    Uses midranks (ties count one half), O(N log N).
    """
    pos = np.asarray(pos, dtype=np.float64)
    neg = np.asarray(neg, dtype=np.float64)
    npos, nneg = len(pos), len(neg)
    ranks = stats.rankdata(np.concatenate([pos, neg]))
    v10 = (ranks[:npos] - stats.rankdata(pos)) / nneg  # per positive: share of negatives below
    v01 = 1.0 - (ranks[npos:] - stats.rankdata(neg)) / npos  # per negative: share of pos above
    auc = float(v10.mean())
    var = 0.0
    if npos > 1:
        var += float(np.var(v10, ddof=1)) / npos
    if nneg > 1:
        var += float(np.var(v01, ddof=1)) / nneg
    return auc, math.sqrt(max(var, 0.0))


def c2st(
    x: np.ndarray,
    y: np.ndarray,
    folds: int = 5,
    seed: int = 0,
    *,
    alpha: float = 0.05,
    top_k: int = 10,
    c: float = 1.0,
) -> dict[str, Any]:
    """Classifier two-sample test: can a domain classifier tell target from source?

    Standardise + L2 logistic regression (``C = c``, class-balanced), stratified ``folds``-fold
    cross-validation (fewer folds if a domain has fewer samples). From the out-of-fold
    probabilities P(target):

    * ``auc``: AUC of all out-of-fold probabilities (equal to
      ``sklearn.metrics.roc_auc_score``);
    * ``auc_se`` = max(``auc_se_delong``, ``auc_se_cv``, 0.5/sqrt(n m)) and ``auc_ci`` =
      ``auc`` ± t(K-1) · ``auc_se`` (clipped to [0, 1]); ``p_value``: one-sided t test of
      AUC > 0.5 with that SE. The DeLong SE alone treats the out-of-fold scores as one
      model's and ignores that each fold has its own model: on identical domains it missed
      0.5 in ~16 % of 95 % intervals (``benchmarks/validity.py``). ``auc_se_cv`` adds that
      variability with the corrected resampled-t variance of Nadeau & Bengio (2003),
      SD(fold AUCs) · sqrt(1/K + n_test/n_train);
    * ``error``: balanced error ε at threshold 0.5; ``pad`` = 2(1 - 2ε) clipped to [0, 2];
    * ``probs``: per sample, source rows first then target rows (the input order);
    * ``most_target_like_source`` / ``most_source_like_target``: indices (into ``x`` / ``y``)
      of the ``top_k`` most domain-atypical samples, most extreme first.
    """
    xs = as_matrix(x, "x (source embeddings)")
    ys = as_matrix(y, "y (target embeddings)")
    check_same_dim(xs, ys)
    n, m = len(xs), len(ys)
    k = min(folds, n, m)
    if k < 2:
        raise ValueError(f"folds: expected >= 2 folds and >= 2 samples per domain, got {folds}")
    z = np.vstack([xs, ys])
    labels = np.r_[np.zeros(n, dtype=int), np.ones(m, dtype=int)]
    probs = np.empty(n + m)
    fold_auc = []
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for train, test in splitter.split(z, labels):
        model = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=c, class_weight="balanced", max_iter=2000),
        )
        model.fit(z[train], labels[train])
        probs[test] = model.predict_proba(z[test])[:, 1]
        fold_auc.append(
            delong_auc(probs[test][labels[test] == 1], probs[test][labels[test] == 0])[0]
        )
    auc, se_delong = delong_auc(probs[n:], probs[:n])
    se_cv = float(np.std(fold_auc, ddof=1)) * math.sqrt(1.0 / k + 1.0 / (k - 1))
    # Floor: perfectly separated folds give SE 0; keep the t statistic and p finite.
    se = max(se_delong, se_cv, 0.5 / math.sqrt(n * m))
    tq = float(stats.t.ppf(1 - alpha / 2, k - 1))
    p_value = float(stats.t.sf((auc - 0.5) / se, k - 1))
    pred = probs >= 0.5
    err_src = float(np.mean(pred[:n]))
    err_tgt = float(np.mean(~pred[n:]))
    error = (err_src + err_tgt) / 2.0
    kk = min(top_k, n, m)
    return {
        "auc": auc,
        "auc_ci": [max(0.0, auc - tq * se), min(1.0, auc + tq * se)],
        "auc_se": se,
        "auc_se_delong": se_delong,
        "auc_se_cv": se_cv,
        "fold_auc": [float(a) for a in fold_auc],
        "p_value": p_value,
        "pad": float(np.clip(2.0 * (1.0 - 2.0 * error), 0.0, 2.0)),
        "error": error,
        "folds": int(k),
        "n": [n, m],
        "probs": [float(p) for p in probs],
        "most_target_like_source": [int(i) for i in np.argsort(-probs[:n], kind="stable")[:kk]],
        "most_source_like_target": [int(i) for i in np.argsort(probs[n:], kind="stable")[:kk]],
    }


# --------------------------------------------------------------------------- BBSD


def bbsd(
    px: np.ndarray,
    py: np.ndarray,
    alpha: float = 0.05,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Black-box shift detection: per-class KS tests on per-image mean softmax vectors.

    One two-sample KS test per class column, Bonferroni-corrected over the C classes
    (Rabanser et al., "Failing Loudly", 2019).
    """
    a = as_matrix(px, "px (source class probabilities)", min_rows=1)
    b = as_matrix(py, "py (target class probabilities)", min_rows=1)
    check_same_dim(a, b, ("px", "py"))
    n_cls = a.shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n_cls)]
    if len(names) != n_cls:
        raise ValueError(f"class_names: expected {n_cls} names, got {len(names)}")
    rows = []
    for j, name in enumerate(names):
        res = stats.ks_2samp(a[:, j], b[:, j])
        p = float(res.pvalue)
        p_adj = min(1.0, p * n_cls)
        rows.append(
            {
                "name": name,
                "ks": float(res.statistic),
                "p_value": p,
                "p_adjusted": p_adj,
                "significant": p_adj < alpha,
            }
        )
    return {
        "per_class": rows,
        "any_significant": any(r["significant"] for r in rows),
        "min_p_adjusted": min(r["p_adjusted"] for r in rows),
        "correction": "bonferroni",
        "alpha": float(alpha),
    }


# --------------------------------------------------------------------------- assembly


def _fmt_p(p: float, permutations: int) -> str:
    floor = 1.0 / (permutations + 1)
    return f"p ≤ {floor:.3g}" if p <= floor else f"p = {p:.3g}"


def _verdict(mmd: dict[str, Any], c2: dict[str, Any], alpha: float) -> tuple[bool, str]:
    """Plain-English verdict; the pre-specified decision is the MMD permutation test."""
    significant = mmd["p_value"] < alpha
    lo, hi = c2["auc_ci"]
    c2_sig = lo > 0.5
    auc_txt = f"a domain classifier reaches AUC {c2['auc']:.2f} [{lo:.2f}, {hi:.2f}]"
    p_txt = _fmt_p(mmd["p_value"], mmd["permutations"])
    if significant:
        head = f"significant gap: MMD² = {mmd['mmd2']:.3g} ({p_txt} < {alpha:g})"
        tail = f" and {auc_txt}" if c2_sig else f", although {auc_txt}, whose interval covers 0.5"
    else:
        head = f"no significant gap: MMD² = {mmd['mmd2']:.3g} ({p_txt} ≥ {alpha:g})"
        tail = f", although {auc_txt}, above chance" if c2_sig else f" and {auc_txt}, covering 0.5"
    return significant, head + tail + "."


def latent_gap(
    x: np.ndarray,
    y: np.ndarray,
    *,
    bandwidth: float | None = None,
    permutations: int = 500,
    n_boot: int = 200,
    max_dim: int = 64,
    alpha: float = 0.05,
    seed: int = 0,
    kid_subsets: int = 50,
    memory_budget_mb: float = 256.0,
    probs_source: np.ndarray | None = None,
    probs_target: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    standardize: bool = True,
) -> dict[str, Any]:
    """The whole ``latent_gap`` section: FD, MMD² test, KID, C2ST, each with an interval.

    With ``probs_source``/``probs_target`` (per-image mean class probabilities, (n, C) and
    (m, C)) the section also holds ``bbsd`` (:func:`bbsd`); otherwise ``bbsd`` is ``None``.

    ``bandwidth`` should be frozen by the caller (``result["mmd"]["bandwidth"]`` of the
    baseline run, in standardised units when ``standardize``, see :func:`mmd_test`) so that
    numbers stay comparable across mitigations; ``None`` computes it here.
    Intervals: FD by percentile bootstrap (fixed pooled PCA, rows resampled per domain),
    MMD² and KID by tie-excluded bootstrap, C2ST AUC by DeLong.
    """
    xs = as_matrix(x, "x (source embeddings)")
    ys = as_matrix(y, "y (target embeddings)")
    check_same_dim(xs, ys)
    fd = frechet_with_ci(xs, ys, max_dim=max_dim, n_boot=n_boot, alpha=alpha, seed=seed)
    mmd = mmd_test(
        xs,
        ys,
        bandwidth,
        permutations,
        seed,
        n_boot=n_boot,
        alpha=alpha,
        memory_budget_mb=memory_budget_mb,
        standardize=standardize,
    )
    kd = kid(
        xs,
        ys,
        subsets=kid_subsets,
        seed=seed,
        n_boot=n_boot,
        alpha=alpha,
        memory_budget_mb=memory_budget_mb,
    )
    c2 = c2st(xs, ys, seed=seed, alpha=alpha)
    significant, verdict = _verdict(mmd, c2, alpha)
    shift = None
    if probs_source is not None and probs_target is not None:
        shift = bbsd(probs_source, probs_target, alpha=alpha, class_names=class_names)
    return {
        "n_source": len(xs),
        "n_target": len(ys),
        "dim": int(xs.shape[1]),
        "alpha": float(alpha),
        "seed": int(seed),
        "frechet": fd,
        "mmd": mmd,
        "kid": kd,
        "c2st": c2,
        "bbsd": shift,
        "significant": significant,
        "decision_rule": "MMD permutation test at alpha (pre-specified); C2ST is a second opinion",
        "verdict": verdict,
    }
