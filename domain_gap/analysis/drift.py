"""Metadata drift: which input-level properties differ between domains, and which matter.

Inputs are per-image metadata fields (``domain_gap.metadata``) as arrays per domain, plus the
per-image loss in the target domain. For every field shared by both domains:

* numeric fields: two-sample KS test, Wasserstein distance (raw and in source-SD units),
  standardised mean difference (Cohen's d, pooled SD, target minus source), shared-edge
  histograms, and the Spearman correlation of the field with the loss inside the target;
* categorical fields (strings, booleans): chi-square test of the domain x category table and
  Cramér's V, plus the mean target loss per category and a Kruskal-Wallis test of it.

P-values are Benjamini-Hochberg adjusted across all tested fields (one family). Pure numpy /
scipy; JSON-serialisable output (``None`` where a number is not computable, with a ``note``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import stats

from domain_gap.analysis.results import (
    CategoryDrift,
    CategoryDriver,
    DriftField,
    Driver,
    Histogram,
    MetadataDrift,
    ScoreAgreement,
    Skipped,
)
from domain_gap.analysis.stats_utils import bh_adjust, fnum

__all__ = [
    "DRIVER_RULE",
    "NON_DRIFT_FIELDS",
    "drift_fields",
    "metadata_drift",
    "score_agreement",
]

NON_DRIFT_FIELDS = ("domain", "group", "file_name")
"""Identifiers, not input properties: left out of the drift tests (they differ by design)."""


def drift_fields(metadata: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The metadata fields that describe the input (identifiers left out)."""
    return {k: v for k, v in metadata.items() if k not in NON_DRIFT_FIELDS}


def known_fields(fields: Mapping[str, np.ndarray], user_prefix: str) -> dict[str, np.ndarray]:
    """``fields`` less the user fields missing for every image of this side.

    :func:`metadata_drift` then lists such a field as skipped ("missing in" that domain)
    rather than testing an all-missing column.
    """

    def known(v: np.ndarray) -> bool:
        return bool(np.isfinite(v).any()) if v.dtype.kind == "f" else bool((v != "").any())

    return {k: v for k, v in fields.items() if not k.startswith(user_prefix) or known(v)}


DRIVER_RULE = (
    "numeric fields whose distribution shift is significant after Benjamini-Hochberg "
    "(p_adjusted < alpha) and whose Spearman correlation with loss in the target is defined; "
    "score = KS statistic x |rho| (both in [0, 1], so a near-constant field with a huge SMD "
    "cannot dominate); fields whose loss association is itself significant rank first, then by "
    "score; 'aligned' when the shift moves the target towards values that go with higher loss "
    "(sign(SMD) = sign(rho))"
)


