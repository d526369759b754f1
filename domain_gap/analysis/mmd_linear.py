"""Linear-time MMD² test on random Fourier features of the same Gaussian kernel.

The exact test (:func:`~domain_gap.analysis.mmd.mmd_test`) costs O(N²) in the pooled size N;
this one replaces the kernel k(a, b) = exp(-‖a - b‖² / (2 sigma²)) by k̂(a, b) = φ(a)ᵀφ(b)
with D random Fourier features (Rahimi & Recht, 2007): D/2 frequencies ω ~ N(0, sigma⁻² I)
drawn from the seed and φ(a) = [cos ωᵀa, sin ωᵀa] / sqrt(D/2), so that E k̂ = k and
k̂(a, a) = 1 exactly. With the feature sums s_x = Σ φ(x_i) and s_y = Σ φ(y_j), the statistic
is the **unbiased** U-statistic of k̂:

    MMD²_u = (‖s_x‖² - n) / (n(n - 1)) + (‖s_y‖² - m) / (m(m - 1)) - 2 s_xᵀs_y / (n m),

that is the squared distance of the feature means ‖s_x/n - s_y/m‖² (the biased V-statistic)
with its diagonal terms k̂(a, a) = 1 taken out, so the value estimates the same MMD² as the
exact test (the V-statistic is biased upwards by about (1/n + 1/m)(1 - mean k)). For n = m
it is an increasing affine function of that squared distance, so both give the same
p-value. As D grows the two tend to the exact U- and V-statistics of the sample.

The features are a fixed function of a row (drawn from the seed, not the data), so permuting
the labels gives an exact test of this statistic. Permutations are the exact test's
(``rng.permutation(N)[:n]``, seed ``seed``); their 0/1 rows S meet the features in one GEMM
per chunk, S Ψ, with Ψ the features less their pooled mean (float32 sums of centred
features stay accurate), and each statistic follows in O(D). Time O(N·D·(d + B)),
memory O(N·D) for the features plus a budgeted chunk of S.
"""

from __future__ import annotations

import numpy as np

from domain_gap.analysis.kernels import BootstrapColumns, Dtype, fill_permutations
from domain_gap.analysis.mmd import (
    BOOTSTRAP_METHOD,
    Prepared,
    Scale,
    check_bandwidth,
    permutation_result,
    prepare,
)
from domain_gap.analysis.results import NO_INTERVAL, Interval, MMDResult
from domain_gap.analysis.stats_utils import as_matrix, check_same_dim, percentile_interval

__all__ = ["DEFAULT_FEATURES", "rff_features", "rff_method", "rff_mmd2", "rff_mmd_test"]

DEFAULT_FEATURES = 2048
"""Random features D (D/2 frequencies) by default; see ``benchmarks/mmd_linear_validity.py``."""

_ROW_BLOCK = 8192
"""Rows per block while computing the features (bounds the float64 projection)."""


def rff_method(features: int) -> str:
    """``MMDResult.method`` of :func:`rff_mmd_test`."""
    return f"random Fourier features (D={features}, unbiased U-statistic, permutation test)"


def rff_features(
    z: np.ndarray, bandwidth: float, features: int, seed: int, dtype: Dtype = "float32"
) -> np.ndarray:
    """(N, D) features φ with E φ(a)ᵀφ(b) = exp(-‖a - b‖² / (2 bandwidth²)), ‖φ(a)‖ = 1.

    The frequencies come from ``default_rng([seed, 3])``; the projection is computed in
    float64 by row blocks, cos and sin in ``dtype``.
    """
    if features < 2 or features % 2:
        raise ValueError(f"features: expected an even number >= 2, got {features}")
    half = features // 2
    rng = np.random.default_rng([seed, 3])
    omega = rng.standard_normal((z.shape[1], half)) / check_bandwidth(bandwidth)
    out = np.empty((len(z), features), dtype=dtype)
    norm = out.dtype.type(1.0 / np.sqrt(half))
    for r0 in range(0, len(z), _ROW_BLOCK):
        r1 = min(r0 + _ROW_BLOCK, len(z))
        proj = (z[r0:r1] @ omega).astype(dtype, copy=False)
        np.cos(proj, out=out[r0:r1, :half])
        np.sin(proj, out=out[r0:r1, half:])
    out *= norm
    return out


