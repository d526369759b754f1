"""Every pair of domains: MMD² and C2ST AUC, so that three cameras show at once which differ.

Pairs with the source reuse their :class:`~domain_gap.analysis.results.LatentGap`; the other
pairs run the same MMD² permutation test (exact or random Fourier features, as
:func:`~domain_gap.analysis.latent.choose_mmd` picks) at the run's frozen bandwidth and the
same C2ST. Each cell is its own test: p-values are not corrected for the number of pairs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from domain_gap.analysis.c2st import c2st
from domain_gap.analysis.latent import FLOAT64_MAX_POOLED, choose_mmd
from domain_gap.analysis.mmd import mmd_test
from domain_gap.analysis.mmd_linear import rff_mmd_test
from domain_gap.analysis.results import C2STResult, LatentGap, MMDResult, PairGap, PairwiseGaps

__all__ = ["pairwise_gaps"]

METHOD = (
    "MMD² permutation test at the run's frozen bandwidth and C2ST AUC for every pair; pairs with "
    "the source are its latent-gap results; each cell is its own test (not corrected across pairs)"
)


def _cell(a: str, b: str, n: tuple[int, int], mmd: MMDResult, c2: C2STResult) -> PairGap:
    return PairGap(
        a=a,
        b=b,
        n_a=n[0],
        n_b=n[1],
        mmd2=float(mmd.mmd2),
        mmd_p=mmd.p_value,
        mmd_p_floor=mmd.p_floor,
        mmd_significant=bool(mmd.significant),
        auc=float(c2.auc),
        auc_ci=c2.auc_ci,
        auc_significant=bool(c2.significant),
    )


def pairwise_gaps(
    embeddings: Mapping[str, np.ndarray],
    known: Mapping[tuple[str, str], LatentGap],
    *,
    bandwidth: float,
    permutations: int,
    alpha: float,
    seed: int,
) -> PairwiseGaps:
    """MMD² and C2ST AUC of every pair of ``embeddings`` (domain → (n, d), in order).

    ``known`` maps ``(a, b)`` to an already computed latent gap of that pair (a = its source).
    """
    names: Sequence[str] = list(embeddings)
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            x, y = embeddings[a], embeddings[b]
            gap = known.get((a, b)) or known.get((b, a))
            if gap is not None:  # MMD² and AUC are symmetric in the two samples
                pairs.append(_cell(a, b, (len(x), len(y)), gap.mmd, gap.c2st))
                continue
            pooled = len(x) + len(y)
            if choose_mmd(pooled) == "exact":
                dtype = "float64" if pooled <= FLOAT64_MAX_POOLED else "float32"
                mmd = mmd_test(x, y, bandwidth, permutations, seed, alpha=alpha, dtype=dtype)
            else:
                mmd = rff_mmd_test(x, y, bandwidth, permutations, seed, alpha=alpha)
            pairs.append(_cell(a, b, (len(x), len(y)), mmd, c2st(x, y, seed=seed, alpha=alpha)))
    return PairwiseGaps(tuple(names), tuple(pairs), float(bandwidth), permutations, alpha, METHOD)
