"""Source against target attention, class by class: permutation tests, BH, mean-map distance.

For each class present in at least ``min_images`` images of both domains, five statistics are
compared: the mean on-object share, the mean context share, the mean centroid (their
Euclidean distance), the mean entropy, and the per-domain mean grid maps (Jensen-Shannon
distance, base 2, in [0, 1]). Each has a permutation p-value from the same ``permutations``
relabellings of the class's images (two-sided through the absolute difference;
``p = (1 + #{T_perm >= T_obs}) / (B + 1)``). Benjamini-Hochberg runs across every class and
statistic of one target. Pure numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.special import rel_entr

from domain_gap.analysis.results import (
    AttentionOutlier,
    AttentionTest,
    ClassAttention,
    HeatmapComparison,
)
from domain_gap.analysis.stats_utils import bh_adjust, fnum
from domain_gap.heatmaps.stats import AttentionRecords

TESTS = ("on_object", "context", "centroid", "entropy", "map_js")
"""The statistics tested per class, in display order."""
OUTLIERS = 6
"""Target (image, class) pairs shown whose map is furthest from the class's source mean."""
OUTLIERS_PER_CLASS = 2
"""At most this many of them per class, so that one class cannot fill the list."""
SENTENCE_ORDER = ("context", "on_object", "centroid", "entropy", "map_js")
"""Which significant statistic a class's sentence names when several tie on adjusted p."""
CORRECTION = "Benjamini-Hochberg across every tested class and statistic of the target"


def js_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon distance (base 2) between distributions along the last axis.

    ``rel_entr`` (x log(x / y), 0 where x = 0) is one pass per term: the permutation null
    evaluates this on every relabelling's mean maps.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    m = 0.5 * (p + q)
    js = (rel_entr(p, m).sum(axis=-1) + rel_entr(q, m).sum(axis=-1)) / (2.0 * np.log(2.0))
    return np.sqrt(np.clip(js, 0.0, 1.0))


def _statistics(mean_s: np.ndarray, mean_t: np.ndarray) -> np.ndarray:
    """(..., 5) test statistics from group means of [stats (5), flattened map] rows."""
    d = mean_t[..., :5] - mean_s[..., :5]
    return np.stack(
        [
            np.abs(d[..., 0]),
            np.abs(d[..., 1]),
            np.hypot(d[..., 2], d[..., 3]),
            np.abs(d[..., 4]),
            js_distance(mean_s[..., 5:], mean_t[..., 5:]),
        ],
        axis=-1,
    )


