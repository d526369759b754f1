"""The 2-D latent map: PCA, t-SNE (openTSNE) or UMAP, and a cache keyed by its input.

"auto" picks t-SNE up to :data:`TSNE_MAX_SAMPLES` points: openTSNE is compiled ahead of time,
so a fresh process pays no JIT (UMAP's numba compilation cost 15-22 s per process here, more
than every statistic of the demo together, while openTSNE maps 300-600 points in 1-2.5 s).
UMAP (optional) takes over above that, where t-SNE's cost grows. A map is cached under the
hash of exactly the embeddings it was fitted on, the method, the seed and the library
versions, so a rerun on the same records reads it back instead of fitting it again.
"""

from __future__ import annotations

import hashlib
import io
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA

from domain_gap.analysis.concepts import reduce_embeddings
from domain_gap.analysis.stats_utils import as_matrix
from domain_gap.atomic import write_atomic

__all__ = [
    "METHODS",
    "TSNE_MAX_SAMPLES",
    "cached_projection",
    "choose_method",
    "project_2d",
]

METHODS = ("auto", "pca", "tsne", "umap")
TSNE_MAX_SAMPLES = 5000
""""auto" uses t-SNE from 4 points up to this many, then UMAP when installed (else PCA)."""


def _umap_available() -> bool:
    try:
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def choose_method(n: int, method: str = "auto") -> str:
    """The method "auto" resolves to for ``n`` points (others are returned as given)."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    if method != "auto":
        return method
    if 3 < n <= TSNE_MAX_SAMPLES:
        return "tsne"
    return "umap" if n > TSNE_MAX_SAMPLES and _umap_available() else "pca"


def project_2d(x: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates (N, 2) float64 of the rows of ``x`` and the method used.

    Deterministic for a given ``seed`` (t-SNE and UMAP run single-threaded).
    """
    xs = as_matrix(x, "x (embeddings)").astype(np.float64)
    n = len(xs)
    method = choose_method(n, method)
    z = reduce_embeddings(xs, seed)
    if method == "pca":
        coords = np.zeros((n, 2))
        k = min(2, z.shape[1])
        coords[:, :k] = PCA(n_components=k, svd_solver="full").fit_transform(z)
        return coords, "pca"
    if method == "tsne":
        if n <= 3:
            raise ValueError(f"x: t-SNE needs more than 3 samples, got {n}")
        from openTSNE import TSNE

        tsne = TSNE(
            n_components=2,
            perplexity=float(min(30.0, (n - 1) / 3)),
            initialization="pca",
            random_state=seed,
            n_jobs=1,
            verbose=False,
        )
        return np.asarray(tsne.fit(z), dtype=np.float64), "tsne"
    if not _umap_available():
        raise ValueError("method='umap' needs the optional package umap-learn")
    import umap

    reducer = umap.UMAP(
        n_components=2, n_neighbors=min(15, n - 1), random_state=seed, n_jobs=1, init="spectral"
    )
    return np.asarray(reducer.fit_transform(z), dtype=np.float64), "umap"


def _key(x: np.ndarray, method: str, seed: int) -> str:
    versions = []
    for lib in ("openTSNE", "umap-learn", "scikit-learn"):
        try:
            versions.append(f"{lib}={importlib_metadata.version(lib)}")
        except importlib_metadata.PackageNotFoundError:
            versions.append(f"{lib}=-")
    arr = np.ascontiguousarray(x, dtype=np.float32)
    h = hashlib.sha256(f"{arr.shape}|{method}|{seed}|{','.join(versions)}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()[:32]


def cached_projection(
    x: np.ndarray, cache_dir: str | Path | None, method: str = "auto", seed: int = 0
) -> tuple[np.ndarray, str]:
    """:func:`project_2d`, read back from ``cache_dir`` when these exact rows were mapped
    before (``None``: no cache). A damaged cache file is ignored and rewritten."""
    if cache_dir is None:
        return project_2d(x, method, seed)
    path = Path(cache_dir) / "projections" / f"{_key(x, method, seed)}.npz"
    try:
        with np.load(path, allow_pickle=False) as f:
            coords, used = f["coords"], str(f["method"])
        if coords.shape == (len(x), 2) and np.isfinite(coords).all():
            return coords.astype(np.float64), used
    except (OSError, ValueError, KeyError):
        pass
    coords, used = project_2d(x, method, seed)
    buf = io.BytesIO()
    np.savez(buf, coords=coords, method=np.asarray(used))
    write_atomic(path, buf.getvalue())
    return coords, used
