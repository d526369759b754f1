"""Latent-gap statistics against independent references (closed forms, brute force, sklearn)."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import scipy.linalg
from scipy import stats
from scipy.spatial.distance import cdist
from sklearn.metrics import roc_auc_score

from domain_gap.analysis import bbsd, c2st, frechet, kid, latent, mmd
from domain_gap.analysis.results import to_json
from domain_gap.analysis.stats_utils import bh_adjust, bootstrap_ci


def _gauss(a: np.ndarray, b: np.ndarray, bw: float) -> np.ndarray:
    return np.exp(-cdist(a, b, "sqeuclidean") / (2 * bw**2))


def _brute_mmd2(x: np.ndarray, y: np.ndarray, bw: float) -> float:
    n, m = len(x), len(y)
    kxx, kyy, kxy = _gauss(x, x, bw), _gauss(y, y, bw), _gauss(x, y, bw)
    return float(
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2 * kxy.mean()
    )


def _closed_form_fd(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


@pytest.fixture
def small_pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng.normal(size=(23, 6)), rng.normal(size=(19, 6)) + 0.4


# ---------------------------------------------------------------- Fréchet distance


def test_fd_converges_to_closed_form_on_gaussians() -> None:
    rng = np.random.default_rng(0)
    d = 4
    a = rng.normal(size=(d, d))
    s1 = a @ a.T / d + 0.5 * np.eye(d)
    b = rng.normal(size=(d, d))
    s2 = b @ b.T / d + 0.2 * np.eye(d)
    mu1, mu2 = np.zeros(d), np.array([1.0, -0.5, 0.0, 2.0])
    truth = _closed_form_fd(mu1, s1, mu2, s2)
    x = rng.multivariate_normal(mu1, s1, size=40000)
    y = rng.multivariate_normal(mu2, s2, size=40000)
    res = frechet.frechet_distance(x, y)
    assert not res.reduced and res.dims == d
    assert res.value == pytest.approx(truth, rel=0.03)


def test_fd_matches_sqrtm_route_on_samples(small_pair) -> None:
    x, y = small_pair
    ref = _closed_form_fd(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert frechet.frechet_distance(x, y).value == pytest.approx(ref, rel=1e-8)


def test_fd_with_fewer_samples_than_dims_is_finite_real_and_reduced() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(12, 300)), rng.normal(size=(9, 300)) + 0.1
    res = frechet.frechet_distance(x, y, max_dim=64)
    assert res.reduced is True
    assert res.dims == 8  # min(64, min(n, m) - 1, d)
    assert isinstance(res.value, float) and np.isfinite(res.value) and res.value >= 0
    assert "PCA" in res.note
    json.dumps(to_json(res), allow_nan=False)


def test_fd_of_identical_samples_is_zero_not_negative() -> None:
    x = np.random.default_rng(2).normal(size=(50, 5))
    assert frechet.frechet_distance(x, x.copy()).value == pytest.approx(0.0, abs=1e-9)


def test_fd_ci_covers_estimate_scale_and_reports_bias() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(80, 5)), rng.normal(size=(80, 5)) + 1.0
    res = frechet.frechet_with_ci(x, y, n_boot=60)
    lo, hi = res.ci
    assert 0 <= lo <= hi
    assert lo <= 5.0 <= hi + 1.0  # truth is ‖μ‖² = 5; generous since n is small
    assert res.bias_corrected <= res.value


# ---------------------------------------------------------------- MMD


def test_mmd2_matches_brute_force_in_one_and_many_blocks(small_pair) -> None:
    x, y = small_pair
    bw = 1.7
    ref = _brute_mmd2(x, y, bw)
    assert mmd.mmd2_unbiased(x, y, bw) == pytest.approx(ref, rel=1e-10)
    many_blocks = mmd.mmd2_unbiased(x, y, bw, memory_budget_mb=1e-3)
    assert many_blocks == pytest.approx(ref, rel=1e-10)
    assert mmd.mmd2_unbiased(x, y, bw, dtype="float32") == pytest.approx(ref, abs=1e-5)


def _gauss_expect(mu: np.ndarray, s: np.ndarray, bw: float) -> float:
    """E exp(-‖D‖²/2bw²) for D ~ N(mu, s)."""
    d = len(mu)
    quad = mu @ np.linalg.solve(s + bw**2 * np.eye(d), mu)
    return float(np.linalg.det(np.eye(d) + s / bw**2) ** -0.5 * np.exp(-0.5 * quad))


def test_mmd2_is_unbiased_for_the_gaussian_closed_form() -> None:
    rng = np.random.default_rng(21)
    d, bw = 2, 1.0
    mu, s1, s2 = np.array([0.6, -0.3]), np.diag([1.0, 0.5]), np.array([[0.8, 0.2], [0.2, 0.6]])
    zero = np.zeros(d)
    truth = (
        _gauss_expect(zero, 2 * s1, bw)
        + _gauss_expect(zero, 2 * s2, bw)
        - 2 * _gauss_expect(mu, s1 + s2, bw)
    )
    est = [
        mmd.mmd2_unbiased(
            rng.multivariate_normal(zero, s1, 500), rng.multivariate_normal(mu, s2, 500), bw
        )
        for _ in range(20)
    ]
    se = np.std(est, ddof=1) / np.sqrt(len(est))
    assert abs(np.mean(est) - truth) < 4 * se
    assert truth > 10 * se  # the check has power: the gap is far from 0


def test_median_bandwidth_is_median_pairwise_distance(small_pair) -> None:
    x, _ = small_pair
    assert mmd.median_bandwidth(x, standardize=False) == pytest.approx(
        np.median(cdist(x, x)[np.triu_indices(23, 1)])
    )
    z = (x - x.mean(0)) / x.std(0)
    assert mmd.median_bandwidth(x) == pytest.approx(np.median(cdist(z, z)[np.triu_indices(23, 1)]))
    assert mmd.median_bandwidth(np.ones((10, 3))) == 1.0
    big = np.random.default_rng(0).normal(size=(300, 4))
    assert mmd.median_bandwidth(big, max_points=50, seed=1) == mmd.median_bandwidth(
        big, max_points=50, seed=1
    )


def _naive_p_value(x, y, bw, permutations, seed) -> float:
    """The documented permutation scheme as a plain loop over dense brute-force MMD²."""
    z = np.vstack([x, y])
    n, total = len(x), len(x) + len(y)
    obs = _brute_mmd2(x, y, bw)
    rng = np.random.default_rng(seed)
    count = 0
    for _ in range(permutations):
        idx = rng.permutation(total)
        mask = np.zeros(total, dtype=bool)
        mask[idx[:n]] = True
        count += _brute_mmd2(z[mask], z[~mask], bw) >= obs - 1e-12
    return (1 + count) / (permutations + 1)


def test_permutation_p_value_equals_naive_loop(small_pair) -> None:
    x, y = small_pair
    bw = mmd.median_bandwidth(x, standardize=False)
    ref = _naive_p_value(x, y, bw, 99, seed=5)
    res = mmd.mmd_test(x, y, bw, permutations=99, seed=5, standardize=False)
    assert res.p_value == pytest.approx(ref)
    assert res.mmd2 == pytest.approx(_brute_mmd2(x, y, bw), rel=1e-10)
    # a budget this small forces many column passes and blocks: same answer
    chunked = mmd.mmd_test(
        x, y, bw, permutations=99, seed=5, memory_budget_mb=1e-3, standardize=False
    )
    assert chunked.p_value == res.p_value


def test_standardized_test_is_the_raw_test_on_pooled_z_scores(small_pair) -> None:
    x, y = small_pair
    z = np.vstack([x, y])
    xs, ys = (x - z.mean(0)) / z.std(0), (y - z.mean(0)) / z.std(0)
    raw = mmd.mmd_test(xs, ys, permutations=49, seed=1, standardize=False)
    std = mmd.mmd_test(x, y, permutations=49, seed=1)
    assert std.standardized and not raw.standardized
    assert std.bandwidth == pytest.approx(mmd.median_bandwidth(xs, seed=1, standardize=False))
    assert std.mmd2 == pytest.approx(raw.mmd2) and std.p_value == raw.p_value
    # a constant feature neither breaks nor changes the test
    xc, yc = np.c_[x, np.ones(len(x))], np.c_[y, np.ones(len(y))]
    assert mmd.mmd_test(xc, yc, permutations=49, seed=1).mmd2 == pytest.approx(std.mmd2)


def test_mmd_test_stays_within_its_memory_budget() -> None:
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(1500, 16)), rng.normal(size=(1500, 16))
    dense_mib = (3000**2) * 8 / 2**20  # one float64 pooled kernel matrix: 69 MiB
    bw = mmd.median_bandwidth(x)
    tracemalloc.start()
    mmd.mmd_test(x, y, bw, permutations=50, memory_budget_mb=8)
    peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    assert peak_mib < 10 < dense_mib


def test_p_value_never_zero_and_huge_shift_hits_floor() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(30, 3)), rng.normal(size=(30, 3)) + 10
    res = mmd.mmd_test(x, y, permutations=49, seed=0)
    assert res.p_value == pytest.approx(1 / 50)
    assert res.p_value > 0


def test_mmd_bootstrap_excludes_self_pairs_like_a_naive_loop(small_pair) -> None:
    x, y = small_pair
    bw, n_boot, seed = 1.3, 40, 2
    n, m = len(x), len(y)
    z = np.vstack([x, y])
    kz = _gauss(z, z, bw)
    rng = np.random.default_rng([seed, 1])
    reps = []
    for _ in range(n_boot):
        ix = rng.integers(0, n, n)
        iy = rng.integers(0, m, m) + n
        kxx, kyy = kz[np.ix_(ix, ix)], kz[np.ix_(iy, iy)]
        off_x, off_y = ix[:, None] != ix[None, :], iy[:, None] != iy[None, :]
        reps.append(kxx[off_x].mean() + kyy[off_y].mean() - 2 * kz[np.ix_(ix, iy)].mean())
    ref = np.quantile(reps, [0.025, 0.975])
    res = mmd.mmd_test(x, y, bw, permutations=19, seed=seed, n_boot=n_boot, standardize=False)
    assert res.ci == pytest.approx(list(ref), rel=1e-9)
    assert res.ci[0] <= res.mmd2 <= res.ci[1]


def test_small_type_one_error_check() -> None:
    """Null splits of one Gaussian sample: rejection rate stays near alpha (wide tolerance)."""
    rng = np.random.default_rng(11)
    rejections = 0
    trials = 40
    for t in range(trials):
        z = rng.normal(size=(60, 4))
        res = mmd.mmd_test(z[:30], z[30:], permutations=99, seed=t)
        rejections += res.p_value < 0.05
    assert rejections / trials <= 0.15


# ---------------------------------------------------------------- KID


def test_kid_full_sample_matches_brute_force_cubic_kernel(small_pair) -> None:
    x, y = small_pair
    d = x.shape[1]

    def k(a, b):
        return (a @ b.T / d + 1) ** 3

    n, m = len(x), len(y)
    ref = (
        (k(x, x).sum() - np.trace(k(x, x))) / (n * (n - 1))
        + (k(y, y).sum() - np.trace(k(y, y))) / (m * (m - 1))
        - 2 * k(x, y).mean()
    )
    res = kid.kid(x, y, subsets=5, subset_size=m, seed=0, n_boot=30)
    assert res.full_sample == pytest.approx(ref, rel=1e-9)
    one = kid.kid(x[:m], y, subsets=3, subset_size=m, seed=0)
    assert one.mean == pytest.approx(kid.kid(x[:m], y, subsets=1, subset_size=m).full_sample)
    assert one.std is None  # every subset is the whole sample: no spread to report
    lo, hi = res.ci
    assert lo <= res.full_sample <= hi


def test_kid_reports_no_spread_when_every_subset_is_the_whole_sample() -> None:
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(30, 4)) + 0.2
    res = kid.kid(x, y, subsets=5, subset_size=30)
    assert res.std is None  # was the SD of five identical values, ~1e-16
    assert "equals both sample sizes" in res.std_note
    assert res.mean == pytest.approx(res.full_sample, rel=1e-9)
    row = kid.kid_gap_test(res)
    assert row.spread is None and row.name == "KID (mean over subsets)" and row.note
    # a smaller subset does vary: a real spread, no note
    part = kid.kid(x, y, subsets=5, subset_size=20)
    assert part.std is not None and part.std > 1e-6 and part.std_note == ""


def test_kid_rejects_bad_subset_size(small_pair) -> None:
    x, y = small_pair
    with pytest.raises(ValueError, match="subset_size"):
        kid.kid(x, y, subset_size=100)


# ---------------------------------------------------------------- C2ST


def test_c2st_auc_matches_sklearn_and_standard_errors_match_loops() -> None:
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(60, 5)), rng.normal(size=(50, 5)) + 0.5
    res = c2st.c2st(x, y, seed=1)
    probs = np.array(res.probs)
    labels = np.r_[np.zeros(60), np.ones(50)]
    assert res.auc == pytest.approx(roc_auc_score(labels, probs))
    pos, neg = probs[60:], probs[:60]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(1), psi.mean(0)
    se_delong = np.sqrt(v10.var(ddof=1) / 50 + v01.var(ddof=1) / 60)
    assert res.auc_se_delong == pytest.approx(se_delong)
    folds = np.array(res.fold_auc)
    assert len(folds) == 5
    se_cv = folds.std(ddof=1) * np.sqrt(1 / 5 + 1 / 4)  # Nadeau-Bengio: n_test/n_train = 1/4
    assert res.auc_se_cv == pytest.approx(se_cv)
    se = max(se_delong, se_cv)
    assert res.auc_se == pytest.approx(se)
    t = stats.t.ppf(0.975, 4)
    assert res.auc_ci == pytest.approx([res.auc - t * se, min(1.0, res.auc + t * se)])
    assert res.p_value == pytest.approx(stats.t.sf((res.auc - 0.5) / se, 4))
    err = ((probs[:60] >= 0.5).mean() + (probs[60:] < 0.5).mean()) / 2
    assert res.error == pytest.approx(err)
    assert res.pad == pytest.approx(max(0.0, 2 * (1 - 2 * err)))
    top = res.most_target_like_source
    assert probs[top[0]] == probs[:60].max()
    assert probs[60 + res.most_source_like_target[0]] == probs[60:].min()


def test_c2st_separated_vs_identical_domains() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(size=(80, 6))
    far = c2st.c2st(x, rng.normal(size=(80, 6)) + 3, seed=0)
    assert far.auc > 0.98 and far.pad > 1.8
    assert 0 < far.p_value < 1e-4
    same = c2st.c2st(x, rng.normal(size=(80, 6)), seed=0)
    lo, hi = same.auc_ci
    assert lo < 0.5 < hi


# ---------------------------------------------------------------- BBSD and bootstrap


def test_bbsd_matches_scipy_ks_with_bonferroni() -> None:
    rng = np.random.default_rng(10)
    px = rng.dirichlet(np.ones(3), size=100)
    py = rng.dirichlet(np.ones(3), size=80)
    py[:, 0] = np.clip(py[:, 0] + 0.3, 0, 1)
    res = bbsd.bbsd(px, py, class_names=["road", "car", "sky"])
    for j, row in enumerate(res.per_class):
        ref = stats.ks_2samp(px[:, j], py[:, j])
        assert row.ks == pytest.approx(ref.statistic)
        assert row.p_adjusted == pytest.approx(min(1.0, 3 * ref.pvalue))
    assert res.per_class[0].significant and res.any_significant
    with pytest.raises(ValueError, match="class_names"):
        bbsd.bbsd(px, py, class_names=["a"])


def test_bootstrap_ci_equals_replicates_of_a_plain_loop() -> None:
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(40, 2)), rng.normal(size=(30, 2)) + 1

    def stat(a, b):
        return float(b[:, 0].mean() - a[:, 0].mean())

    g = np.random.default_rng(3)
    reps = []
    for _ in range(100):
        ix, iy = g.integers(0, 40, 40), g.integers(0, 30, 30)
        reps.append(stat(x[ix], y[iy]))
    lo, hi = np.quantile(reps, [0.05, 0.95])
    assert bootstrap_ci(stat, x, y, n_boot=100, alpha=0.1, seed=3) == pytest.approx([lo, hi])
    theta = stat(x, y)
    basic = bootstrap_ci(stat, x, y, n_boot=100, alpha=0.1, seed=3, method="basic")
    assert basic == pytest.approx([2 * theta - hi, 2 * theta - lo])


def test_bh_adjust_against_hand_calculation_and_scipy() -> None:
    p = [0.01, 0.04, 0.03, 0.20, None]
    # sorted 0.01, 0.03, 0.04, 0.20 times 4/rank: 0.04, 0.06, 0.0533, 0.20; step-up minimum
    expected = [0.04, 0.16 / 3, 0.16 / 3, 0.20, None]
    got = bh_adjust(p)
    assert got[:4] == pytest.approx(expected[:4]) and got[4] is None
    assert got[:4] == pytest.approx(list(stats.false_discovery_control([0.01, 0.04, 0.03, 0.2])))


# ---------------------------------------------------------------- assembly and errors


def test_latent_gap_verdicts_and_json() -> None:
    rng = np.random.default_rng(13)
    x = rng.normal(size=(60, 8))
    px, py = rng.dirichlet(np.ones(3), size=60), rng.dirichlet(np.ones(3), size=50)
    shifted = latent.latent_gap(
        x,
        rng.normal(size=(50, 8)) + 0.8,
        permutations=99,
        n_boot=30,
        kid_subsets=5,
        probs_source=px,
        probs_target=py,
    )
    assert shifted.significant and shifted.verdict.significant
    assert shifted.bbsd.per_class[0].ks == pytest.approx(
        stats.ks_2samp(px[:, 0], py[:, 0]).statistic
    )
    for key in ("frechet", "mmd", "kid"):
        lo, hi = getattr(shifted, key).ci
        assert lo is not None and hi is not None and lo <= hi
    same = latent.latent_gap(
        x, rng.normal(size=(50, 8)), permutations=99, n_boot=30, kid_subsets=5, seed=1
    )
    assert not same.significant and not same.verdict.significant
    assert same.bbsd is None
    json.dumps(to_json(shifted), allow_nan=False)


def test_bad_inputs_raise_clear_errors(small_pair) -> None:
    x, y = small_pair
    with pytest.raises(ValueError, match="same space"):
        mmd.mmd_test(x, y[:, :3])
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        frechet.frechet_distance(bad, y)
    with pytest.raises(ValueError, match="bandwidth"):
        mmd.mmd2_unbiased(x, y, 0.0)
    with pytest.raises(ValueError, match="2-D"):
        c2st.c2st(x[:, 0], y)


def test_latent_gap_runs_exact_up_to_the_threshold_then_random_features(monkeypatch) -> None:
    assert latent.choose_mmd(latent.EXACT_MAX_POOLED) == "exact"
    assert latent.choose_mmd(latent.EXACT_MAX_POOLED + 1) == "linear"
    assert latent.choose_mmd(10, "linear") == "linear"
    with pytest.raises(ValueError, match="mmd"):
        latent.choose_mmd(10, "fast")  # type: ignore[arg-type]
    rng = np.random.default_rng(14)
    x, y = rng.normal(size=(60, 8)), rng.normal(size=(50, 8)) + 0.8
    kwargs = {"permutations": 99, "n_boot": 20, "kid_subsets": 3}
    exact = latent.latent_gap(x, y, **kwargs)
    assert exact.mmd.method == mmd.EXACT_METHOD and exact.mmd.n_features == 0
    monkeypatch.setattr(latent, "EXACT_MAX_POOLED", 100)  # 110 pooled rows: above it
    linear = latent.latent_gap(x, y, mmd_features=512, **kwargs)
    assert linear.mmd.method.startswith("random Fourier features (D=512")
    assert linear.mmd.n_features == 512 and linear.significant
    row = next(t for t in linear.tests if t.name.startswith("MMD"))
    assert row.test == "99 permutations on 512 random Fourier features"
    assert linear.mmd.mmd2 == pytest.approx(exact.mmd.mmd2, rel=0.25)  # same estimand
    forced = latent.latent_gap(x, y, mmd="exact", **kwargs)
    assert forced.mmd == exact.mmd
