"""The latent-gap section: FD, MMD² test, KID, C2ST and BBSD of one source against one target.

Assembly only: each statistic lives in its own module (``frechet``, ``mmd``, ``kid``,
``c2st``, ``bbsd``, on the shared engine in ``kernels``) and returns its typed result; this
module runs them with one set of settings and collects them, with their headline rows and
the verdict, into a :class:`~domain_gap.analysis.results.LatentGap`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from domain_gap.analysis.bbsd import bbsd, bbsd_gap_test
from domain_gap.analysis.c2st import c2st, c2st_gap_tests
from domain_gap.analysis.frechet import frechet_test, frechet_with_ci
from domain_gap.analysis.kid import kid, kid_gap_test
from domain_gap.analysis.mmd import Scale, mmd_gap_test, mmd_test
from domain_gap.analysis.mmd_linear import DEFAULT_FEATURES, rff_mmd_test
from domain_gap.analysis.results import LatentGap, Verdict
from domain_gap.analysis.stats_utils import as_matrix, check_same_dim

__all__ = [
    "DECISION_RULE",
    "EXACT_MAX_POOLED",
    "FLOAT64_MAX_POOLED",
    "MMDChoice",
    "choose_mmd",
    "latent_gap",
]

DECISION_RULE = "MMD permutation test at alpha (pre-specified); C2ST is a second opinion"

MMDChoice = Literal["auto", "exact", "linear"]
"""``auto``: exact up to :data:`EXACT_MAX_POOLED` pooled samples, else random features."""

EXACT_MAX_POOLED = 20_000
"""Largest n + m for which ``mmd="auto"`` runs the exact O(N²) MMD test. At this size the
exact test with 1,000 permutations takes 4-8 s on 2 cores (float32, benchmarks/bench_mmd.py)
and quadruples with every doubling of N, while the random-feature test grows linearly (about
half the exact time at 20,000 with D = 2,048, far less beyond); its power matched the exact
test's in ``benchmarks/mmd_linear_validity.py``."""

FLOAT64_MAX_POOLED = 5_000
"""Up to this n + m the exact test runs in float64 (about a second at most); above it in
float32: 1.4-2x faster, statistics within 0.02 of the tie band of float64 (see
:func:`~domain_gap.analysis.mmd.permutation_result`)."""


def choose_mmd(n_pooled: int, mmd: MMDChoice = "auto") -> Literal["exact", "linear"]:
    """The MMD test to run for ``n_pooled`` = n + m samples: ``mmd`` unless ``auto``."""
    if mmd not in ("auto", "exact", "linear"):
        raise ValueError(f"mmd: expected 'auto', 'exact' or 'linear', got {mmd!r}")
    if mmd != "auto":
        return mmd
    return "exact" if n_pooled <= EXACT_MAX_POOLED else "linear"


def latent_gap(
    x: np.ndarray,
    y: np.ndarray,
    *,
    bandwidth: float | None = None,
    permutations: int = 500,
    n_boot: int = 200,
    max_dim: int | None = None,
    alpha: float = 0.05,
    seed: int = 0,
    kid_subsets: int = 50,
    memory_budget_mb: float = 256.0,
    probs_source: np.ndarray | None = None,
    probs_target: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    standardize: bool = True,
    scale: Scale | None = None,
    mmd: MMDChoice = "auto",
    mmd_features: int = DEFAULT_FEATURES,
) -> LatentGap:
    """The whole ``latent_gap`` section: FD, MMD² test, KID, C2ST, each with an interval.

    With ``probs_source``/``probs_target`` (per-image mean class probabilities, (n, C) and
    (m, C)) the section also holds ``bbsd`` (:func:`bbsd`); otherwise ``bbsd`` is ``None``.

    ``bandwidth`` should be frozen by the caller (``result.mmd.bandwidth`` of the baseline
    run, in standardised units when ``standardize``, see :func:`~domain_gap.analysis.mmd.mmd_test`)
    so that numbers stay comparable across mitigations, like ``scale`` (the baseline's
    :func:`~domain_gap.analysis.mmd.pooled_scale`); ``None`` computes them here. Each
    result states its own interval method (``ci_method``). ``mmd`` picks the MMD test
    (:func:`choose_mmd`: exact up to :data:`EXACT_MAX_POOLED` pooled samples, else
    ``mmd_features`` random Fourier features); ``result.mmd.method`` records which ran.
    """
    xs = as_matrix(x, "x (source embeddings)")
    ys = as_matrix(y, "y (target embeddings)")
    check_same_dim(xs, ys)
    fd = frechet_with_ci(xs, ys, max_dim=max_dim, n_boot=n_boot, alpha=alpha, seed=seed)
    n_pooled = len(xs) + len(ys)
    common = {
        "n_boot": n_boot,
        "alpha": alpha,
        "memory_budget_mb": memory_budget_mb,
        "standardize": standardize,
        "scale": scale,
    }
    if choose_mmd(n_pooled, mmd) == "exact":
        dtype = "float64" if n_pooled <= FLOAT64_MAX_POOLED else "float32"
        mmd_res = mmd_test(xs, ys, bandwidth, permutations, seed, dtype=dtype, **common)
    else:
        mmd_res = rff_mmd_test(
            xs, ys, bandwidth, permutations, seed, features=mmd_features, **common
        )
    kd = kid(
        xs,
        ys,
        subsets=kid_subsets,
        seed=seed,
        n_boot=n_boot,
        alpha=alpha,
        memory_budget_mb=memory_budget_mb,
    )
    c2 = c2st(xs, ys, seed=seed, alpha=alpha)
    shift = None
    if probs_source is not None and probs_target is not None:
        shift = bbsd(probs_source, probs_target, alpha=alpha, class_names=class_names)
    tests = (frechet_test(fd), mmd_gap_test(mmd_res), kid_gap_test(kd), *c2st_gap_tests(c2))
    if shift is not None:
        tests = (*tests, bbsd_gap_test(shift))
    return LatentGap(
        n_source=len(xs),
        n_target=len(ys),
        dim=int(xs.shape[1]),
        alpha=float(alpha),
        seed=int(seed),
        frechet=fd,
        mmd=mmd_res,
        kid=kd,
        c2st=c2,
        bbsd=shift,
        verdict=Verdict(
            significant=mmd_res.significant,
            rule=DECISION_RULE,
            second_opinion="C2ST AUC interval above 0.5",
            second_opinion_significant=c2.significant,
        ),
        tests=tests,
    )