def permutation_pvalues(
    x: np.ndarray, is_target: np.ndarray, permutations: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Observed statistics (5,) and their permutation p-values for rows ``x`` (n, 5 + cells)."""
    labels = np.asarray(is_target, dtype=bool)
    n_t = int(labels.sum())
    n_s = len(labels) - n_t
    perms = rng.permuted(np.tile(labels, (permutations, 1)), axis=1).astype(np.float64)
    mean_t = perms @ x / n_t
    mean_s = (1.0 - perms) @ x / n_s
    null = _statistics(mean_s, mean_t)
    observed = _statistics(x[~labels].mean(axis=0), x[labels].mean(axis=0))
    exceed = (null >= observed * (1 - 1e-12)).sum(axis=0)
    return observed, (1.0 + exceed) / (permutations + 1.0)


@dataclass(frozen=True)
class Settings:
    """How the comparison runs."""

    min_images: int
    permutations: int
    alpha: float
    seed: int


def _pct(v: float) -> str:
    return f"{100 * v:.0f}%" if abs(v) >= 0.095 else f"{100 * v:.1f}%"


def _reading(test: str, cls: str, s: np.ndarray, t: np.ndarray, names: tuple[str, str]) -> str:
    src, tgt = names
    if test == "on_object":
        return (
            f"in {tgt} {_pct(t[0])} of the model's attention for {cls} falls on the {cls} "
            f"pixels themselves, against {_pct(s[0])} in {src}"
        )
    if test == "context":
        return (
            f"in {tgt} the model puts {_pct(t[1])} of its attention for {cls} on the ring "
            f"around it, against {_pct(s[1])} in {src}"
        )
    if test == "centroid":
        return (
            f"in {tgt} the attention for {cls} is centred at x = {t[2]:.2f}, y = {t[3]:.2f} "
            f"of the image, against x = {s[2]:.2f}, y = {s[3]:.2f} in {src}"
        )
    if test == "entropy":
        word = "more spread out" if t[4] > s[4] else "more concentrated"
        return (
            f"in {tgt} the attention for {cls} is {word} (entropy {t[4]:.2f}) than in {src} "
            f"({s[4]:.2f})"
        )
    return f"the mean attention maps for {cls} in {tgt} and {src} differ"


def _values(test: str, m: np.ndarray) -> tuple[float | None, ...]:
    cols = {"on_object": [0], "context": [1], "centroid": [2, 3], "entropy": [4], "map_js": []}
    return tuple(fnum(m[c]) for c in cols[test])


def _class_tests(
    x: np.ndarray, is_t: np.ndarray, cls: str, names: tuple[str, str], s: Settings, seed: int
) -> tuple[list[AttentionTest], np.ndarray]:
    """Unadjusted tests of one class (p_adjusted filled in later) and its p-values."""
    rng = np.random.default_rng(seed)
    observed, p = permutation_pvalues(x, is_t, s.permutations, rng)
    mean_s, mean_t = x[~is_t].mean(axis=0), x[is_t].mean(axis=0)
    signed = [mean_t[0] - mean_s[0], mean_t[1] - mean_s[1], observed[2], mean_t[4] - mean_s[4]]
    tests = []
    for k, name in enumerate(TESTS):
        reading = _reading(name, cls, mean_s, mean_t, names)
        if name == "map_js":
            reading += f" (Jensen-Shannon distance {observed[4]:.3f})"
        tests.append(
            AttentionTest(
                statistic=name,
                value_source=_values(name, mean_s),
                value_target=_values(name, mean_t),
                effect=fnum(signed[k] if k < 4 else observed[4]),
                p_value=float(p[k]),
                p_floor=1.0 / (s.permutations + 1),
                p_adjusted=None,
                significant=False,
                reading=reading,
            )
        )
    return tests, p


def _sentence(cls: str, tests: Sequence[AttentionTest], names: tuple[str, str]) -> str:
    """The most significant change in words, else the on-object and context shares."""
    sig = [t for t in tests if t.significant]
    if sig:  # smallest adjusted p; ties go to the plainest statistic (SENTENCE_ORDER)
        best = min(sig, key=lambda t: (t.p_adjusted or 1.0, SENTENCE_ORDER.index(t.statistic)))
        return f"{best.reading} (adjusted p = {best.p_adjusted:.3g})"
    on, ctx = tests[0], tests[1]
    return (
        f"no significant change for {cls}: on the object {_pct(on.value_target[0] or 0)} in "
        f"{names[1]} against {_pct(on.value_source[0] or 0)} in {names[0]}, on the ring around "
        f"it {_pct(ctx.value_target[0] or 0)} against {_pct(ctx.value_source[0] or 0)}"
    )


def _features(rec: AttentionRecords, rows: np.ndarray) -> np.ndarray:
    return np.concatenate([rec.stats[rows], rec.maps[rows].reshape(len(rows), -1)], axis=1)


def _adjusted(classes: list[ClassAttention], alpha: float) -> list[ClassAttention]:
    """Benjamini-Hochberg over every test of every tested class; decides significance."""
    flat = [t.p_value for c in classes for t in c.tests]
    adjusted = iter(bh_adjust(flat))
    out = []
    for c in classes:
        tests = []
        for t in c.tests:
            p_adj = next(adjusted)
            sig = p_adj is not None and p_adj < alpha
            tests.append(replace(t, p_adjusted=p_adj, significant=sig))
        out.append(replace(c, tests=tuple(tests)))
    return out


def mean_maps(rec: AttentionRecords, domain: str, num_classes: int) -> dict[int, np.ndarray]:
    """Per class, the mean grid map (a distribution) over the domain's images with the class."""
    out = {}
    for c in range(num_classes):
        rows = rec.rows(domain, c)
        if len(rows):
            out[c] = rec.maps[rows].mean(axis=0)
    return out


def permutations_for(n_tests: int, alpha: float, minimum: int) -> int:
    """Enough relabellings that a single test at the floor survives BH over ``n_tests``:
    ``1 / (B + 1) <= alpha / (2 n_tests)``, and at least ``minimum``."""
    return max(minimum, math.ceil(2 * n_tests / alpha) - 1)


def compare_domains(
    rec: AttentionRecords,
    source: str,
    target: str,
    class_names: Sequence[str],
    settings: Settings,
) -> HeatmapComparison:
    """Every class's attention in ``source`` against ``target`` (see the module docstring)."""
    names = (source, target)
    rows = {c: (rec.rows(source, c), rec.rows(target, c)) for c in range(len(class_names))}
    rows = {c: r for c, r in rows.items() if len(r[0]) or len(r[1])}
    tested = [c for c, (rs, rt) in rows.items() if min(len(rs), len(rt)) >= settings.min_images]
    b = permutations_for(len(TESTS) * len(tested), settings.alpha, settings.permutations)
    run = replace(settings, permutations=b)
    note = f"present in fewer than {settings.min_images} images of a domain"
    classes: list[ClassAttention] = []
    for c, (rs, rt) in rows.items():
        tests: list[AttentionTest] = []
        if c in tested:
            x = _features(rec, np.concatenate([rs, rt]))
            is_t = np.r_[np.zeros(len(rs), bool), np.ones(len(rt), bool)]
            tests, _ = _class_tests(x, is_t, class_names[c], names, run, settings.seed + c)
        why = "" if c in tested else note
        row = ClassAttention(class_names[c], len(rs), len(rt), c in tested, tuple(tests), False, "")
        classes.append(replace(row, note=why))
    classes = [
        replace(
            c,
            significant=any(t.significant for t in c.tests),
            sentence=_sentence(c.class_name, c.tests, names) if c.tested else c.note,
        )
        for c in _adjusted(classes, settings.alpha)
    ]
    return HeatmapComparison(
        source=source,
        target=target,
        classes=tuple(classes),
        n_tests=sum(len(c.tests) for c in classes),
        alpha=settings.alpha,
        correction=CORRECTION,
        permutations=b,
        test=(
            f"{b} relabellings of the class's images per class (at least "
            f"analysis.permutations, and enough that one test at the floor survives the "
            "correction; two-sided: absolute mean difference, centroid distance, JS distance "
            "of mean maps)"
        ),
        any_significant=any(c.significant for c in classes),
        outliers=outliers(rec, source, target, class_names, classes),
    )


def outliers(
    rec: AttentionRecords,
    source: str,
    target: str,
    class_names: Sequence[str],
    classes: Sequence[ClassAttention],
    k: int = OUTLIERS,
) -> tuple[AttentionOutlier, ...]:
    """The ``k`` target (image, class) maps of tested classes furthest from the class's source
    mean map (Jensen-Shannon distance), at most :data:`OUTLIERS_PER_CLASS` per class."""
    index = {name: c for c, name in enumerate(class_names)}
    means = mean_maps(rec, source, len(class_names))
    found: list[tuple[float, int]] = []
    for ca in classes:
        if not ca.tested:
            continue
        c = index[ca.class_name]
        rows = rec.rows(target, c)
        dist = js_distance(rec.maps[rows].reshape(len(rows), -1), means[c].ravel()[None])
        found.extend((float(d), int(r)) for d, r in zip(dist, rows, strict=True))
    found.sort(key=lambda item: (-item[0], item[1]))
    taken: dict[int, int] = {}
    kept = []
    for d, r in found:
        c = int(rec.cls[r])
        if taken.get(c, 0) < OUTLIERS_PER_CLASS:
            taken[c] = taken.get(c, 0) + 1
            kept.append((d, r))
    return tuple(
        AttentionOutlier(
            sample_id=str(rec.sample_ids[rec.image[r]]),
            class_name=class_names[int(rec.cls[r])],
            js_distance=d,
            on_object=fnum(rec.stats[r, 0]),
            context=fnum(rec.stats[r, 1]),
        )
        for d, r in kept[:k]
    )
