"""Black-box shift detection (BBSD): per-class KS tests on the model's mean softmax outputs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from domain_gap.analysis.results import NO_INTERVAL, BBSDClass, BBSDResult, GapTest
from domain_gap.analysis.stats_utils import as_matrix, check_same_dim

__all__ = ["bbsd", "bbsd_gap_test"]


def bbsd(
    px: np.ndarray,
    py: np.ndarray,
    alpha: float = 0.05,
    class_names: Sequence[str] | None = None,
) -> BBSDResult:
    """Black-box shift detection: per-class KS tests on per-image mean softmax vectors.

    One two-sample KS test per class column, Bonferroni-corrected over the C classes
    (Rabanser et al., "Failing Loudly", 2019).
    """
    a = as_matrix(px, "px (source class probabilities)", min_rows=1)
    b = as_matrix(py, "py (target class probabilities)", min_rows=1)
    check_same_dim(a, b, ("px", "py"))
    n_cls = a.shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n_cls)]
    if len(names) != n_cls:
        raise ValueError(f"class_names: expected {n_cls} names, got {len(names)}")
    rows = []
    for j, name in enumerate(names):
        res = stats.ks_2samp(a[:, j], b[:, j])
        p = float(res.pvalue)
        p_adj = min(1.0, p * n_cls)
        rows.append(BBSDClass(str(name), float(res.statistic), p, p_adj, p_adj < alpha))
    return BBSDResult(
        per_class=tuple(rows),
        any_significant=any(r.significant for r in rows),
        min_p_adjusted=min(r.p_adjusted for r in rows),
        correction="bonferroni",
        alpha=float(alpha),
    )


def bbsd_gap_test(bb: BBSDResult, shown: int = 6) -> GapTest:
    """The headline row of BBSD: how many classes' output distributions shifted."""
    shifted = bb.shifted
    listed = ", ".join(shifted[:shown]) + ("…" if len(shifted) > shown else "")
    return GapTest(
        name="BBSD (KS on mean class probabilities)",
        value=len(shifted),
        ci=NO_INTERVAL,
        ci_method="",
        p_value=bb.min_p_adjusted,
        p_floor=None,
        significant=bb.any_significant,
        test=f"min adjusted p over {len(bb.per_class)} classes ({bb.correction})",
        reading=(
            f"model outputs shift: {listed}"
            if bb.any_significant
            else "no class-probability shift detected"
        ),
        note=f"of {len(bb.per_class)} classes",
    )
