"""Concepts in the latent space: k-means clusters and per-class embedding gaps.

Clusters of per-image embeddings stand for "concepts" (scene types). Comparing each
cluster's share of source and target images shows which concepts the target lacks or adds,
and its mean loss shows which ones hurt. Pure functions on arrays, JSON-serialisable output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from domain_gap.analysis.frechet import frechet_distance
from domain_gap.analysis.mmd import mmd_test
from domain_gap.analysis.results import ClassGap, ClusterRow
from domain_gap.analysis.stats_utils import as_matrix, bh_adjust, fnum

__all__ = [
    "MISSING_RATIO",
    "UNDER_RATIO",
    "Concepts",
    "class_conditional_gap",
    "cluster",
    "cluster_table",
    "fit_concepts",
    "nearest_to_centers",
    "reduce_embeddings",
]

PRE_PCA_DIM = 50
"""Embeddings are standardised and reduced to this many PCA dimensions before UMAP/t-SNE/k-means."""

MISSING_RATIO = 0.1
"""share_target / share_source at or below this: "missing in target" (at or above its inverse,
10: "missing in source")."""
UNDER_RATIO = 0.5
"""At or below this (and above ``MISSING_RATIO``): "under-represented in target"; at or above
its inverse, 2: "over-represented in target"; in between: "shared"."""


def _reducer(x: np.ndarray, seed: int) -> tuple[Pipeline, np.ndarray]:
    """Standardise columns (constant ones stay 0) and keep at most ``PRE_PCA_DIM`` PCA axes.

    Returns the fitted reduction and ``x`` reduced by it.
    """
    k = min(PRE_PCA_DIM, x.shape[1], x.shape[0] - 1)
    steps: list[Any] = [StandardScaler()]
    if k < x.shape[1]:
        steps.append(PCA(n_components=k, svd_solver="full", random_state=seed))
    reducer = make_pipeline(*steps)
    return reducer, reducer.fit_transform(x)


def reduce_embeddings(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """``x`` standardised and reduced to at most ``PRE_PCA_DIM`` PCA axes (map and k-means)."""
    return _reducer(x, seed)[1]


@dataclass(frozen=True)
class Concepts:
    """Fitted k-means concepts: new embeddings (a mitigated target) map to the same clusters."""

    labels: np.ndarray
    centers: np.ndarray
    reducer: Pipeline
    kmeans: KMeans

    def assign(self, x: np.ndarray) -> np.ndarray:
        """The concept of each row of ``x``, in the space the clusters were fitted in."""
        xs = as_matrix(x, "x (embeddings)", min_rows=1)
        return self.kmeans.predict(self.reducer.transform(xs)).astype(np.int64)


def fit_concepts(x: np.ndarray, k: int, seed: int = 0) -> Concepts:
    """k-means concepts with the fitted reduction kept (see :func:`cluster`)."""
    xs = as_matrix(x, "x (embeddings)")
    if not 1 <= k <= len(xs):
        raise ValueError(f"k: expected 1..{len(xs)} (number of samples), got {k}")
    reducer, z = _reducer(xs, seed)
    kmeans = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(z)
    labels = kmeans.labels_.astype(np.int64)
    centers = np.stack(
        [
            xs[labels == c].mean(0) if np.any(labels == c) else np.zeros(xs.shape[1])
            for c in range(k)
        ]
    )
    return Concepts(labels, centers, reducer, kmeans)


def cluster(x: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k-means concepts: labels (N,) and centres (k, d) in the original embedding units.

    k-means (``n_init=10``, seeded) runs on standardised, PCA-reduced embeddings so that no
    single high-variance channel dominates; each returned centre is the mean of its members
    in the original space (used to pick example images).
    """
    concepts = fit_concepts(x, k, seed)
    return concepts.labels, concepts.centers


def nearest_to_centers(
    x: np.ndarray,
    labels: np.ndarray,
    centers: np.ndarray,
    domains: np.ndarray,
    per_domain: int = 4,
) -> dict[int, dict[str, list[int]]]:
    """For each cluster and domain, indices of the members closest to the cluster centre."""
    xs = as_matrix(x, "x (embeddings)", min_rows=1)
    labels = np.asarray(labels)
    domains = np.asarray(domains).astype(str)
    out: dict[int, dict[str, list[int]]] = {}
    for c in range(len(centers)):
        out[c] = {}
        for dom in np.unique(domains):
            idx = np.flatnonzero((labels == c) & (domains == dom))
            dist = np.linalg.norm(xs[idx] - centers[c], axis=1)
            out[c][str(dom)] = [int(i) for i in idx[np.argsort(dist, kind="stable")][:per_domain]]
    return out


