"""The shared streaming kernel engine behind MMD² and KID.

:func:`kernel_forms` walks the upper triangle of the pooled (N = n + m) kernel matrix in
square tiles and, for each tile, accumulates the quadratic forms ``wᵀ K₀ w`` of many weight
vectors at once as a matrix product (K₀ is K with its diagonal set to 0). One pass therefore
evaluates the observed statistic, all permutation statistics and all bootstrap replicates:

* time O(N² · (d + k)) for k weight vectors (k = 1 + B permutations + 3 per bootstrap
  replicate), half of it saved by symmetry. Both terms are GEMMs: a tile's exponents come
  from one product of augmented row factors (:func:`_factors`), then an in-place clamp and
  exp; the weights are held as (k + 1, N) rows (the last all ones gives row sums) and meet
  the tile in a second product. In ``float32`` both run in float32 on kernel values less an
  offset (:func:`_tile_forms`) and only the per-tile sums are accumulated in float64;
* memory O(N·d + N·k_chunk + b²): the block edge b (at most :data:`MAX_BLOCK`) and the
  columns per pass k_chunk (at most 2 (d + 2), see :func:`_chunk_columns`) keep the working
  set a fixed multiple of the data and within ``memory_budget_mb`` (default 256 MiB; more
  passes over the kernel when many columns do not fit at once, and never below the O(N·d)
  floor of holding the data). The N x N matrix is never held.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "MIN_BLOCK",
    "BootstrapColumns",
    "Dtype",
    "Kernel",
    "fill_permutations",
    "kernel_block",
    "kernel_forms",
    "mmd2_from_forms",
    "mmd2_of_samples",
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


def _factors(
    z: np.ndarray, kernel: Kernel, dtype: np.dtype, sq: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Row factors ``(left, right)`` with ``left[a] · right[b]`` = the kernel's inner argument.

    Gaussian: with u = z / sigma and h = ‖u‖² / 2, left = [u, -h, 1] and right = [u, 1, -h],
    so the product is -‖z_a - z_b‖² / (2 sigma²), the exponent, straight out of one GEMM; h is
    taken from the rounded u (in float64), so a row's distance to itself stays ~0 in float32.
    ``sq`` (‖z‖², optional) is used instead when given. Cubic: [z / d, 1, 0] · [z, 1, 0] =
    zᵀz/d + 1.
    """
    n_total, d = z.shape
    left = np.empty((n_total, d + 2), dtype=dtype)
    if kernel.kind == "cubic":
        np.divide(z, kernel.dim, out=left[:, :d], casting="same_kind")
        right = np.empty_like(left)
        right[:, :d] = z
        left[:, d], left[:, d + 1] = 1.0, 0.0
        right[:, d:] = left[:, d:]
        return left, right
    u = left[:, :d]
    np.multiply(z, 1.0 / kernel.bandwidth, out=u, casting="same_kind")
    if sq is None:
        h = 0.5 * np.einsum("ij,ij->i", u, u, dtype=np.float64)
    else:
        h = np.asarray(sq, dtype=np.float64) / (2.0 * kernel.bandwidth**2)
    right = np.empty_like(left)
    right[:, :d] = u
    left[:, d], left[:, d + 1] = -h, 1.0
    right[:, d], right[:, d + 1] = 1.0, -h
    return left, right


def _tile(left: np.ndarray, right: np.ndarray, kernel: Kernel, out: np.ndarray) -> np.ndarray:
    """Kernel values of the rows of ``left`` against those of ``right``, written into ``out``."""
    g = np.matmul(left, right.T, out=out)
    if kernel.kind == "cubic":
        g *= g * g
        return g
    np.minimum(g, 0.0, out=g)  # a squared distance is never negative
    np.exp(g, out=g)
    return g


