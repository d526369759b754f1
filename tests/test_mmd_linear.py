"""Random-Fourier-feature MMD test against dense references and the exact statistic."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from domain_gap.analysis import mmd, mmd_linear


def _gauss(a: np.ndarray, b: np.ndarray, bw: float) -> np.ndarray:
    return np.exp(-cdist(a, b, "sqeuclidean") / (2 * bw**2))


def _dense_unbiased(g: np.ndarray, n: int) -> float:
    """Unbiased MMD² from a pooled Gram matrix (source rows first), written plainly."""
    m = len(g) - n
    gxx, gyy, gxy = g[:n, :n], g[n:, n:], g[:n, n:]
    return float(
        (gxx.sum() - np.trace(gxx)) / (n * (n - 1))
        + (gyy.sum() - np.trace(gyy)) / (m * (m - 1))
        - 2 * gxy.mean()
    )


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    return rng.normal(size=(60, 4)), rng.normal(size=(45, 4)) + 0.3


def test_features_have_unit_norm_and_approximate_the_gaussian_kernel() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(12, 3))
    phi = mmd_linear.rff_features(z, 1.5, 32768, seed=1, dtype="float64")
    assert np.linalg.norm(phi, axis=1) == pytest.approx(np.ones(12), abs=1e-12)
    err = np.abs(phi @ phi.T - _gauss(z, z, 1.5))
    assert err.max() < 5 / np.sqrt(32768 / 2)  # each entry: a mean of 16,384 terms in [-1, 1]
    with pytest.raises(ValueError, match="even"):
        mmd_linear.rff_features(z, 1.5, 33, seed=1)


def test_rff_statistics_are_the_feature_kernel_u_and_v_statistics(pair) -> None:
    x, y = pair
    phi = mmd_linear.rff_features(np.vstack([x, y]), 1.2, 256, seed=4, dtype="float64")
    g = phi @ phi.T
    n = len(x)
    assert mmd_linear.rff_mmd2(x, y, 1.2, 256, seed=4) == pytest.approx(
        _dense_unbiased(g, n), rel=1e-10
    )
    v = g[:n, :n].mean() + g[n:, n:].mean() - 2 * g[:n, n:].mean()
    assert mmd_linear.rff_mmd2(x, y, 1.2, 256, seed=4, biased=True) == pytest.approx(v, rel=1e-10)


def test_rff_statistic_approaches_the_exact_mmd2_as_features_grow(pair) -> None:
    x, y = pair
    bw = 1.2
    kxx, kyy, kxy = _gauss(x, x, bw), _gauss(y, y, bw), _gauss(x, y, bw)
    v_exact = kxx.mean() + kyy.mean() - 2 * kxy.mean()  # biased V-statistic

    def mean_error(features: int) -> float:
        return float(
            np.mean(
                [
                    abs(mmd_linear.rff_mmd2(x, y, bw, features, seed=s, biased=True) - v_exact)
                    for s in range(8)
                ]
            )
        )

    small, large = mean_error(64), mean_error(16384)
    assert large < small / 4  # Monte Carlo error ~ D^-1/2: 256x the features, 1/16 in theory
    assert large < 0.05 * v_exact
    u = np.mean([mmd_linear.rff_mmd2(x, y, bw, 16384, seed=s) for s in range(8)])
    assert u == pytest.approx(mmd.mmd2_unbiased(x, y, bw), rel=0.05)


def _naive_rff_test(x, y, bw, features, permutations, seed):
    """Documented scheme as a plain loop: same features, same permutation draws."""
    z = np.vstack([x, y])
    g = mmd_linear.rff_features(z, bw, features, seed, dtype="float64")
    g = g @ g.T
    n = len(x)
    obs = _dense_unbiased(g, n)
    rng = np.random.default_rng(seed)
    null = []
    for _ in range(permutations):
        idx = rng.permutation(len(z))  # source: idx[:n]
        null.append(_dense_unbiased(g[np.ix_(idx, idx)], n))
    null = np.array(null)
    return obs, (1 + np.sum(null >= obs - 1e-12)) / (permutations + 1), null


def test_permutation_test_equals_a_naive_loop_in_several_chunks(pair) -> None:
    x, y = pair
    obs, p_ref, null = _naive_rff_test(x, y, 1.2, 128, 149, seed=3)
    res = mmd_linear.rff_mmd_test(
        x, y, 1.2, 149, 3, features=128, dtype="float64", standardize=False, memory_budget_mb=0
    )  # a zero budget forces chunks of 64 permutation rows
    assert res.mmd2 == pytest.approx(obs, rel=1e-10)
    assert res.p_value == pytest.approx(p_ref)
    assert res.null_q95 == pytest.approx(np.quantile(null, 0.95), rel=1e-9)
    assert res.method == mmd_linear.rff_method(128) and res.n_features == 128
    f32 = mmd_linear.rff_mmd_test(x, y, 1.2, 149, 3, features=128, standardize=False)
    assert f32.p_value == res.p_value and f32.mmd2 == pytest.approx(obs, abs=1e-6)


def test_bootstrap_excludes_copies_like_a_naive_loop(pair) -> None:
    x, y = pair
    n, m, n_boot, seed = len(x), len(y), 30, 2
    phi = mmd_linear.rff_features(np.vstack([x, y]), 1.2, 64, seed, dtype="float64")
    g = phi @ phi.T
    rng = np.random.default_rng([seed, 1])  # the exact test's resamples
    reps = []
    for _ in range(n_boot):
        ix, iy = rng.integers(0, n, n), rng.integers(0, m, m) + n
        off_x, off_y = ix[:, None] != ix[None, :], iy[:, None] != iy[None, :]
        reps.append(
            g[np.ix_(ix, ix)][off_x].mean()
            + g[np.ix_(iy, iy)][off_y].mean()
            - 2 * g[np.ix_(ix, iy)].mean()
        )
    res = mmd_linear.rff_mmd_test(
        x, y, 1.2, 19, seed, features=64, n_boot=n_boot, dtype="float64", standardize=False
    )
    assert res.ci == pytest.approx(list(np.quantile(reps, [0.025, 0.975])), rel=1e-9)
    assert "30 resamples" in res.ci_method


def test_null_calibration_on_small_splits() -> None:
    """Exact as a permutation test: over 60 null splits about 3 rejections are expected;
    more than 9 has probability < 0.1 % for a calibrated test."""
    rng = np.random.default_rng(11)
    p_values = []
    for t in range(60):
        z = rng.normal(size=(80, 6))
        p_values.append(
            mmd_linear.rff_mmd_test(z[:40], z[40:], permutations=99, seed=t, features=256).p_value
        )
    p = np.array(p_values)
    assert np.sum(p < 0.05) <= 9
    assert 0.35 < p.mean() < 0.65  # p-values near uniform, not piled at 1
    shifted = rng.normal(size=(40, 6)) + 1.0
    assert mmd_linear.rff_mmd_test(z[:40], shifted, permutations=99, features=256).p_value < 0.05
