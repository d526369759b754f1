"""What-if statistics: paired gap deltas against direct computation, frozen scaling, the verdict."""

from __future__ import annotations

import numpy as np
import pytest

from domain_gap.analysis import c2st, mmd
from domain_gap.analysis.concepts import fit_concepts
from domain_gap.analysis.extract import Features
from domain_gap.analysis.latent import latent_gap
from domain_gap.analysis.results import FitInfo
from domain_gap.analysis.whatif import Fix, Settings, what_if


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.normal(size=(40, 5)), rng.normal(size=(30, 5)) + 0.7


def test_frozen_scale_equals_the_pooled_default(pair) -> None:
    x, y = pair
    default = mmd.mmd_test(x, y, 1.5, permutations=19, seed=1)
    frozen = mmd.mmd_test(x, y, 1.5, permutations=19, seed=1, scale=mmd.pooled_scale(x, y))
    assert frozen.mmd2 == pytest.approx(default.mmd2, rel=1e-12)
    assert frozen.p_value == default.p_value
    other = mmd.mmd_test(x, y, 1.5, permutations=19, seed=1, scale=(np.zeros(5), np.ones(5)))
    assert other.mmd2 != pytest.approx(default.mmd2)


def test_paired_mmd_delta_equals_the_two_tests_it_compares(pair) -> None:
    x, y = pair
    y_after = y - 0.5  # a fix that moves the target towards the source
    scale = mmd.pooled_scale(x, y)
    d = mmd.paired_mmd_delta(x, y, y_after, 1.5, scale, n_boot=100, seed=0)
    before = mmd.mmd_test(x, y, 1.5, permutations=19, scale=scale).mmd2
    after = mmd.mmd_test(x, y_after, 1.5, permutations=19, scale=scale).mmd2
    assert d.before == pytest.approx(before, rel=1e-10)
    assert d.after == pytest.approx(after, rel=1e-10)
    assert d.delta == pytest.approx(after - before, rel=1e-10)
    assert d.ci_high < 0 and d.significant  # the gap shrank, and the interval says so
    same = mmd.paired_mmd_delta(x, y, y.copy(), 1.5, scale, n_boot=50, seed=0)
    assert same.delta == 0.0 and same.ci_low == same.ci_high == 0.0 and not same.significant


def test_paired_auc_delta_equals_the_auc_difference(pair) -> None:
    x, y = pair
    before = c2st.c2st(x, y, seed=0)
    after = c2st.c2st(x, y - 0.7, seed=0)
    d = c2st.paired_auc_delta(before, after, n_boot=100, seed=0)
    assert d.delta == pytest.approx(after.auc - before.auc)
    assert d.ci_low <= d.delta <= d.ci_high
    assert d.ci_high < 0  # the domains became hard to tell apart
    itself = c2st.paired_auc_delta(before, before, n_boot=20, seed=0)
    assert itself.delta == 0.0 and itself.ci_low == itself.ci_high == 0.0


def test_concepts_assign_new_rows_to_the_fitted_clusters() -> None:
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0, 0.0], [6.0, 6.0, 0.0], [0.0, 6.0, 6.0]])
    x = np.vstack([c + rng.normal(size=(30, 3)) for c in centers])
    concepts = fit_concepts(x, 3, seed=0)
    np.testing.assert_array_equal(concepts.assign(x), concepts.labels)
    moved = concepts.assign(x[:30] + np.array([6.0, 6.0, 0.0]))  # blob 0 shifted onto blob 1
    assert (moved == concepts.labels[30]).mean() > 0.9


def _features(emb: np.ndarray, conf: np.ndarray, domain: str, loss: float) -> Features:
    n, c = len(emb), conf.shape[1]
    calib = np.zeros((n, 15, 3))
    calib[:, -1, 0] = conf.sum((1, 2))
    calib[:, -1, 1] = conf.sum((1, 2)) * 0.97
    calib[:, -1, 2] = np.trace(conf, axis1=1, axis2=2)
    return Features(
        sample_ids=np.array([f"{domain}/{i}" for i in range(n)]),
        domains=np.full(n, domain),
        subsets=np.full(n, "val"),
        embeddings=emb.astype(np.float32),
        class_emb=np.zeros((n, c, emb.shape[1]), np.float16),
        class_counts=np.zeros((n, c), np.int64),
        loss=np.full(n, loss),
        miou=np.full(n, 0.5),
        class_iou=np.full((n, c), 0.5),
        pixel_acc=np.full(n, 0.5),
        confusion=conf,
        prob_mean=np.full((n, c), 1.0 / c),
        pred_frac=np.full((n, c + 1), 1.0 / (c + 1)),
        labelled=np.ones(n, bool),
        calibration=calib,
        metadata={"brightness": emb[:, 0].astype(np.float64) * 10 + 100},
    )


def _confusions(n: int, correct: int, wrong: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 19, 19) confusions: every class present, ``correct`` hits and ``wrong`` misses each."""
    conf = np.zeros((n, 19, 19), np.int64)
    for i in range(n):
        hits = correct + rng.integers(-3, 4, 19)
        conf[i, np.arange(19), np.arange(19)] = hits
        conf[i, np.arange(19), (np.arange(19) + 1) % 19] = wrong + rng.integers(0, 3, 19)
    return conf


def test_a_fix_that_closes_the_gap_but_lowers_miou_is_harmful() -> None:
    """BN re-estimation under a class-mix shift: the target looks like the source to the gap
    statistics, yet the model does worse. The verdict rests on ΔmIoU, so it says "harms"."""
    rng = np.random.default_rng(1)
    n, m, d = 40, 30, 6
    source = _features(rng.normal(size=(n, d)), _confusions(n, 40, 5, rng), "cs", 0.3)
    before = _features(rng.normal(size=(m, d)) + 1.0, _confusions(m, 30, 10, rng), "kitti", 0.6)
    after_emb = rng.normal(size=(m, d))  # now indistinguishable from the source
    after = _features(after_emb, _confusions(m, 20, 20, rng), "kitti", 0.9)
    after.sample_ids = before.sample_ids.copy()
    settings = Settings(permutations=19, n_boot=100, max_dim=4, alpha=0.05, seed=0)
    bandwidth = mmd.median_bandwidth(source.embeddings)
    base_gap = latent_gap(
        source.embeddings, before.embeddings, bandwidth=bandwidth, permutations=19, n_boot=20
    )
    concepts = fit_concepts(np.vstack([source.embeddings, before.embeddings]), 3, seed=0)
    fix = Fix("adabn", "adabn", {}, "k" * 64, FitInfo("train", ("train",), 8, 8), after)
    section = what_if(source, before, (fix,), base_gap, concepts, bandwidth, settings)
    result = section.mitigations[0]
    gap = {g.name: g for g in result.gap}
    assert gap["MMD²"].delta < 0 and gap["MMD²"].ci_high < 0  # the gap shrank
    assert result.deltas.miou.delta < 0 and result.deltas.miou.ci_high < 0
    assert result.verdict.verdict == "harms" and "shrank" in result.verdict.note
    assert section.best is None  # nothing helps
    assert result.gap_after.mmd.bandwidth == pytest.approx(bandwidth)  # frozen kernel
    dec = section.decomposition
    assert dec is not None
    assert dec.class_mix.value + dec.appearance.value == pytest.approx(dec.total.value)
    assert result.most_worsened and all(c.delta_miou < 0 for c in result.most_worsened)
