"""Metadata drift against scipy and hand calculations."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from scipy import stats

from domain_gap.analysis.drift import metadata_drift
from domain_gap.analysis.results import MetadataDrift, Skipped, to_json


@pytest.fixture
def fields() -> tuple[dict, dict, np.ndarray]:
    rng = np.random.default_rng(0)
    n, m = 120, 80
    veg_t = rng.normal(0.30, 0.05, m)
    source = {
        "brightness": rng.normal(0.5, 0.1, n),
        "frac_vegetation": rng.normal(0.10, 0.05, n),
        "frac_sky": rng.normal(0.2, 0.05, n),
        "constant": np.full(n, 3.0),
        "camera": np.array(["left", "right"])[rng.integers(0, 2, n)],
        "source_only": np.zeros(n),
    }
    sky_t = rng.normal(0.1, 0.05, m)
    target = {
        "brightness": rng.normal(0.5, 0.1, m),
        "frac_vegetation": veg_t,
        "frac_sky": sky_t,
        "constant": np.full(m, 3.0),
        "camera": np.array(["left", "kitti_cam"])[rng.integers(0, 2, m)],
    }
    # loss grows with vegetation strongly and with sky weakly
    loss = 2.0 * veg_t + 0.5 * sky_t + rng.normal(0, 0.03, m)
    return source, target, loss


def _row(result: MetadataDrift, field: str) -> Any:
    return next(r for r in result.numeric + result.categorical if r.field == field)


def test_numeric_statistics_match_scipy_and_hand_formulas(fields) -> None:
    source, target, loss = fields
    res = metadata_drift(source, target, loss, source_name="cityscapes", target_name="kitti")
    row = _row(res, "frac_vegetation")
    a, b = source["frac_vegetation"], target["frac_vegetation"]
    ks = stats.ks_2samp(a, b)
    assert row.ks == pytest.approx(ks.statistic) and row.p_value == pytest.approx(ks.pvalue)
    wd = stats.wasserstein_distance(a, b)
    assert row.wasserstein == pytest.approx(wd)
    assert row.wasserstein_sd == pytest.approx(wd / a.std(ddof=1))
    pooled = math.sqrt(
        ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2)
    )
    assert row.smd == pytest.approx((b.mean() - a.mean()) / pooled)
    sp = stats.spearmanr(b, loss)
    assert row.spearman_rho == pytest.approx(sp.statistic)
    assert row.spearman_p == pytest.approx(sp.pvalue)
    hist = row.histogram
    assert sum(hist.source) == len(a) and sum(hist.target) == len(b)
    assert len(hist.edges) == len(hist.source) + 1
    assert row.status == "shifted"


def test_categorical_chi_square_and_cramers_v(fields) -> None:
    source, target, loss = fields
    res = metadata_drift(source, target, loss)
    row = _row(res, "camera")
    cats = row.categories
    assert list(cats) == ["kitti_cam", "left", "right"]
    table = np.array(
        [
            [np.sum(source["camera"] == c) for c in cats],
            [np.sum(target["camera"] == c) for c in cats],
        ]
    )
    ref = stats.chi2_contingency(table)
    assert row.chi2 == pytest.approx(ref.statistic) and row.p_value == pytest.approx(ref.pvalue)
    assert row.cramers_v == pytest.approx(math.sqrt(ref.statistic / (table.sum() * 1)))
    left_loss = loss[target["camera"] == "left"].mean()
    assert row.loss_by_category["left"] == pytest.approx(left_loss)
    assert row.loss_by_category["right"] is None


def test_bh_across_fields_and_constant_fields(fields) -> None:
    source, target, loss = fields
    res = metadata_drift(source, target, loss)
    const = _row(res, "constant")
    assert const.status == "no variation" and const.smd is None
    assert const.p_value == 1.0 and not const.significant
    tested = [r for r in res.numeric + res.categorical if r.status != "no variation"]
    raw = [r.p_value for r in tested]
    expected = stats.false_discovery_control(raw)  # the constant field is not in the family
    assert [r.p_adjusted for r in tested] == pytest.approx(list(expected))
    assert res.skipped == (Skipped("source_only", "missing in target"),)
    json.dumps(to_json(res), allow_nan=False)


def test_drivers_rank_by_shift_times_association(fields) -> None:
    source, target, loss = fields
    res = metadata_drift(source, target, loss, target_name="kitti")
    drivers = res.drivers
    names = [d.field for d in drivers]
    assert "brightness" not in names  # not shifted
    assert names[0] == "frac_vegetation"
    keys = [(not d.association_significant, -d.score) for d in drivers]
    assert keys == sorted(keys)  # loss-associated first, then by score
    veg = drivers[0]
    assert veg.association_significant
    ks = _row(res, "frac_vegetation").ks
    assert veg.score == pytest.approx(ks * abs(veg.spearman_rho))
    assert veg.aligned is True
    assert veg.sentence.startswith("kitti has higher frac_vegetation (+")
    sky = next(d for d in drivers if d.field == "frac_sky")
    assert sky.smd < 0 and sky.aligned is False
    assert "lower frac_sky" in sky.sentence and "would lower the loss" in sky.sentence


def test_without_loss_there_are_no_drivers_and_nan_values_are_skipped(fields) -> None:
    source, target, _ = fields
    target = dict(target)
    target["brightness"] = target["brightness"].copy()
    target["brightness"][:5] = np.nan
    res = metadata_drift(source, target, None)
    assert res.drivers == ()
    row = _row(res, "brightness")
    assert row.n_missing_target == 5 and row.n_target == 75
    assert row.spearman_rho is None and "no target loss" in row.note


def test_bad_inputs_name_the_field(fields) -> None:
    source, target, loss = fields
    with pytest.raises(ValueError, match="target_loss"):
        metadata_drift(source, target, loss[:10])
    broken = dict(target)
    broken["brightness"] = np.zeros((80, 2))
    with pytest.raises(ValueError, match="brightness"):
        metadata_drift(source, broken, loss)


def test_near_constant_field_with_huge_smd_does_not_outrank_a_loss_driver() -> None:
    """Image size differs by design between datasets (SMD in the hundreds) but says nothing
    about the loss: it must rank below a field that shifts and goes with the loss."""
    rng = np.random.default_rng(3)
    n = 150
    veg_s, veg_t = rng.uniform(0, 0.3, n), rng.uniform(0.1, 0.5, n)
    source = {"aspect": 2.0 + rng.normal(0, 1e-3, n), "veg": veg_s}
    target = {"aspect": 3.3 + rng.normal(0, 1e-3, n), "veg": veg_t}
    loss = veg_t + rng.normal(0, 0.05, n)
    res = metadata_drift(source, target, loss)
    aspect = _row(res, "aspect")
    assert abs(aspect.smd) > 100
    assert res.drivers[0].field == "veg"


class _Side:
    """The three things the what-if drift reads from a Features block."""

    def __init__(self, name: str, metadata: dict[str, np.ndarray], loss: np.ndarray) -> None:
        self.metadata, self.loss, self.domains = metadata, loss, np.array([name] * len(loss))

    def __len__(self) -> int:
        return len(self.loss)


def test_user_field_missing_on_one_side_is_skipped_in_both_drifts() -> None:
    """A metadata_csv given for the target only: the field is 'missing in' the source, in the
    baseline drift and in the drift after a fix alike, never tested on an all-missing side."""
    from domain_gap.analysis.drift import known_fields
    from domain_gap.analysis.whatif import _drift
    from domain_gap.data.user_metadata import PREFIX

    rng = np.random.default_rng(1)
    n = 40
    src = {"brightness": rng.normal(0, 1, n), f"{PREFIX}iso": np.full(n, np.nan)}
    tgt = {"brightness": rng.normal(1, 1, n), f"{PREFIX}iso": rng.normal(400, 50, n)}
    assert set(known_fields(src, PREFIX)) == {"brightness"}
    assert set(known_fields(tgt, PREFIX)) == set(tgt)
    loss = rng.random(n)
    after = _drift(_Side("cs", src, loss), _Side("kitti", tgt, loss), 0.05)
    baseline = metadata_drift(
        known_fields(src, PREFIX), known_fields(tgt, PREFIX), loss, 0.05, source_name="cs"
    )
    for drift in (after, baseline):
        assert [(s.field, s.reason) for s in drift.skipped] == [(f"{PREFIX}iso", "missing in cs")]
        assert f"{PREFIX}iso" not in [f.field for f in drift.numeric]
        assert "brightness" in [f.field for f in drift.numeric]
