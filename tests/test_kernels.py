"""The streaming kernel engine against dense numpy references (issue 15, item 4)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from domain_gap.analysis import kernels, mmd


def _dense_gauss0(z: np.ndarray, bw: float) -> np.ndarray:
    """Gaussian kernel matrix with a zero diagonal, written plainly."""
    k = np.exp(-cdist(z, z, "sqeuclidean") / (2 * bw**2))
    np.fill_diagonal(k, 0.0)
    return k


@pytest.mark.parametrize("budget_mb", [256.0, 0.05])  # one tile; many tiles, uneven edges
def test_kernel_forms_match_dense_quadratic_forms_for_any_weights(budget_mb: float) -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(331, 7))
    z -= z.mean(0)
    w = rng.normal(size=(331, 5))  # signed, non-binary: the offset correction must hold
    w[:, 0] = rng.integers(0, 4, 331)  # bootstrap-like counts
    k0 = _dense_gauss0(z, 1.9)
    q, r = kernels.kernel_forms(z, kernels.Kernel("gaussian", 1.9), w, memory_budget_mb=budget_mb)
    assert q == pytest.approx(np.einsum("ic,ij,jc->c", w, k0, w), rel=1e-10)
    assert r == pytest.approx(k0.sum(1), rel=1e-12)


def test_float32_forms_stay_close_to_float64() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(size=(900, 32))
    z -= z.mean(0)
    w = (rng.random((900, 3)) < 0.5).astype(np.float64)
    kern = kernels.Kernel("gaussian", 8.0)
    q64, _ = kernels.kernel_forms(z, kern, w, memory_budget_mb=0.5)
    q32, _ = kernels.kernel_forms(z, kern, w, dtype="float32", memory_budget_mb=0.5)
    assert np.abs(q32 / q64 - 1).max() < 1e-6


def test_cubic_kernel_block_is_the_kid_kernel() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(6, 4)), rng.normal(size=(5, 4))
    got = kernels.kernel_block(a, b, (a * a).sum(1), (b * b).sum(1), kernels.Kernel("cubic", dim=4))
    assert got == pytest.approx((a @ b.T / 4 + 1) ** 3, rel=1e-12)
    gauss = kernels.kernel_block(
        a, b, (a * a).sum(1), (b * b).sum(1), kernels.Kernel("gaussian", 1.5)
    )
    assert gauss == pytest.approx(np.exp(-cdist(a, b, "sqeuclidean") / 4.5), rel=1e-12)


def test_fill_permutations_draws_what_a_permutation_loop_draws() -> None:
    rows = np.zeros((7, 40), dtype=np.float32)
    kernels.fill_permutations(rows, np.random.default_rng(3), 15)
    ref = np.random.default_rng(3)
    for row in rows:
        expected = np.zeros(40)
        expected[ref.permutation(40)[:15]] = 1
        assert np.array_equal(row, expected)


def test_block_size_fits_the_budget_and_leaves_no_sliver() -> None:
    n_total, k = 20_000, 1001
    for budget_mb in (30, 100, 10_000):
        b = kernels._block_size(n_total, k, 4, budget_mb * 2**20)
        assert b * b * 4 + (k + 1) * b * 4 + 8 * b <= budget_mb * 2**20
        assert b <= kernels.MAX_BLOCK
        last = n_total - (-(-n_total // b) - 1) * b
        assert last > b / 2  # the blocks per side are (nearly) equal
    assert kernels._block_size(n_total, k, 4, 0) == kernels.MIN_BLOCK


def test_float32_test_agrees_with_float64_within_the_tie_band() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(700, 24)), rng.normal(size=(650, 24))
    y[:, :3] += 0.08
    r64 = mmd.mmd_test(x, y, permutations=199, seed=3, memory_budget_mb=4)
    r32 = mmd.mmd_test(x, y, permutations=199, seed=3, dtype="float32", memory_budget_mb=4)
    band = 1000 * np.finfo(np.float32).eps * 1.0 / 650  # kernel values <= 1
    assert abs(r32.mmd2 - r64.mmd2) < band / 50
    assert r32.p_value == r64.p_value
    assert abs(r32.null_q95 - r64.null_q95) < band / 50
    assert r64.method == mmd.EXACT_METHOD and r64.n_features == 0
    assert "float32" in r32.method


@pytest.mark.parametrize(("n_total", "block"), [(1, 64), (7, 3), (50, 16), (64, 64)])
def test_upper_tiles_cover_the_upper_triangle_once(n_total: int, block: int) -> None:
    seen = np.zeros((n_total, n_total), dtype=int)
    for i0, i1, j0, j1 in kernels._upper_tiles(n_total, block):
        assert i0 <= j0 and i1 - i0 <= block and j1 - j0 <= block
        seen[i0:i1, j0:j1] += 1
        if i0 != j0:
            assert j0 >= i1  # off-diagonal tiles lie strictly above the diagonal
    assert np.array_equal(np.triu(seen), np.triu(np.ones_like(seen)))  # each pair once
    assert seen.max() == 1  # ... and no tile repeated below the diagonal either


def test_p3_figure_reports_time_memory_and_verdict_at_a_tiny_size() -> None:
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_mmd.py"
    spec = importlib.util.spec_from_file_location("bench_mmd", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    fig = bench.p3_figure(n_per_side=150, d=8, permutations=19)
    assert (fig["n"], fig["d"], fig["dtype"], fig["goal_s"], fig["goal_mb"]) == (
        150,
        8,
        "float32",
        15,
        3072,
    )
    assert 0 < fig["peak_traced_mb"] <= fig["peak_mb"] and fig["peak_rss_delta_mb"] >= 0
    assert fig["pass"] == (fig["seconds"] <= 15 and fig["peak_mb"] <= 3072)
    assert "float32" in fig["method"] and 1 / 20 <= fig["p_value"] <= 1


def test_cubic_mmd2_of_samples_matches_the_dense_kid_formula() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(140, 6)), rng.normal(size=(90, 6)) + 0.3

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a @ b.T / 6 + 1.0) ** 3

    kxx, kyy = k(x, x), k(y, y)
    dense = (
        (kxx.sum() - np.trace(kxx)) / (140 * 139)
        + (kyy.sum() - np.trace(kyy)) / (90 * 89)
        - 2 * k(x, y).mean()
    )
    got = kernels.mmd2_of_samples(x, y, kernels.Kernel("cubic", dim=6), memory_budget_mb=0.05)
    assert got == pytest.approx(dense, rel=1e-10)


def test_weight_columns_per_pass_are_capped_by_the_data_not_the_budget() -> None:
    # 1 + 500 permutations + 600 bootstrap columns at 2,000 rows, d = 256, float64: the
    # budget alone would allow all 1,101 columns (17 MB); the cap keeps them <= the factors.
    chunk = kernels._chunk_columns(2000, 256, 1101, 8, 256 * 2**20)
    assert chunk + 1 == 2 * (256 + 2)
    assert kernels._chunk_columns(2000, 4, 1101, 8, 256 * 2**20) + 1 == kernels.MIN_COLUMNS
    assert kernels._chunk_columns(2000, 256, 40, 8, 256 * 2**20) == 40  # fewer columns: all
    assert kernels._chunk_columns(2000, 256, 1101, 8, 12 * 2**20) < 2 * 258 - 1  # budget binds


def test_mmd_test_working_set_stays_near_the_data_size() -> None:
    import tracemalloc

    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(1000, 64)), rng.normal(size=(1000, 64))
    data_mb = x.nbytes * 2 / 2**20  # 1 MB
    tracemalloc.start()
    try:
        res = mmd.mmd_test(x, y, permutations=500, seed=0, n_boot=200)
        peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    # copies of the data (z-scored, pooled, two factors), weights <= factors, one 512² tile:
    # ~9 MB here; before the caps (all columns, 1,024² tiles) it was ~22 MB.
    assert peak_mb < 6 * data_mb + 6
    assert 0 < res.p_value <= 1
