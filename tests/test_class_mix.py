"""Class mix versus appearance: weights, decomposition and recovery checked by simulation."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from scipy.special import expit, logit

from domain_gap import metrics
from domain_gap.analysis import class_mix as cmx
from domain_gap.analysis.results import to_json

C = 5
BASE_ACC = np.array([0.95, 0.85, 0.6, 0.7, 0.5])
SCENES = np.array([[8.0, 4.0, 1.0, 3.0, 0.5], [2.0, 1.0, 6.0, 1.0, 3.0]])
"""Dirichlet class-fraction parameters of two scene types (say urban and rural)."""


def _ground_truth(rng: np.random.Generator, n: int, p_rural: float, pixels: int = 2000):
    """Per-image class fractions and pixel counts; domains differ only in the scene-type mix."""
    rural = (rng.random(n) < p_rural).astype(int)
    frac = np.stack([rng.dirichlet(SCENES[r]) for r in rural])
    return frac, rng.multinomial(pixels, frac)


def _confusions(rng: np.random.Generator, frac, gt, appearance: float = 0.0) -> np.ndarray:
    """Accuracy depends on content (a class is easier where it covers more of the image) and on
    ``appearance`` (a logit offset: the same content looking different). Misses go to c + 1."""
    acc = expit(logit(BASE_ACC) + 1.5 * (np.sqrt(frac) - 0.4) - appearance)
    right = rng.binomial(gt, acc)
    cm = np.zeros((len(gt), C, C))
    k = np.arange(C)
    cm[:, k, k] = right
    cm[:, k, (k + 1) % C] = gt - right
    return cm


def _domain(rng, n: int, p_rural: float, appearance: float = 0.0) -> np.ndarray:
    return _confusions(rng, *_ground_truth(rng, n, p_rural), appearance)


def _covers(comp: cmx.Component, value: float) -> bool:
    return comp.ci_low <= value <= comp.ci_high


def test_pure_class_mix_shift_is_recovered_by_the_weights() -> None:
    rng = np.random.default_rng(0)
    source, target = _domain(rng, 300, 0.2), _domain(rng, 200, 0.7)
    res = cmx.class_mix_decomposition(source, target, n_boot=150, seed=0)
    assert res.total.significant and res.total.value > 0.01
    assert _covers(res.appearance, 0.0) and abs(res.appearance.value) < 0.25 * res.total.value
    assert abs(res.miou_weighted_source - res.miou_target) < 0.25 * res.total.value
    assert 0.75 <= res.class_mix.share <= 1.25 and res.class_mix.significant
    assert res.dominant == "class mix"
    assert res.total.value == pytest.approx(res.class_mix.value + res.appearance.value)
    src_iou = metrics.dataset_iou(source)[1]
    assert res.miou_source == pytest.approx(src_iou)
    assert res.miou_target == pytest.approx(metrics.dataset_iou(target)[1])
    assert "refitted in every resample" in res.ci_method and res.n_boot_used == 150


def test_pure_appearance_shift_leaves_no_class_mix_share() -> None:
    rng = np.random.default_rng(1)
    source, target = _domain(rng, 300, 0.2), _domain(rng, 200, 0.2, appearance=0.4)
    res = cmx.class_mix_decomposition(source, target, n_boot=150, seed=1)
    assert res.total.value > 0.05
    assert _covers(res.class_mix, 0.0) and abs(res.class_mix.value) < 0.01
    assert 0.85 <= res.appearance.share <= 1.15 and res.appearance.significant
    assert res.appearance.share_ci_low <= 1.0 <= res.appearance.share_ci_high
    assert res.dominant == "appearance"
    assert res.weights.ess_fraction > 0.6  # same content: weights stay near 1


def test_density_ratio_weights_recover_a_known_ratio() -> None:
    rng = np.random.default_rng(2)
    xs, xt = rng.normal(size=(800, 1)), rng.normal(0.6, 1.0, size=(600, 1))
    fit = cmx.density_ratio_weights(xs, xt, max_weight=100.0)
    true = np.exp(0.6 * xs[:, 0] - 0.18)  # N(0.6, 1) / N(0, 1)
    w = np.asarray(fit.weights)
    assert np.corrcoef(w, true)[0, 1] > 0.95
    np.testing.assert_allclose(w, true / true.mean(), rtol=0.35)
    # two dimensions, only the second one shifted
    xs2, xt2 = rng.normal(size=(800, 2)), rng.normal([0.0, -0.5], 1.0, size=(600, 2))
    w2 = np.asarray(cmx.density_ratio_weights(xs2, xt2, max_weight=100.0).weights)
    assert np.corrcoef(w2, np.exp(-0.5 * xs2[:, 1]))[0, 1] > 0.9


def test_ess_is_kish_formula_and_the_cap_holds() -> None:
    assert cmx.effective_sample_size(np.ones(7)) == pytest.approx(7.0)
    assert cmx.effective_sample_size([3.0, 1.0]) == pytest.approx(16 / 10)
    rng = np.random.default_rng(3)
    fit = cmx.density_ratio_weights(rng.normal(size=300), rng.normal(2.0, 1.0, size=300), 4.0)
    w = np.asarray(fit.weights)
    assert fit.ess == pytest.approx(w.sum() ** 2 / (w**2).sum())
    assert fit.ess_fraction == pytest.approx(fit.ess / 300)
    assert w.max() <= 4.0 * (1 + 1e-12) and w.mean() == pytest.approx(1.0)
    assert fit.n_clipped > 0 and fit.n_clipped == int(np.sum(np.isclose(w, 4.0)))
    assert "capped at 4.0" in fit.method and "not cross-fitted" in fit.method


def test_cap_weights_keeps_the_mean_and_the_order() -> None:
    raw = np.exp(np.random.default_rng(4).normal(scale=2.0, size=500))
    capped = cmx.cap_weights(raw, 5.0)
    assert capped.mean() == pytest.approx(1.0, abs=1e-12)
    assert capped.max() == pytest.approx(5.0) and capped.max() <= 5.0
    free = capped < 5.0
    ratio = capped[free] / raw[free]
    np.testing.assert_allclose(ratio, ratio[0])  # uncapped weights keep their proportions
    assert np.all(np.diff(capped[np.argsort(raw)]) >= 0)
    np.testing.assert_allclose(cmx.cap_weights(np.array([1.0, 3.0]), 10.0), [0.5, 1.5])
    np.testing.assert_allclose(cmx.cap_weights(np.array([1.0, 9.0]), 1.0), [1.0, 1.0])


def _recovery_case(after_appearance: float, seed: int = 5):
    rng = np.random.default_rng(seed)
    source = _domain(rng, 300, 0.2)
    frac, gt = _ground_truth(rng, 200, 0.7)
    before = _confusions(rng, frac, gt, appearance=0.4)
    after = _confusions(rng, frac, gt, appearance=after_appearance)
    return source, before, after


def test_a_fix_that_removes_the_appearance_shift_recovers_the_appearance_share() -> None:
    source, before, after = _recovery_case(0.0)
    res = cmx.appearance_recovery(source, before, after, n_boot=150, seed=5)
    assert res.appearance.significant and res.recovered.significant
    assert res.fraction_of_appearance.ci_low <= 1.0 <= res.fraction_of_appearance.ci_high
    assert 0.8 <= res.fraction_of_appearance.value <= 1.2
    assert res.fraction_of_total.value < res.fraction_of_appearance.value
    assert res.verdict == "the appearance share" and res.rule == cmx.RECOVERY_RULE
    assert res.recovered.value == pytest.approx(res.miou_target_after - res.miou_target_before)
    assert "(paired)" in res.ci_method
    assert json.loads(json.dumps(to_json(res)))["verdict"] == "the appearance share"


def test_recovery_verdicts_for_harm_and_for_more_than_appearance() -> None:
    source, before, worse = _recovery_case(0.8)
    harms = cmx.appearance_recovery(source, before, worse, n_boot=100, refit=False)
    assert harms.verdict == "harms" and harms.recovered.ci_high < 0
    assert "fixed at the full-sample fit" in harms.ci_method
    _, _, much_better = _recovery_case(-0.6)
    more = cmx.appearance_recovery(source, before, much_better, n_boot=100, refit=False)
    assert more.verdict == "more than the appearance share" and more.excess.ci_low > 0


def test_unlabelled_images_are_dropped_and_results_are_json_friendly() -> None:
    rng = np.random.default_rng(6)
    source, target = _domain(rng, 60, 0.3), _domain(rng, 40, 0.6)
    padded = np.concatenate([target, np.zeros((5, C, C))])
    a = cmx.class_mix_decomposition(source, target, n_boot=30, seed=2)
    b = cmx.class_mix_decomposition(source, padded, n_boot=30, seed=2)
    assert b.n_target == 40 and a == b
    data = json.loads(json.dumps(to_json(a)))
    assert len(a.weights.weights) == 60 and data["alpha"] == 0.05
    assert "weights" not in data["weights"]  # per-image weights stay out of summary.json
    fractions = cmx.class_fractions(source)
    np.testing.assert_allclose(fractions.sum(axis=1), 1.0)
    np.testing.assert_allclose(fractions, source.sum(axis=2) / source.sum(axis=(1, 2))[:, None])


_CM = np.stack([np.eye(3) * (i + 1) for i in range(4)])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: cmx.class_mix_decomposition(_CM, np.ones((4, 4, 4))), "target_confusion"),
        (lambda: cmx.class_mix_decomposition(_CM[:1], _CM), "at least 2 labelled"),
        (lambda: cmx.class_mix_decomposition(_CM, _CM * 0), "at least one labelled image"),
        (lambda: cmx.class_mix_decomposition(_CM, _CM[:, 0]), "(B, C, C)"),
        (lambda: cmx.class_mix_decomposition(_CM, _CM, n_boot=0), "n_boot"),
        (lambda: cmx.class_mix_decomposition(_CM, _CM, alpha=0.0), "alpha"),
        (lambda: cmx.class_mix_decomposition(_CM, _CM, max_weight=0.5), "max_weight"),
        (lambda: cmx.appearance_recovery(_CM, _CM, _CM[:3]), "target_after: expected the shape"),
        (
            lambda: cmx.appearance_recovery(_CM, _CM, _CM * np.r_[0, 1, 1, 1][:, None, None]),
            "target_after: expected the same labelled images",
        ),
        (lambda: cmx.density_ratio_weights(np.ones((5, 2)), np.ones((5, 3))), "target_x"),
        (lambda: cmx.cap_weights(np.array([1.0, -1.0]), 2.0), "weights"),
    ],
)
def test_bad_input_raises_one_clear_line(call, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        call()
    assert "\n" not in str(err.value)


def test_shared_bootstrap_fits_give_the_same_numbers_as_fresh_ones() -> None:
    src, before, after = _recovery_case(0.0)
    cmx._DRAWS_MEMO.clear()
    fresh = to_json(cmx.appearance_recovery(src, before, after, n_boot=40, seed=3))
    cmx.class_mix_decomposition(src, before, n_boot=40, seed=3)  # fills the memo
    assert len(cmx._DRAWS_MEMO) == 1
    shared = to_json(cmx.appearance_recovery(src, before, after, n_boot=40, seed=3))
    assert len(cmx._DRAWS_MEMO) == 1  # the recovery reused the decomposition's fits
    assert shared == fresh
    other = to_json(cmx.appearance_recovery(src, before, after, n_boot=40, seed=4))
    assert other != fresh and len(cmx._DRAWS_MEMO) == 2  # another seed, other draws
