"""The shared streaming kernel engine behind MMD² and KID.

:func:`kernel_forms` walks the upper triangle of the pooled (N = n + m) kernel matrix in
square blocks and, for each block, accumulates the quadratic forms ``wᵀ K₀ w`` of many weight
vectors at once as a matrix product (K₀ is K with its diagonal set to 0). One pass therefore
evaluates the observed statistic, all permutation statistics and all bootstrap replicates:

* time O(N² · (d + k)) for k weight vectors (k = 1 + B permutations + 3 per bootstrap
  replicate), half of it saved by symmetry;
* memory O(N·d + N·k_chunk + b²): the block edge b and the columns per pass k_chunk are
  chosen so that the working set stays within ``memory_budget_mb`` (default 256 MiB; more
  passes over the kernel when many columns do not fit at once, and never below the O(N·d)
  floor of holding the data). The N x N matrix is never held.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "MIN_BLOCK",
    "BootstrapColumns",
    "Dtype",
    "Kernel",
    "kernel_block",
    "kernel_forms",
    "mmd2_from_forms",
    "permutation_forms",
    "pooled",
]

Dtype = Literal["float64", "float32"]


@dataclass(frozen=True)
class Kernel:
    """``gaussian``: exp(-‖a-b‖²/(2sigma²)); ``cubic``: (aᵀb/d + 1)³ (the KID kernel)."""

    kind: Literal["gaussian", "cubic"]
    bandwidth: float = 1.0
    dim: int = 1


def kernel_block(
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
            kb = kernel_block(zz[i0:i1], zz[j0:j1], sq[i0:i1], sq[j0:j1], kernel)
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


def pooled(x: np.ndarray, y: np.ndarray, kernel: Kernel) -> np.ndarray:
    """Stack the samples; centre them for the translation-invariant Gaussian kernel.

    Centring leaves every Gaussian kernel value unchanged and keeps ‖a‖² + ‖b‖² - 2aᵀb
    accurate in floating point.
    """
    z = np.vstack([x, y])
    if kernel.kind == "gaussian":
        z -= z.mean(0)
    return z


def mmd2_from_forms(sxx: np.ndarray, s_r: np.ndarray, total: float, n: int, m: int) -> np.ndarray:
    """Unbiased MMD² from ``sxx = sᵀK₀s``, ``s_r = sᵀ(K₀1)`` and ``total = 1ᵀK₀1``.

    With s the indicator of the rows labelled "source": Σ_xy = s_r - sxx and
    Σ_yy = total - 2·s_r + sxx (off-diagonal sums).
    """
    sxy = s_r - sxx
    syy = total - 2.0 * s_r + sxx
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)


class BootstrapColumns:
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


def _chunk_columns(n_total: int, d: int, n_cols: int, itemsize: int, budget_bytes: float) -> int:
    """Weight columns per pass: the (N, chunk) weights and the permutations' row indices take
    at most a third of what the budget leaves after the pooled data (float64 plus a
    working-dtype copy)."""
    left = budget_bytes - n_total * d * (8 + itemsize)
    per_col = n_total * (itemsize + 8)
    return max(1, min(n_cols, int(left / 3 / per_col)))


def permutation_forms(
    z: np.ndarray,
    kernel: Kernel,
    n: int,
    permutations: int,
    seed: int,
    *,
    dtype: Dtype,
    memory_budget_mb: float,
    extra: BootstrapColumns | None = None,
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
