"""Fréchet distance between Gaussian fits of two embedding samples (the standard FD, as
pytorch-fid computes it, on the full embedding when n > d), with a bootstrap."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from domain_gap.analysis.results import FrechetResult, GapTest
from domain_gap.analysis.stats_utils import (
    as_matrix,
    basic_interval,
    bootstrap_values,
    check_same_dim,
)

__all__ = [
    "common_fd_dims",
    "frechet_distance",
    "frechet_from_moments",
    "frechet_test",
    "frechet_with_ci",
]


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_from_moments(
    mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray
) -> float:
    """The standard Fréchet distance between N(μa, Σa) and N(μb, Σb), always real and ≥ 0:
    ‖μa - μb‖² + Tr Σa + Tr Σb - 2 Tr (Σa^½ Σb Σa^½)^½.

    Pure: it takes moments, so a streamed (or distributed) pass that only accumulates sums
    gets the same number. The symmetric route replaces ``sqrtm(Σa Σb)`` (pytorch-fid), equal in
    exact arithmetic, whose non-symmetric product gives complex noise near singular covariances.
    """
    mu_a, mu_b = np.atleast_1d(np.asarray(mu_a, float)), np.atleast_1d(np.asarray(mu_b, float))
    cov_a, cov_b = np.atleast_2d(np.asarray(cov_a, float)), np.atleast_2d(np.asarray(cov_b, float))
    d = mu_a.shape[0]
    for name, arr, shape in (
        ("mu_b", mu_b, (d,)),
        ("cov_a", cov_a, (d, d)),
        ("cov_b", cov_b, (d, d)),
    ):
        if arr.shape != shape:
            raise ValueError(f"{name}: expected shape {shape} (from mu_a), got {arr.shape}")
    mu = mu_a - mu_b
    sa = _sqrt_psd(cov_a)
    inner = sa @ cov_b @ sa
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_sqrt = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    value = float(mu @ mu) + float(np.trace(cov_a)) + float(np.trace(cov_b)) - 2.0 * tr_sqrt
    return max(value, 0.0)


def _fd_value(x: np.ndarray, y: np.ndarray) -> float:
    """FD of the Gaussian fits (sample means, unbiased covariances) of two samples."""
    return frechet_from_moments(
        x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
    )


def _pca_project(x: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Project both samples on the top-k principal axes of the pooled data.

    Returns the projections and the share of pooled variance they keep. Exact eigen
    decomposition of the pooled d x d covariance: deterministic, O(N d² + d³).
    """
    z = np.vstack([x, y])
    mean = z.mean(0)
    zc = z - mean
    cov = zc.T @ zc / max(len(z) - 1, 1)
    w, v = np.linalg.eigh(cov)
    order = np.argsort(w)[::-1][:k]
    axes = v[:, order]
    total = float(np.clip(w, 0, None).sum())
    kept = float(np.clip(w[order], 0, None).sum()) / total if total > 0 else 1.0
    return (x - mean) @ axes, (y - mean) @ axes, kept


def common_fd_dims(dim: int, sizes: Sequence[int], max_dim: int | None = None) -> int:
    """The FD dimensions shared by every comparison of one report: the full ``dim`` when every
    domain has more images than dimensions, else ``min(sizes) - 1`` (capped by ``max_dim``).

    Passing it as ``max_dim`` to each target's FD makes their values comparable.
    """
    if dim < 1 or not sizes or min(sizes) < 2:
        raise ValueError(f"FD needs dim >= 1 and >= 2 images per domain, got {dim}, {sizes}")
    return min(dim, max_dim or dim, min(sizes) - 1)