def _as_field(values: object, field: str, domain: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{domain}[{field!r}]: expected a 1-D array, got shape {arr.shape}")
    return arr


def _is_numeric(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype.kind in "iuf" and b.dtype.kind in "iuf"


def _histogram(a: np.ndarray, b: np.ndarray, bins: int) -> Histogram:
    edges = np.histogram_bin_edges(np.concatenate([a, b]), bins=bins)
    return Histogram(
        edges=tuple(float(e) for e in edges),
        source=tuple(int(c) for c in np.histogram(a, edges)[0]),
        target=tuple(int(c) for c in np.histogram(b, edges)[0]),
    )


def _spearman(
    values: np.ndarray, loss: np.ndarray | None
) -> tuple[float | None, float | None, str]:
    """Spearman rho and p of the field against the loss within the target (finite pairs)."""
    if loss is None:
        return None, None, "no target loss given"
    ok = np.isfinite(values) & np.isfinite(loss)
    if ok.sum() < 3:
        return None, None, f"only {int(ok.sum())} target images with both value and loss"
    v, lo = values[ok], loss[ok]
    if np.ptp(v) == 0:
        return None, None, "no variation in the target"
    if np.ptp(lo) == 0:
        return None, None, "no variation of the loss in the target"
    res = stats.spearmanr(v, lo)
    return fnum(res.statistic), fnum(res.pvalue), ""


def _numeric_row(
    field: str, a_raw: np.ndarray, b_raw: np.ndarray, loss: np.ndarray | None, bins: int
) -> dict[str, Any]:
    a_all = a_raw.astype(np.float64)
    b_all = b_raw.astype(np.float64)
    a, b = a_all[np.isfinite(a_all)], b_all[np.isfinite(b_all)]
    row: dict[str, Any] = {
        "field": field,
        "n_source": int(a.size),
        "n_target": int(b.size),
        "n_missing_source": int(a_all.size - a.size),
        "n_missing_target": int(b_all.size - b.size),
    }
    notes: list[str] = []
    if a.size < 1 or b.size < 1:
        row.update(status="not computable", p_value=None, note="no finite values on one side")
        return row
    sd_a = float(a.std(ddof=1)) if a.size > 1 else 0.0
    sd_b = float(b.std(ddof=1)) if b.size > 1 else 0.0
    dof = a.size + b.size - 2
    pooled = math.sqrt(((a.size - 1) * sd_a**2 + (b.size - 1) * sd_b**2) / dof) if dof > 0 else 0.0
    diff = float(b.mean() - a.mean())
    ks = stats.ks_2samp(a, b)
    wd = float(stats.wasserstein_distance(a, b))
    constant = np.ptp(a) == 0 and np.ptp(b) == 0
    status = "no variation" if constant and diff == 0 else "tested"
    if pooled > 0:
        smd: float | None = diff / pooled
    else:
        smd = None
        notes.append("SMD undefined: no variation within either domain")
    if sd_a == 0:
        notes.append("Wasserstein in SD units undefined: the source field is constant")
    rho, rho_p, why = _spearman(b_all, loss)
    if why:
        notes.append(f"Spearman undefined: {why}")
    row.update(
        mean_source=float(a.mean()),
        mean_target=float(b.mean()),
        std_source=sd_a,
        std_target=sd_b,
        ks=float(ks.statistic),
        p_value=float(ks.pvalue),
        wasserstein=wd,
        wasserstein_sd=wd / sd_a if sd_a > 0 else None,
        smd=smd,
        spearman_rho=rho,
        spearman_p=rho_p,
        histogram=_histogram(a, b, bins),
        status=status,
        note="; ".join(notes),
    )
    return row


def _categorical_row(
    field: str, a: np.ndarray, b: np.ndarray, loss: np.ndarray | None
) -> dict[str, Any]:
    a, b = a.astype(str), b.astype(str)
    known = b != ""  # an empty string is a missing value: counted, never a category
    n_missing = (int((a == "").sum()), int((~known).sum()))
    a, b = a[a != ""], b[known]
    loss = None if loss is None else loss[known]
    cats = sorted(set(a.tolist()) | set(b.tolist()))
    table = np.array([[int(np.sum(a == c)) for c in cats], [int(np.sum(b == c)) for c in cats]])
    row: dict[str, Any] = {
        "field": field,
        "n_source": int(a.size),
        "n_target": int(b.size),
        "categories": tuple(cats),
        "counts_source": tuple(int(v) for v in table[0]),
        "counts_target": tuple(int(v) for v in table[1]),
        "n_missing_source": n_missing[0],
        "n_missing_target": n_missing[1],
    }
    if len(cats) < 2 or a.size == 0 or b.size == 0:
        row.update(
            chi2=0.0,
            dof=0,
            p_value=1.0,
            cramers_v=0.0,
            status="no variation",
            note="a single category in both domains" if len(cats) < 2 else "an empty domain",
        )
    else:
        res = stats.chi2_contingency(table)
        n_tot = int(table.sum())
        v = math.sqrt(float(res.statistic) / (n_tot * (min(table.shape) - 1)))
        row.update(
            chi2=float(res.statistic),
            dof=int(res.dof),
            p_value=float(res.pvalue),
            cramers_v=v,
            status="tested",
            note="",
        )
    row["loss_by_category"] = None
    row["kruskal_p"] = None
    if loss is not None:
        means: dict[str, float | None] = {}
        groups = []
        for c in cats:
            vals = loss[(b == c) & np.isfinite(loss)]
            means[c] = float(vals.mean()) if vals.size else None
            if vals.size:
                groups.append(vals)
        row["loss_by_category"] = means
        if len(groups) >= 2 and np.ptp(np.concatenate(groups)) > 0:
            row["kruskal_p"] = fnum(stats.kruskal(*groups).pvalue)
    return row


def _direction_sentence(
    field: str, smd: float, rho: float, target: str, score: str = "loss"
) -> str:
    shift = "higher" if smd > 0 else "lower"
    assoc = "higher" if rho > 0 else "lower"
    aligned = (smd > 0) == (rho > 0)
    tail = (
        f"so the shift goes with a higher {score} in {target}"
        if aligned
        else f"so this shift alone would lower the {score}"
    )
    return (
        f"{target} has {shift} {field} ({smd:+.1f} SD) and higher values go with {assoc} "
        f"{score} (rho={rho:.2f}), {tail}"
    )


def score_agreement(domain: str, score: np.ndarray, loss: np.ndarray) -> ScoreAgreement:
    """Spearman correlation of a label-free per-image score with the loss (finite pairs)."""
    s, lo = np.asarray(score, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    rho, p, why = _spearman(s, lo)
    n = int((np.isfinite(s) & np.isfinite(lo)).sum())
    return ScoreAgreement(domain, n, rho, p, why.replace("target", domain))


def metadata_drift(
    source: Mapping[str, np.ndarray],
    target: Mapping[str, np.ndarray],
    target_loss: np.ndarray | None,
    alpha: float = 0.05,
    *,
    source_name: str = "source",
    target_name: str = "target",
    bins: int = 20,
    score: str = "loss",
) -> MetadataDrift:
    """Per-field shift tests between domains and a ranked table of likely gap drivers.

    ``source`` / ``target`` map field name → 1-D array (one value per image; NaN for a missing
    numeric value). Numeric dtypes (int/float) are numeric fields; strings and booleans are
    categorical. Fields present on one side only are listed under ``skipped``.
    ``target_loss`` (one per target image, NaN where unknown) may be ``None``: then no loss
    association and no drivers are computed. ``drivers`` follows :data:`DRIVER_RULE`.
    ``score`` names what ``target_loss`` holds (a label-free score on an unlabeled target).

    Returns a :class:`~domain_gap.analysis.results.MetadataDrift`.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: expected in (0, 1), got {alpha}")
    loss = None if target_loss is None else np.asarray(target_loss, dtype=np.float64)
    n_t: int | None = None
    for dom, fields in ((source_name, source), (target_name, target)):
        lengths = {k: len(_as_field(v, k, dom)) for k, v in fields.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"{dom}: every field needs one value per image, got lengths {lengths}")
        if dom == target_name and lengths:
            n_t = next(iter(lengths.values()))
    if loss is not None and n_t is not None and len(loss) != n_t:
        raise ValueError(
            f"target_loss: expected {n_t} values (one per target image), got {len(loss)}"
        )

    numeric: list[dict[str, Any]] = []
    categorical: list[dict[str, Any]] = []
    skipped: list[Skipped] = []
    for field in sorted(set(source) | set(target)):
        if field not in source or field not in target:
            side = target_name if field not in target else source_name
            skipped.append(Skipped(field, f"missing in {side}"))
            continue
        a, b = np.asarray(source[field]), np.asarray(target[field])
        if _is_numeric(a, b):
            numeric.append(_numeric_row(field, a, b, loss, bins))
        else:
            categorical.append(_categorical_row(field, a, b, loss))
    _adjust(numeric + categorical, alpha)
    fields = tuple(DriftField(**r) for r in numeric)
    cats = tuple(CategoryDrift(**r) for r in categorical)
    return MetadataDrift(
        numeric=fields,
        categorical=cats,
        category_drivers=_category_drivers(cats, alpha, target_name, score),
        category_driver_rule=CATEGORY_DRIVER_RULE,
        drivers=_drivers(fields, alpha, target_name, score),
        skipped=tuple(skipped),
        alpha=float(alpha),
        correction="benjamini-hochberg across all tested fields",
        driver_rule=DRIVER_RULE,
        source=source_name,
        target=target_name,
        score=score,
    )


def _adjust(rows: list[dict[str, Any]], alpha: float) -> None:
    """Benjamini-Hochberg over the tested rows (one family); sets the status of each."""
    tested = [r.get("p_value") if r["status"] == "tested" else None for r in rows]
    for row, p_adj in zip(rows, bh_adjust(tested), strict=True):
        # Constant fields keep p = 1 but do not enlarge the BH family.
        row["p_adjusted"] = p_adj if row["status"] == "tested" else row.get("p_value")
        row["significant"] = p_adj is not None and p_adj < alpha
        if row["status"] == "tested":
            row["status"] = "shifted" if row["significant"] else "no significant shift"


CATEGORY_DRIVER_RULE = (
    "categorical fields whose mix shifts significantly (chi-square, Benjamini-Hochberg "
    "p_adjusted < alpha) and whose target score differs by category (at least two categories "
    "with a mean); those with a Kruskal-Wallis p < alpha rank first, then by Cramér's V"
)


def _category_drivers(
    rows: tuple[CategoryDrift, ...], alpha: float, target: str, score: str
) -> tuple[CategoryDriver, ...]:
    """Shifted categorical fields that go with the score, ranked by CATEGORY_DRIVER_RULE."""
    found = []
    for r in rows:
        means = {c: m for c, m in (r.loss_by_category or {}).items() if m is not None}
        if not r.significant or len(means) < 2:
            continue
        n_s, n_t = max(sum(r.counts_source), 1), max(sum(r.counts_target), 1)
        diffs = [t / n_t - s / n_s for s, t in zip(r.counts_source, r.counts_target, strict=True)]
        k = int(np.argmax(diffs))
        cat = r.categories[k]
        rest = [m for c, m in means.items() if c != cat]
        assoc = r.kruskal_p is not None and r.kruskal_p < alpha
        found.append((r, cat, r.counts_source[k] / n_s, r.counts_target[k] / n_t, rest, assoc))
    found.sort(key=lambda f: (not f[5], -f[0].cramers_v))
    out = []
    for rank, (r, cat, share_s, share_t, rest, assoc) in enumerate(found, start=1):
        mean_c = (r.loss_by_category or {}).get(cat)
        mean_rest = float(np.mean(rest)) if rest else None
        sentence = f"{target} has more {r.field} = {cat!r} ({share_t:.0%} vs {share_s:.0%})"
        if mean_c is not None and mean_rest is not None:
            sentence += f", whose mean {score} is {mean_c:.3g} against {mean_rest:.3g} elsewhere"
        out.append(
            CategoryDriver(
                rank=rank,
                field=r.field,
                cramers_v=r.cramers_v,
                p_adjusted=r.p_adjusted,
                kruskal_p=r.kruskal_p,
                association_significant=assoc,
                category=cat,
                share_source=share_s,
                share_target=share_t,
                score_category=mean_c,
                score_rest=mean_rest,
                sentence=sentence,
            )
        )
    return tuple(out)


def _drivers(
    numeric: tuple[DriftField, ...], alpha: float, target: str, score: str
) -> tuple[Driver, ...]:
    """Shifted fields that go with the loss, ranked by :data:`DRIVER_RULE`."""
    found = []
    for r in numeric:
        if not r.significant or r.smd is None or r.spearman_rho is None or r.ks is None:
            continue
        assoc = r.spearman_p is not None and r.spearman_p < alpha
        found.append((r, r.smd, r.spearman_rho, r.ks, assoc))
    found.sort(key=lambda f: (not f[4], -f[3] * abs(f[2])))
    return tuple(
        Driver(
            rank=rank,
            field=r.field,
            smd=smd,
            spearman_rho=rho,
            spearman_p=r.spearman_p,
            association_significant=assoc,
            p_adjusted=r.p_adjusted,
            ks=ks,
            score=ks * abs(rho),
            aligned=(smd > 0) == (rho > 0),
            sentence=_direction_sentence(r.field, smd, rho, target, score),
        )
        for rank, (r, smd, rho, ks, assoc) in enumerate(found, start=1)
    )
