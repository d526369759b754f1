"""domain_gap.heatmaps.compare: the permutation test is calibrated on a null, two halves of one
domain show no attention difference, a planted move of attention to the context is found."""

from __future__ import annotations

import numpy as np
import pytest

from domain_gap.heatmaps.compare import (
    TESTS,
    Settings,
    compare_domains,
    js_distance,
    permutation_pvalues,
)
from domain_gap.heatmaps.stats import AttentionRecords, class_stats

CLASSES = ("car", "person")
H, W = 24, 48


def scene(rng: np.random.Generator, occluded: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """(mask, cam) of each class in one image: a random box and a Gaussian blob of attention
    on it, or, when ``occluded``, beside it (as if the object were hidden: context)."""
    out = []
    yy, xx = np.mgrid[0:H, 0:W]
    for _ in CLASSES:
        h, w = rng.integers(4, 7), rng.integers(5, 9)
        y, x = rng.integers(2, H - h - 2), rng.integers(w + 2, W - 2 * w - 2)
        mask = np.zeros((H, W), bool)
        mask[y : y + h, x : x + w] = True
        cy, cx = y + h / 2, (x + w + 1.5) if occluded else (x + w / 2)
        cam = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.5**2))
        out.append((mask, cam * rng.uniform(0.5, 2.0) + 0.01 * rng.random((H, W))))
    return out


def records(n: dict[str, int], occluded: dict[str, bool], seed: int = 0) -> AttentionRecords:
    rng = np.random.default_rng(seed)
    valid = np.ones((H, W), bool)
    ids, domains, image, cls, stats, maps = [], [], [], [], [], []
    for domain, count in n.items():
        for _ in range(count):
            for c, (mask, cam) in enumerate(scene(rng, occluded.get(domain, False))):
                values, grid = class_stats(cam, mask, valid, ring=0.15, grid=(6, 12))
                image.append(len(ids))
                cls.append(c)
                stats.append(values)
                maps.append(grid)
            ids.append(f"{domain}/{len(ids)}.png")
            domains.append(domain)
    return AttentionRecords(
        np.array(ids),
        np.array(domains),
        np.array(image),
        np.array(cls),
        np.array(stats),
        np.array(maps),
        np.full(len(cls), 0.05),
    )


SETTINGS = Settings(min_images=10, permutations=199, alpha=0.05, seed=0)


def test_permutation_test_is_calibrated_on_a_null() -> None:
    rng = np.random.default_rng(3)
    p, sims = [], 400
    for _ in range(sims):
        x = np.concatenate([rng.random((30, 5)), rng.dirichlet(np.ones(16), 30)], axis=1)
        is_target = np.r_[np.zeros(12, bool), np.ones(18, bool)]
        p.append(permutation_pvalues(x, is_target, 99, rng)[1])
    p = np.array(p)
    for level in (0.05, 0.2):  # within 3 binomial SDs of the level, for every statistic
        tolerance = 3 * np.sqrt(level * (1 - level) / sims)
        assert np.all(np.abs((p <= level).mean(axis=0) - level) < tolerance), level
    assert p.min() >= 1 / 100


def test_two_halves_of_the_source_show_no_attention_difference() -> None:
    rec = records({"a": 20, "b": 20}, {})
    comp = compare_domains(rec, "a", "b", CLASSES, SETTINGS)
    assert [c.tested for c in comp.classes] == [True, True]
    assert comp.n_tests == 2 * len(TESTS)
    assert not comp.any_significant
    assert all(t.p_adjusted >= t.p_value for c in comp.classes for t in c.tests)
    assert comp.classes[0].sentence.startswith("no significant change for car")


def test_planted_move_of_attention_to_the_context_is_found() -> None:
    rec = records({"source": 20, "target": 20}, {"target": True})
    comp = compare_domains(rec, "source", "target", CLASSES, SETTINGS)
    assert comp.any_significant
    car = comp.classes[0]
    tests = {t.statistic: t for t in car.tests}
    assert tests["on_object"].significant and tests["on_object"].effect < -0.3
    assert tests["context"].significant and tests["context"].effect > 0
    # 10 tests: 399 relabellings, so that one test at the floor (1/400) survives BH
    assert comp.permutations == 399 and tests["on_object"].p_floor == pytest.approx(1 / 400)
    assert "in target" in car.sentence and "against" in car.sentence
    js = [o.js_distance for o in comp.outliers]
    assert len(js) == 4 and js == sorted(js, reverse=True)  # at most 2 per class
    assert sorted(o.class_name for o in comp.outliers) == ["car", "car", "person", "person"]


def test_a_class_in_too_few_images_is_listed_but_not_tested() -> None:
    rec = records({"source": 20, "target": 6}, {"target": True})
    comp = compare_domains(rec, "source", "target", CLASSES, SETTINGS)
    assert [c.tested for c in comp.classes] == [False, False]
    assert comp.n_tests == 0 and not comp.any_significant and not comp.outliers
    assert "fewer than 10 images" in comp.classes[0].note


def test_js_distance() -> None:
    p = np.array([0.5, 0.5, 0.0])
    assert js_distance(p, p) == pytest.approx(0.0, abs=1e-7)
    assert js_distance(p, np.array([0.0, 0.0, 1.0])) == pytest.approx(1.0)
    q = np.array([0.2, 0.3, 0.5])
    assert js_distance(p, q) == pytest.approx(js_distance(q, p))
    from scipy.spatial.distance import jensenshannon

    assert js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2))