def _fd_prepare(
    x: np.ndarray, y: np.ndarray, max_dim: int | None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    n, m, d = len(x), len(y), x.shape[1]
    k = min(d, max_dim or d, min(n, m) - 1)
    meta: dict[str, Any] = {"dims": int(k), "original_dim": int(d), "reduced": k < d}
    if k < d:
        xp, yp, kept = _pca_project(x, y, k)
        if min(n, m) <= d and k == min(n, m) - 1:
            why = f"fewer images than dimensions: min(n, m) = {min(n, m)} <= d = {d}"
        else:
            why = (
                f"capped at max_dim = {k} by the caller: analysis.max_dim, the smallest domain "
                "of the report (so that every target's FD has the same dims), or the per-class "
                "FD's fixed cap"
            )
        meta["explained_variance"] = kept
        meta["note"] = (
            f"pooled PCA to {k} of {d} dimensions ({why}), keeping {kept:.1%} of the pooled "
            "variance; not the standard FD, compare only with FDs at the same dims"
        )
        return xp, yp, meta
    meta["explained_variance"] = 1.0
    meta["note"] = f"the standard FD on the full {d}-dim embedding"
    return x, y, meta


def frechet_distance(
    x: np.ndarray, y: np.ndarray, max_dim: int | None = None, seed: int = 0
) -> FrechetResult:
    """Fréchet distance between Gaussian fits of two samples: the standard FD (pytorch-fid's)
    on the full embedding whenever both samples have more images than dimensions.

    Only when ``min(n, m) <= d`` (a covariance would be singular), or when ``max_dim < d`` is
    asked for, are both samples first projected on the top
    ``k = min(d, max_dim, min(n, m) - 1)`` principal axes of the pooled data; the result says
    so (``reduced``, ``dims``, ``note``) and the headline label names the PCA. ``seed`` is
    accepted for a uniform signature; the exact PCA used here is deterministic.

    Returns a :class:`FrechetResult` without an interval (see :func:`frechet_with_ci`).
    """
    del seed
    xs = as_matrix(x, "x (source embeddings)")
    ys = as_matrix(y, "y (target embeddings)")
    check_same_dim(xs, ys)
    if max_dim is not None and max_dim < 1:
        raise ValueError(f"max_dim: expected >= 1 or None (the full embedding), got {max_dim}")
    xp, yp, meta = _fd_prepare(xs, ys, max_dim)
    return FrechetResult(value=_fd_value(xp, yp), **meta)


def frechet_with_ci(
    x: np.ndarray,
    y: np.ndarray,
    *,
    max_dim: int | None = None,
    n_boot: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
) -> FrechetResult:
    """:func:`frechet_distance` plus a bootstrap interval and a bias-corrected value.

    The plug-in FD is biased upwards by roughly O(k²/N) in k dimensions (large when N is a few
    hundred), and each bootstrap replicate roughly doubles that bias, so a percentile interval
    can miss the estimate altogether. ``ci`` is therefore the basic (pivotal) interval
    ``[2·FD - q_hi, 2·FD - q_lo]`` clipped at 0, and ``bias_corrected`` is
    ``max(0, 2·FD - mean(replicates))``. The PCA projection is fitted once and kept fixed.
    """
    xs = as_matrix(x, "x (source embeddings)")
    ys = as_matrix(y, "y (target embeddings)")
    check_same_dim(xs, ys)
    xp, yp, meta = _fd_prepare(xs, ys, max_dim)
    value = _fd_value(xp, yp)
    reps = bootstrap_values(_fd_value, xp, yp, n_boot=n_boot, seed=seed)
    lo, hi = basic_interval(value, reps, alpha)
    finite = reps[np.isfinite(reps)]
    return FrechetResult(
        value=value,
        ci=(None if lo is None else max(0.0, lo), None if hi is None else max(0.0, hi)),
        ci_method=f"basic (pivotal) bootstrap, {n_boot} resamples per domain, clipped at 0",
        bias_corrected=max(0.0, 2 * value - float(finite.mean())) if finite.size else None,
        n_boot=int(n_boot),
        **meta,
    )


def frechet_test(fd: FrechetResult) -> GapTest:
    """The headline row of the FD: a distance with an interval, no test of its own."""
    name = (
        f"Fréchet distance (FD, {fd.dims}-dim pooled PCA)"
        if fd.reduced
        else "Fréchet distance (FD)"
    )
    return GapTest(
        name=name,
        value=fd.value,
        ci=fd.ci,
        ci_method=fd.ci_method,
        p_value=None,
        p_floor=None,
        significant=None,
        test=f"{fd.dims} dims",
        reading=fd.note,
    )