def kernel_block(
    a: np.ndarray, b: np.ndarray, a_sq: np.ndarray, b_sq: np.ndarray, kernel: Kernel
) -> np.ndarray:
    """Kernel values between row blocks ``a`` and ``b`` (in their dtype; ``*_sq``: ‖row‖²)."""
    dt = np.result_type(a, b)
    left = _factors(a, kernel, dt, a_sq)[0]
    right = _factors(b, kernel, dt, b_sq)[1]
    return _tile(left, right, kernel, np.empty((len(a), len(b)), dtype=dt))


MIN_BLOCK = 64
"""Smallest block edge; below it the Python loop overhead dominates."""

MAX_BLOCK = 512
"""Largest block edge. A tile's memory grows as b² and its product with the weights as
(k + 1)·b, so both grew with N up to the budget (issue 15's P2). The weight products run
nearly as fast at 512 as at 1,024 or 4,096; with the column cap of :func:`_chunk_columns` P3
(10k per side, d = 256, float32) went from 4.9 s / 322 MB to 6.0 s / 284 MB (one more pass
over the kernel), and an exact test at 2,000 images from 49 MB to 28 MB traced."""


def _block_size(n_total: int, k: int, itemsize: int, budget_bytes: float) -> int:
    """Block edge b for ``k`` weight rows whose working set fits ``budget_bytes``.

    Per block: the kernel tile (b² items), its product with the weights ((k + 1)·b items) and
    a float64 column sum (b). The largest fitting edge up to :data:`MAX_BLOCK` is then evened
    out over the blocks per side, so that the last block is no sliver.
    """
    lin = k + 1 + 8 / itemsize
    per = max(budget_bytes, 0.0) / itemsize
    b = int((-lin + math.sqrt(lin * lin + 4 * per)) / 2)
    b = max(MIN_BLOCK, min(n_total, MAX_BLOCK, b))
    return max(MIN_BLOCK, -(-n_total // -(-n_total // b)))


def _upper_tiles(n_total: int, block: int) -> Iterator[tuple[int, int, int, int]]:
    """Tiles ``(i0, i1, j0, j1)`` covering the upper triangle (diagonal included) once.

    Off-diagonal tiles have edge ``block``; each diagonal block is split in halves (three
    tiles of a quarter of its area instead of one), since only its upper half is needed:
    with nb blocks per side the work is (nb + 1/2) / nb of the triangle's instead of
    (nb + 1) / nb.
    """
    for i0 in range(0, n_total, block):
        i1 = min(i0 + block, n_total)
        half = max(1, -(-(i1 - i0) // 2))
        for a0 in range(i0, i1, half):
            for b0 in range(a0, i1, half):
                yield a0, min(a0 + half, i1), b0, min(b0 + half, i1)
        for j0 in range(i1, n_total, block):
            yield i0, i1, j0, min(j0 + block, n_total)


def _offset(tile: np.ndarray) -> float:
    """Mean off-diagonal value of the first (diagonal) tile, rounded to its dtype: the offset
    subtracted from every kernel value before the weight products (see :func:`_tile_forms`)."""
    size = tile.shape[0]
    if size < 2:
        return 0.0
    mean = (tile.sum(dtype=np.float64) - np.trace(tile, dtype=np.float64)) / (size * (size - 1))
    return float(tile.dtype.type(mean))


def _tile_forms(
    left: np.ndarray, right: np.ndarray, wt: np.ndarray, kernel: Kernel, block: int
) -> tuple[np.ndarray, np.ndarray]:
    """Forms ``q_c = w_cᵀ K₀ w_c`` for the rows of ``wt`` but its last, and ``r = K₀ 1``.

    ``wt`` is (k + 1, N) in the working dtype with an all-ones last row, so each tile's
    product with it also gives the tile's row sums. Every tile of the upper triangle is
    computed once (``K_ba = K_abᵀ`` counts an off-diagonal tile twice); the products
    accumulate in the working dtype (BLAS), their per-tile sums in float64. The products
    see ``K₀ - c`` off the diagonal (c ≈ the mean kernel value), whose partial sums are far
    smaller than those of K₀, and so is their rounding in float32; ``c`` is added back in
    float64: ``w K₀ w = w (K₀ - c) w + c ((Σw)² - Σw²)``.
    """
    n_total, k = left.shape[0], wt.shape[0] - 1
    q, r = np.zeros(k), np.zeros(n_total)
    tiles = np.empty(min(block, n_total) ** 2, dtype=left.dtype)  # reused: no page faults
    prods = np.empty((k + 1) * min(block, n_total), dtype=left.dtype)
    offset = None
    for i0, i1, j0, j1 in _upper_tiles(n_total, block):
        g = tiles[: (i1 - i0) * (j1 - j0)].reshape(i1 - i0, j1 - j0)
        _tile(left[i0:i1], right[j0:j1], kernel, g)
        offset = _offset(g) if offset is None else offset
        g -= offset
        if i0 == j0:
            np.fill_diagonal(g, 0.0)
        p = prods[: (k + 1) * (i1 - i0)].reshape(k + 1, i1 - i0)
        np.matmul(wt[:, j0:j1], g.T, out=p)  # p[c, a] = Σ_b w_cb (K_ab - c)
        part = np.einsum("ca,ca->c", wt[:k, i0:i1], p[:k], dtype=np.float64)
        r[i0:i1] += p[k]
        if i0 == j0:
            q += part
        else:
            q += 2.0 * part
            r[j0:j1] += g.sum(0, dtype=np.float64)
    total = wt[:k].sum(1, dtype=np.float64)
    q += offset * (total * total - np.einsum("cn,cn->c", wt[:k], wt[:k], dtype=np.float64))
    r += offset * (n_total - 1)
    return q, r


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
    self-pairs). ``weights`` is (N, k). Tiles of the upper triangle are computed once each, in
    ``dtype``; per-tile sums are accumulated in float64. The block edge is the largest whose
    working set fits ``memory_budget_mb`` minus what ``z``, ``weights``, their working-dtype
    copies and the caller's ``reserved_bytes`` already take (at least ``MIN_BLOCK``).
    """
    dt = np.dtype(dtype)
    n_total, k = weights.shape
    left, right = _factors(z, kernel, dt)
    wt = np.empty((k + 1, n_total), dtype=dt)
    wt[:k] = weights.T
    wt[k] = 1.0
    held = reserved_bytes + z.nbytes + weights.nbytes + left.nbytes + right.nbytes + wt.nbytes
    block = _block_size(n_total, k, dt.itemsize, memory_budget_mb * 2**20 - held)
    return _tile_forms(left, right, wt, kernel, block)


def pooled(x: np.ndarray, y: np.ndarray, kernel: Kernel) -> np.ndarray:
    """Stack the samples; centre them for the translation-invariant Gaussian kernel.

    Centring leaves every Gaussian kernel value unchanged and keeps ‖a‖² + ‖b‖² - 2aᵀb
    accurate in floating point.
    """
    z = np.vstack([x, y])
    if kernel.kind == "gaussian":
        z -= z.mean(0)
    return z


def mmd2_of_samples(
    x: np.ndarray,
    y: np.ndarray,
    kernel: Kernel,
    *,
    dtype: Dtype = "float64",
    memory_budget_mb: float = 256.0,
) -> float:
    """Unbiased MMD² of samples ``x`` and ``y`` under ``kernel``, streamed in tiles (the n x m
    kernel matrices are never held: the working set is the pooled data plus one tile)."""
    n, m = len(x), len(y)
    s = np.zeros((n + m, 1))
    s[:n] = 1.0
    q, r = kernel_forms(
        pooled(x, y, kernel), kernel, s, dtype=dtype, memory_budget_mb=memory_budget_mb
    )
    return float(mmd2_from_forms(q, s[:, 0] @ r, float(r.sum()), n, m)[0])


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
        with np.errstate(invalid="ignore", divide="ignore"):  # one distinct row: NaN, dropped
            xx, yy = qx / (n * n - np.array(self.sq_x)), qy / (m * m - np.array(self.sq_y))
        return xx + yy - 2.0 * cross / (n * m)


MIN_COLUMNS = 64
"""Fewest weight columns per pass that the data-sized cap (:func:`_chunk_columns`) allows."""


def _chunk_columns(n_total: int, d: int, n_cols: int, itemsize: int, budget_bytes: float) -> int:
    """Weight columns per pass: their (chunk + 1, N) rows take at most half of what the budget
    leaves after the pooled data (float64) and its two working-dtype factors (N, d + 2), and
    no more than those two factors (chunk + 1 <= 2 (d + 2), at least :data:`MIN_COLUMNS`).

    The second cap keeps the engine's working set a fixed multiple of the data it holds
    anyway, so it grows with N as the data does, not up to the budget (issue 15's P2: at
    2,000 images the weights of 1 + 500 permutations and 600 bootstrap columns took 17 MB of
    the budget's room). Each further pass recomputes the kernel tiles (d + 2 columns of
    factors against the pass's chunk + 1 weight rows: about a third of a pass)."""
    left = budget_bytes - n_total * (8 * d + 2 * itemsize * (d + 2))
    cap = max(MIN_COLUMNS, 2 * (d + 2)) - 1
    return max(1, min(n_cols, cap, int(left / 2 / (n_total * itemsize)) - 1))


def fill_permutations(rows: np.ndarray, rng: np.random.Generator, n: int) -> None:
    """Set 1 at ``rng.permutation(N)[:n]`` in each row of ``rows``, drawn in order.

    One draw per row: ``Generator.permuted`` over a batch of ``arange(N)`` rows gives the same
    values but ran slower (0.46-1.4 s against 0.32 s for 1,000 draws of N = 20,000).
    """
    for row in rows:
        row[rng.permutation(len(row))[:n]] = 1.0


def _weight_rows(
    cols: range,
    n_total: int,
    n: int,
    permutations: int,
    rng: np.random.Generator,
    extra: BootstrapColumns | None,
    dtype: np.dtype,
) -> np.ndarray:
    """The weights of columns ``cols`` as rows, plus an all-ones row (see :func:`_tile_forms`).

    Column 0 labels the first n rows as source, columns 1..B are permutations, later columns
    come from ``extra``.
    """
    c0, c1 = cols.start, cols.stop
    wt = np.zeros((c1 - c0 + 1, n_total), dtype=dtype)
    wt[-1] = 1.0
    if c0 == 0:
        wt[0, :n] = 1.0
    p0, p1 = max(c0, 1), min(c1, permutations + 1)
    if p1 > p0:
        fill_permutations(wt[p0 - c0 : p1 - c0], rng, n)
    for col in range(max(c0, permutations + 1), c1):
        wt[col - c0] = extra.next_column()  # type: ignore[union-attr]
    return wt


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
    budget = memory_budget_mb * 2**20
    chunk = _chunk_columns(n_total, d, n_cols, dt.itemsize, budget)
    left, right = _factors(z, kernel, dt)
    held = z.nbytes + left.nbytes + right.nbytes + (chunk + 1) * n_total * dt.itemsize
    block = _block_size(n_total, chunk, dt.itemsize, budget - held)
    rng = np.random.default_rng(seed)
    q_all = np.empty(n_cols)
    s_r = np.empty(1 + permutations)
    row_sums = np.zeros(n_total)
    for c0 in range(0, n_cols, chunk):
        cols = range(c0, min(c0 + chunk, n_cols))
        wt = _weight_rows(cols, n_total, n, permutations, rng, extra, dt)
        q_all[cols.start : cols.stop], row_sums = _tile_forms(left, right, wt, kernel, block)
        p1 = min(cols.stop, 1 + permutations)
        if p1 > c0:
            s_r[c0:p1] = np.einsum("cn,n->c", wt[: p1 - c0], row_sums, dtype=np.float64)
        del wt
    return q_all, s_r, row_sums