def _status(share_s: float, share_t: float) -> str:
    if share_s == 0 and share_t == 0:
        return "empty"
    if share_s == 0:
        return "missing in source"
    ratio = share_t / share_s
    if ratio <= MISSING_RATIO:
        return "missing in target"
    if ratio >= 1 / MISSING_RATIO:
        return "missing in source"
    if ratio <= UNDER_RATIO:
        return "under-represented in target"
    if ratio >= 1 / UNDER_RATIO:
        return "over-represented in target"
    return "shared"


def _mean_or_none(values: np.ndarray) -> float | None:
    v = values[np.isfinite(values)]
    return float(v.mean()) if v.size else None


def cluster_table(
    labels: np.ndarray,
    domains: np.ndarray,
    loss: np.ndarray,
    source: str,
    target: str,
    *,
    x: np.ndarray | None = None,
    centers: np.ndarray | None = None,
    examples: int = 4,
    alpha: float = 0.05,
    ids: Sequence[str] | None = None,
) -> tuple[ClusterRow, ...]:
    """One row per cluster: shares per domain, loss, a status and example indices.

    ``share_source`` = share of the source images in the cluster (same for target);
    ``ratio`` = share_target / share_source (``None`` when the source share is 0). Status by
    ratio: ≤ ``MISSING_RATIO`` (0.1) "missing in target", ≤ ``UNDER_RATIO`` (0.5)
    "under-represented in target", < 2 "shared", < 10 "over-represented in target", else (or
    no source image) "missing in source". ``p_value``: Fisher exact test of the cluster's
    share between domains, ``p_adjusted``: Benjamini-Hochberg across clusters, ``significant``
    when ``p_adjusted < alpha`` (small clusters can get a status by chance; check it).
    ``loss`` may hold NaN for unlabeled images; means skip them (``None`` if none left).
    With ``x`` and ``centers`` (from :func:`cluster`), ``examples`` lists per domain the
    indices of the ``examples`` members closest to the centre, for thumbnails; with ``ids``
    (one per sample), their ids instead.
    """
    labels = np.asarray(labels).astype(np.int64)
    domains = np.asarray(domains).astype(str)
    loss_arr = np.asarray(loss, dtype=np.float64)
    if not (len(labels) == len(domains) == len(loss_arr)):
        raise ValueError(
            f"labels, domains and loss must have one entry per sample, got lengths "
            f"{len(labels)}, {len(domains)}, {len(loss_arr)}"
        )
    is_s, is_t = domains == source, domains == target
    n_s, n_t = int(is_s.sum()), int(is_t.sum())
    if n_s == 0 or n_t == 0:
        raise ValueError(
            f"domains: expected samples of both {source!r} and {target!r}, "
            f"found {sorted(set(domains.tolist()))}"
        )
    n_clusters = int(labels.max()) + 1 if len(labels) else 0
    near = None
    if x is not None and centers is not None:
        near = nearest_to_centers(x, labels, centers, domains, per_domain=examples)
    rows: list[dict[str, Any]] = []
    for c in range(n_clusters):
        in_c = labels == c
        cs, ct = int((in_c & is_s).sum()), int((in_c & is_t).sum())
        share_s, share_t = cs / n_s, ct / n_t
        rows.append(
            {
                "cluster": c,
                "n": int(in_c.sum()),
                "n_source": cs,
                "n_target": ct,
                "share_source": share_s,
                "share_target": share_t,
                "ratio": fnum(share_t / share_s) if share_s > 0 else None,
                "mean_loss_source": _mean_or_none(loss_arr[in_c & is_s]),
                "mean_loss_target": _mean_or_none(loss_arr[in_c & is_t]),
                "mean_loss": _mean_or_none(loss_arr[in_c & (is_s | is_t)]),
                "status": _status(share_s, share_t),
                "p_value": float(stats.fisher_exact([[cs, n_s - cs], [ct, n_t - ct]]).pvalue),
                "examples": _examples(near, c, (source, target), ids),
            }
        )
    adjusted = bh_adjust([r["p_value"] for r in rows])
    return tuple(
        ClusterRow(**row, p_adjusted=p_adj, significant=p_adj is not None and p_adj < alpha)
        for row, p_adj in zip(rows, adjusted, strict=True)
    )


def _examples(
    near: dict[int, dict[str, list[int]]] | None,
    c: int,
    domains: tuple[str, str],
    ids: Sequence[str] | None,
) -> dict[str, tuple[Any, ...]] | None:
    """Per domain, the members of cluster ``c`` nearest its centre (ids when given)."""
    if near is None:
        return None
    return {
        dom: tuple(i if ids is None else str(ids[i]) for i in near[c].get(dom, []))
        for dom in domains
    }


