"""Paired bootstrap of a mitigation: point deltas, pairing, coverage by simulation, verdict."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from scipy.special import expit, logit

from domain_gap import metrics
from domain_gap.analysis.paired import (
    VERDICT_RULE,
    PairedInputs,
    mitigation_verdict,
    paired_delta,
)
from domain_gap.analysis.results import to_json

BASE_ACC = np.array([0.92, 0.75, 0.6, 0.45])


def _simulate(
    rng: np.random.Generator,
    n_images: int,
    shift: float,
    spread: float = 1.0,
    noise: float = 0.15,
    pixels: int = 300,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image confusions (before, after) of one image set; accuracies share an image effect.

    Class ``c`` is right with probability ``expit(logit(BASE_ACC[c]) + spread * z_i + e)``
    before and the same plus ``shift`` on the logit scale after (``z_i`` shared by both runs:
    hard images stay hard, which correlates before and after). Misses go to class ``c + 1``.
    """
    c = BASE_ACC.size
    gt = rng.multinomial(pixels, rng.dirichlet(np.full(c, 2.0), size=n_images))
    z = spread * rng.normal(size=(n_images, 1))
    out = []
    for delta in (0.0, shift):
        acc = expit(logit(BASE_ACC) + z + delta + noise * rng.normal(size=(n_images, c)))
        right = rng.binomial(gt, acc)
        cm = np.zeros((n_images, c, c))
        cls = np.arange(c)
        cm[:, cls, cls] = right
        cm[:, cls, (cls + 1) % c] = gt - right
        out.append(cm)
    return out[0], out[1]


def _true_delta(shift: float) -> float:
    before, after = _simulate(np.random.default_rng(12345), 100_000, shift)
    return metrics.dataset_iou(after)[1] - metrics.dataset_iou(before)[1]


def _unpaired_width(before: np.ndarray, after: np.ndarray, n_boot: int, seed: int) -> float:
    """Width of the 95% interval when before and after are resampled independently."""
    rng = np.random.default_rng(seed)
    n = len(before)
    reps = []
    for _ in range(n_boot):
        ib, ia = rng.integers(0, n, n), rng.integers(0, n, n)
        reps.append(metrics.dataset_iou(after[ia])[1] - metrics.dataset_iou(before[ib])[1])
    lo, hi = np.quantile(reps, [0.025, 0.975])
    return float(hi - lo)


def test_point_deltas_equal_direct_dataset_metrics() -> None:
    before, after = _simulate(np.random.default_rng(0), 25, 0.4)
    rng = np.random.default_rng(1)
    loss_b, loss_a = rng.random(25), rng.random(25)
    loss_b[[3, 7]] = np.nan  # unlabelled images: no loss
    loss_a[[3, 7]] = np.nan
    bins_b, bins_a = rng.random((25, 15, 3)), rng.random((25, 15, 3))
    res = paired_delta(
        PairedInputs(before, loss_b, bins_b, {"brightness": loss_b * 2}),
        PairedInputs(after, loss_a, bins_a, {"brightness": loss_a * 2}),
        n_boot=200,
    )
    iou_b, miou_b = metrics.dataset_iou(before)
    iou_a, miou_a = metrics.dataset_iou(after)
    assert res.miou.before == pytest.approx(miou_b) and res.miou.after == pytest.approx(miou_a)
    assert res.miou.delta == pytest.approx(miou_a - miou_b)
    np.testing.assert_allclose(res.per_class_iou.delta, iou_a - iou_b)
    keep = np.isfinite(loss_b)
    assert res.loss.n == 23 and "NaN" in res.loss.note
    assert res.loss.delta == pytest.approx(loss_a[keep].mean() - loss_b[keep].mean())
    ece_b, ece_a = (metrics.ece_from_bins(b.sum(axis=0)) for b in (bins_b, bins_a))
    assert res.ece.delta == pytest.approx(ece_a - ece_b)
    assert res.scalars[0].name == "brightness"
    assert res.scalars[0].delta == pytest.approx(2 * res.loss.delta)
    assert res.n_images == 25 and res.n_labelled == 25 and res.n_boot == 200
    assert "paired percentile bootstrap over images, 200 resamples" in res.ci_method
    for est in (res.miou, res.loss, res.ece):
        assert est.ci_low <= est.delta <= est.ci_high


def test_one_draw_is_applied_to_both_runs() -> None:
    """A constant per-image change has a zero-width paired interval; identical runs give 0."""
    before, _ = _simulate(np.random.default_rng(2), 20, 0.0)
    loss = np.random.default_rng(3).random(20) * 5
    res = paired_delta(
        PairedInputs(before, loss, scalars={"s": loss}),
        PairedInputs(before.copy(), loss + 0.25, scalars={"s": loss}),
        n_boot=300,
    )
    assert res.loss.ci_low == pytest.approx(0.25) and res.loss.ci_high == pytest.approx(0.25)
    assert res.miou.delta == 0.0 and res.miou.ci_low == 0.0 and res.miou.ci_high == 0.0
    assert res.scalars[0].ci_low == 0.0 and not res.scalars[0].significant
    assert mitigation_verdict(res).verdict == "no clear effect"