def _unbiased(sx: np.ndarray, sy: np.ndarray, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """MMD²_u per row from weighted feature sums (k, D) and the weights' (Σc, Σc²) (k, 2).

    A row drawn c times makes c(c - 1) pairs with its own copies; k̂(a, a) = 1, so
    ``‖s‖² - Σc²`` is the sum over distinct rows and ``(Σc)² - Σc²`` their count (as in the
    exact engine's bootstrap). Permutations have c in {0, 1}: Σc = Σc² = n.
    """
    xx = np.einsum("kd,kd->k", sx, sx) - cx[:, 1]
    yy = np.einsum("kd,kd->k", sy, sy) - cy[:, 1]
    xy = np.einsum("kd,kd->k", sx, sy)
    return (
        xx / (cx[:, 0] ** 2 - cx[:, 1])
        + yy / (cy[:, 0] ** 2 - cy[:, 1])
        - 2.0 * xy / (cx[:, 0] * cy[:, 0])
    )


def _chunk_rows(n_total: int, features: int, itemsize: int, budget_bytes: float) -> int:
    """Weight rows per GEMM: (c, N) weights and (c, D) float64 sums within the budget left."""
    return max(64, int(budget_bytes / (n_total * itemsize + 16 * features)))


def _permutation_stats(
    psi: np.ndarray, mean: np.ndarray, n: int, permutations: int, seed: int, chunk: int
) -> np.ndarray:
    """MMD²_u of the identity labelling (first n rows as source) and B permutations."""
    n_total = len(psi)
    m = n_total - n
    grand = psi.sum(0, dtype=np.float64) + n_total * mean
    rng = np.random.default_rng(seed)
    stats = np.empty(1 + permutations)
    for c0 in range(0, 1 + permutations, chunk):
        c1 = min(c0 + chunk, 1 + permutations)
        rows = np.zeros((c1 - c0, n_total), dtype=psi.dtype)
        if c0 == 0:
            rows[0, :n] = 1.0
        fill_permutations(rows[1:] if c0 == 0 else rows, rng, n)
        sx = (rows @ psi).astype(np.float64) + n * mean
        counts_x = np.tile([float(n), float(n)], (c1 - c0, 1))
        counts_y = np.tile([float(m), float(m)], (c1 - c0, 1))
        stats[c0:c1] = _unbiased(sx, grand - sx, counts_x, counts_y)
    return stats


def _bootstrap_stats(
    psi: np.ndarray, mean: np.ndarray, boot: BootstrapColumns, chunk: int
) -> np.ndarray:
    """Tie-excluded bootstrap replicates of MMD²_u, the exact test's resamples (same seed)."""
    replicates = np.empty(boot.n_boot)
    per = max(1, chunk // 2)
    for b0 in range(0, boot.n_boot, per):
        b1 = min(b0 + per, boot.n_boot)
        rows = np.empty((2 * (b1 - b0), len(psi)), dtype=psi.dtype)
        for j in range(b1 - b0):
            rows[2 * j], rows[2 * j + 1] = boot.next_column(), boot.next_column()
            boot.next_column()  # the engine's third column (c_x + c_y) is not needed here
        sums = (rows @ psi).astype(np.float64)
        n_x, n_y = boot.n, boot.m
        sx, sy = sums[0::2] + n_x * mean, sums[1::2] + n_y * mean
        cx = np.c_[np.full(b1 - b0, float(n_x)), boot.sq_x[b0:b1]]
        cy = np.c_[np.full(b1 - b0, float(n_y)), boot.sq_y[b0:b1]]
        replicates[b0:b1] = _unbiased(sx, sy, cx, cy)
    return replicates


def _centred_features(
    prep: Prepared, features: int, seed: int, dtype: Dtype
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features less their float64 pooled mean (in place), and that mean."""
    psi = rff_features(np.vstack([prep.x, prep.y]), prep.bandwidth, features, seed, dtype)
    mean = psi.mean(0, dtype=np.float64)
    psi -= mean.astype(psi.dtype)
    return psi, mean.astype(psi.dtype).astype(np.float64)


def rff_mmd_test(
    x: np.ndarray,
    y: np.ndarray,
    bandwidth: float | None = None,
    permutations: int = 500,
    seed: int = 0,
    *,
    features: int = DEFAULT_FEATURES,
    n_boot: int = 0,
    alpha: float = 0.05,
    dtype: Dtype = "float32",
    memory_budget_mb: float = 256.0,
    standardize: bool = True,
    scale: Scale | None = None,
) -> MMDResult:
    """Permutation test of MMD²_u on ``features`` random Fourier features (linear in N).

    Same inputs, standardisation, bandwidth rule, permutations, p-value rule and bootstrap
    resamples as :func:`~domain_gap.analysis.mmd.mmd_test`, on the approximate kernel k̂
    (module docstring); ``method`` and ``n_features`` say so in the result. Exact as a
    permutation test of its own statistic; its power approaches the exact test's as
    ``features`` grows. Memory: the (N, D) features in ``dtype`` plus weight chunks sized
    by ``memory_budget_mb``.
    """
    if permutations < 1:
        raise ValueError(f"permutations: expected >= 1, got {permutations}")
    prep = prepare(x, y, bandwidth, seed, standardize, scale)
    n, m = len(prep.x), len(prep.y)
    psi, mean = _centred_features(prep, features, seed, dtype)
    chunk = _chunk_rows(n + m, features, psi.itemsize, memory_budget_mb * 2**20 - psi.nbytes)
    stats_all = _permutation_stats(psi, mean, n, permutations, seed, chunk)
    ci: Interval = NO_INTERVAL
    if n_boot > 0:
        boot = BootstrapColumns(np.random.default_rng([seed, 1]), n, m, n_boot)
        ci = tuple(percentile_interval(_bootstrap_stats(psi, mean, boot, chunk), alpha))
    return permutation_result(
        prep,
        float(stats_all[0]),
        stats_all[1:],
        float(mean @ mean),  # the mean of k̂ over all ordered pairs
        dtype=dtype,
        alpha=alpha,
        ci=ci,
        ci_method=BOOTSTRAP_METHOD.format(n_boot=n_boot),
        n_boot=n_boot,
        method=rff_method(features),
        n_features=features,
    )


def rff_mmd2(
    x: np.ndarray,
    y: np.ndarray,
    bandwidth: float,
    features: int = DEFAULT_FEATURES,
    seed: int = 0,
    *,
    biased: bool = False,
) -> float:
    """MMD² of k̂ on the raw rows: unbiased (as the test reports) or, with ``biased``, the
    squared distance of the feature means (the V-statistic). Float64 throughout."""
    xs = as_matrix(x, "x (source embeddings)")
    ys = as_matrix(y, "y (target embeddings)")
    check_same_dim(xs, ys)
    phi = rff_features(np.vstack([xs, ys]), bandwidth, features, seed, dtype="float64")
    n, m = len(xs), len(ys)
    sx, sy = phi[:n].sum(0), phi[n:].sum(0)
    if biased:
        return float(np.sum((sx / n - sy / m) ** 2))
    counts = np.array([[n, n], [m, m]], dtype=np.float64)
    return float(_unbiased(sx[None], sy[None], counts[:1], counts[1:])[0])