def class_conditional_gap(
    emb_s: np.ndarray,
    counts_s: np.ndarray,
    emb_t: np.ndarray,
    counts_t: np.ndarray,
    iou_s: np.ndarray,
    iou_t: np.ndarray,
    class_names: Sequence[str],
    *,
    bandwidths: Sequence[float | None] | None = None,
    permutations: int = 200,
    max_dim: int = 16,
    min_samples: int = 10,
    alpha: float = 0.05,
    seed: int = 0,
    dataset_iou_source: np.ndarray | None = None,
    dataset_iou_target: np.ndarray | None = None,
) -> tuple[ClassGap, ...]:
    """Per class: how far apart are the class's pixel embeddings in source and target?

    ``emb_*`` (n, C, d) are per-image, per-class mean embeddings and ``counts_*`` (n, C) the
    class's pixel counts; only images where the class is present (count > 0) enter. ``iou_*``
    (n, C) are per-image IoUs (NaN where undefined). The MMD test standardises features as
    :func:`~domain_gap.analysis.mmd.mmd_test` does; ``bandwidths[c]`` (frozen by the caller:
    the ``bandwidth`` of class c in a baseline run) or, when missing, the median distance of
    the standardised source embeddings of class c. Classes with
    fewer than ``min_samples`` images on either side are reported with ``computable: False``
    and a ``note``, never dropped. ``p_adjusted``: Benjamini-Hochberg over computable classes.
    ``dataset_iou_*`` (C,), the IoUs of summed confusion matrices per domain, are carried
    along with their drop (None when not given).
    """
    es, et = np.asarray(emb_s), np.asarray(emb_t)  # float16 in the cache: widened per class
    cs, ct = np.asarray(counts_s), np.asarray(counts_t)
    is_, it = np.asarray(iou_s, dtype=np.float64), np.asarray(iou_t, dtype=np.float64)
    if es.ndim != 3 or et.ndim != 3 or es.shape[1:] != et.shape[1:] or es.dtype.kind != "f":
        raise ValueError(
            f"emb_s/emb_t: expected float (n, C, d) arrays with the same C and d, "
            f"got {es.shape} and {et.shape}"
        )
    n_cls = es.shape[1]
    for name, arr, n in (
        ("counts_s", cs, len(es)),
        ("counts_t", ct, len(et)),
        ("iou_s", is_, len(es)),
        ("iou_t", it, len(et)),
    ):
        if arr.shape != (n, n_cls):
            raise ValueError(f"{name}: expected shape {(n, n_cls)}, got {arr.shape}")
    if len(class_names) != n_cls:
        raise ValueError(f"class_names: expected {n_cls} names, got {len(class_names)}")
    if bandwidths is not None and len(bandwidths) != n_cls:
        raise ValueError(f"bandwidths: expected {n_cls} values, got {len(bandwidths)}")
    rows: list[dict[str, Any]] = []
    for c, name in enumerate(class_names):
        ms, mt = cs[:, c] > 0, ct[:, c] > 0
        iou_src, iou_tgt = _mean_or_none(is_[:, c]), _mean_or_none(it[:, c])
        row: dict[str, Any] = {
            "class_name": str(name),
            "n_source": int(ms.sum()),
            "n_target": int(mt.sum()),
            "iou_source": iou_src,
            "iou_target": iou_tgt,
            "iou_drop": (iou_src - iou_tgt)
            if iou_src is not None and iou_tgt is not None
            else None,
            "computable": False,
            "mmd2": None,
            "p_value": None,
            "bandwidth": None,
            "fd": None,
            "fd_dims": None,
            "note": "",
        }
        if row["n_source"] < min_samples or row["n_target"] < min_samples:
            row["note"] = (
                f"not computable: class present in {row['n_source']} source and "
                f"{row['n_target']} target images, need >= {min_samples} on each side"
            )
            rows.append(row)
            continue
        xs, ys = es[ms, c, :].astype(np.float64), et[mt, c, :].astype(np.float64)
        bw = None if bandwidths is None else bandwidths[c]
        test = mmd_test(xs, ys, bandwidth=bw, permutations=permutations, seed=seed + c)
        fd = frechet_distance(xs, ys, max_dim=max_dim)
        row.update(
            computable=True,
            mmd2=test.mmd2,
            p_value=test.p_value,
            bandwidth=test.bandwidth,
            fd=fd.value,
            fd_dims=fd.dims,
            note=fd.note,
        )
        rows.append(row)
    adjusted = bh_adjust([r["p_value"] for r in rows])
    return tuple(
        ClassGap(
            **row,
            **_dataset_iou(dataset_iou_source, dataset_iou_target, c),
            p_adjusted=p_adj,
            significant=p_adj is not None and p_adj < alpha,
        )
        for c, (row, p_adj) in enumerate(zip(rows, adjusted, strict=True))
    )


def _dataset_iou(
    iou_s: np.ndarray | None, iou_t: np.ndarray | None, c: int
) -> dict[str, float | None]:
    vs = None if iou_s is None else fnum(iou_s[c])
    vt = None if iou_t is None else fnum(iou_t[c])
    return {
        "dataset_iou_source": vs,
        "dataset_iou_target": vt,
        "dataset_iou_drop": None if vs is None or vt is None else vs - vt,
    }