def test_same_seed_same_result_and_json_friendly() -> None:
    before, after = _simulate(np.random.default_rng(4), 15, 0.3)
    a = paired_delta(PairedInputs(before), PairedInputs(after), n_boot=100, seed=7)
    b = paired_delta(PairedInputs(before), PairedInputs(after), n_boot=100, seed=7)
    c = paired_delta(PairedInputs(before), PairedInputs(after), n_boot=100, seed=8)
    assert a == b and a.miou.ci_low != c.miou.ci_low
    text = json.dumps(to_json(a))
    assert json.loads(text)["miou"]["delta"] == pytest.approx(a.miou.delta)
    assert a.loss is None and a.ece is None and a.scalars == ()


def test_unlabelled_images_are_carried_but_do_not_count() -> None:
    before, after = _simulate(np.random.default_rng(5), 12, 0.5)
    before[[0, 5]] = 0
    after[[0, 5]] = 0
    res = paired_delta(PairedInputs(before), PairedInputs(after), n_boot=50)
    assert res.n_images == 12 and res.n_labelled == 10 and res.miou.n == 10
    assert res.miou.delta == pytest.approx(
        metrics.dataset_iou(after)[1] - metrics.dataset_iou(before)[1]
    )


def test_paired_interval_covers_the_true_delta_about_95_percent() -> None:
    shift = 0.35
    truth = _true_delta(shift)
    assert truth > 0.02  # the simulated fix does something
    rng = np.random.default_rng(6)
    covered = []
    for k in range(240):
        before, after = _simulate(rng, 30, shift)
        res = paired_delta(PairedInputs(before), PairedInputs(after), n_boot=400, seed=k)
        covered.append(res.miou.ci_low <= truth <= res.miou.ci_high)
    assert 0.90 <= np.mean(covered) <= 0.99


def test_paired_interval_is_narrower_than_unpaired_on_correlated_runs() -> None:
    rng = np.random.default_rng(7)
    ratios = []
    for k in range(8):
        before, after = _simulate(rng, 30, 0.35, spread=1.2)
        res = paired_delta(PairedInputs(before), PairedInputs(after), n_boot=300, seed=k)
        ratios.append((res.miou.ci_high - res.miou.ci_low) / _unpaired_width(before, after, 300, k))
    assert np.mean(ratios) < 0.6
    assert max(ratios) < 1.0


def test_verdict_rests_on_delta_miou_not_on_gap_statistics() -> None:
    rng = np.random.default_rng(8)
    before, better = _simulate(rng, 40, 1.0)
    _, worse = _simulate(np.random.default_rng(8), 40, -1.0)
    helps = mitigation_verdict(paired_delta(PairedInputs(before), PairedInputs(better)))
    assert helps.verdict == "helps" and helps.ci_low > 0 and helps.rule == VERDICT_RULE
    harms = mitigation_verdict(
        paired_delta(PairedInputs(before), PairedInputs(worse)),
        gap_deltas={"frechet_distance": -12.0, "mmd2": -0.01},
    )
    assert harms.verdict == "harms" and harms.ci_high < 0
    assert "frechet_distance" in harms.note and "mIoU fell" in harms.note
    assert [g.name for g in harms.gap_deltas] == ["frechet_distance", "mmd2"]
    assert json.loads(json.dumps(to_json(harms)))["gap_deltas"][0]["value"] == -12.0


def test_verdict_is_no_clear_effect_when_the_interval_straddles_zero() -> None:
    before, after = _simulate(np.random.default_rng(9), 30, 0.0)
    res = paired_delta(PairedInputs(before), PairedInputs(after), n_boot=500)
    verdict = mitigation_verdict(res, {"fd": -1.0})
    assert res.miou.ci_low < 0 < res.miou.ci_high and not res.miou.significant
    assert verdict.verdict == "no clear effect" and verdict.note == ""


_CM = np.eye(3)[None].repeat(4, axis=0)


@pytest.mark.parametrize(
    ("before", "after", "kwargs", "message"),
    [
        (PairedInputs(_CM), PairedInputs(_CM[:3]), {}, "after.confusion: expected the shape"),
        (PairedInputs(_CM[:1]), PairedInputs(_CM[:1]), {}, "at least 2 images"),
        (PairedInputs(_CM * 0), PairedInputs(_CM * 0), {}, "at least one labelled image"),
        (PairedInputs(_CM[0]), PairedInputs(_CM[0]), {}, "(B, C, C)"),
        (PairedInputs(_CM), PairedInputs(_CM), {"n_boot": 0}, "n_boot"),
        (PairedInputs(_CM), PairedInputs(_CM), {"alpha": 1.0}, "alpha"),
        (PairedInputs(_CM, np.ones(4)), PairedInputs(_CM), {}, "loss: expected it in both"),
        (PairedInputs(_CM, np.ones(3)), PairedInputs(_CM, np.ones(3)), {}, "before.loss"),
        (
            PairedInputs(_CM, calibration=np.ones((4, 15, 3))),
            PairedInputs(_CM, calibration=np.ones((4, 10, 3))),
            {},
            "after.calibration",
        ),
        (PairedInputs(_CM, scalars={"a": np.ones(4)}), PairedInputs(_CM), {}, "scalars"),
    ],
)
def test_bad_input_raises_one_clear_line(before, after, kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        paired_delta(before, after, **kwargs)
    assert "\n" not in str(err.value)
