"""Time and peak memory of the streaming MMD permutation test against dense baselines.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_mmd.py [--sizes 1000 5000 10000]``.

For n samples per side (d = 256 Gaussian features, the target shifted slightly) it times
``mmd.mmd_test`` with B permutations and records the peak of Python-tracked allocations
(``tracemalloc``; numpy buffers are tracked). Two dense baselines run where their N x N
float32 kernel matrix fits ``--dense-limit-gb``:

* ``dense-index``: the common library pattern - the full pooled kernel matrix held in
  memory, and per permutation the three sub-blocks gathered by fancy indexing and summed;
* ``dense-gemm``: the full matrix, all permutations at once as one matrix product K @ S.

All three use the same permutations, so their p-values must agree.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from domain_gap.analysis import mmd


def _dense_kernel(z: np.ndarray, bw: float) -> np.ndarray:
    z = (z - z.mean(0)).astype(np.float32)
    sq = np.einsum("ij,ij->i", z, z)
    k = z @ z.T
    k *= -2.0
    k += sq[:, None]
    k += sq[None, :]
    np.maximum(k, 0.0, out=k)
    k *= -1.0 / (2.0 * bw**2)
    np.exp(k, out=k)
    return k


def _tie_band(k_total: float, total: int, n: int) -> float:
    """The rounding band ``mmd.mmd_test`` uses for float32 ties, for equal p-values."""
    return 1000.0 * float(np.finfo(np.float32).eps) * k_total / total**2 / n


def _unbiased(k: np.ndarray, ix: np.ndarray, iy: np.ndarray) -> float:
    kxx = k[np.ix_(ix, ix)]
    kyy = k[np.ix_(iy, iy)]
    kxy = k[np.ix_(ix, iy)]
    n, m = len(ix), len(iy)
    sxx = float(kxx.sum(dtype=np.float64)) - float(np.trace(kxx))
    syy = float(kyy.sum(dtype=np.float64)) - float(np.trace(kyy))
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2 * float(kxy.mean(dtype=np.float64))


def dense_index(x: np.ndarray, y: np.ndarray, bw: float, b: int, seed: int) -> float:
    """Full kernel matrix, per-permutation gather + sum. Returns the p-value."""
    n, total = len(x), len(x) + len(y)
    k = _dense_kernel(np.vstack([x, y]), bw)
    obs = _unbiased(k, np.arange(n), np.arange(n, total))
    tol = _tie_band(float(k.sum(dtype=np.float64)) - total, total, min(n, len(y)))
    rng = np.random.default_rng(seed)
    count = 0
    for _ in range(b):
        p = rng.permutation(total)
        count += _unbiased(k, p[:n], p[n:]) >= obs - tol
    return (1 + count) / (b + 1)


def dense_gemm(x: np.ndarray, y: np.ndarray, bw: float, b: int, seed: int) -> float:
    """Full kernel matrix, all permutations as one product K @ S. Returns the p-value."""
    n, m = len(x), len(y)
    total = n + m
    k = _dense_kernel(np.vstack([x, y]), bw)
    np.fill_diagonal(k, 0.0)
    s = np.zeros((total, b + 1), dtype=np.float32)
    s[:n, 0] = 1
    rng = np.random.default_rng(seed)
    for j in range(1, b + 1):
        s[rng.permutation(total)[:n], j] = 1
    r = k.sum(1, dtype=np.float64)
    sxx = np.einsum("ij,ij->j", s, k @ s, dtype=np.float64)
    s_r = s.T.astype(np.float64) @ r
    sxy = s_r - sxx
    syy = r.sum() - 2 * s_r + sxx
    stat = sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2 * sxy / (n * m)
    tol = _tie_band(float(r.sum()), total, min(n, m))
    return float((1 + np.sum(stat[1:] >= stat[0] - tol)) / (b + 1))


def measure(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float, float]:
    """(result, seconds, peak traced MiB) of one call ``fn(*args, **kwargs)``."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return out, dt, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000])
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--permutations", type=int, default=200)
    ap.add_argument("--dense-limit-gb", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-mb", type=float, default=256.0, help="mmd_test memory_budget_mb")
    args = ap.parse_args()
    print(
        f"MMD permutation test, d={args.dim}, B={args.permutations}, "
        f"streaming memory_budget_mb={args.budget_mb:g}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    header = f"{'n/side':>7} {'method':<22} {'seconds':>8} {'peak MiB':>9} {'p-value':>8}"
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        rng = np.random.default_rng(args.seed)
        x = rng.normal(size=(n, args.dim))
        y = rng.normal(size=(n, args.dim))
        y[:, :8] += 0.05
        bw = mmd.median_bandwidth(x, seed=args.seed, standardize=False)
        runs: dict[str, tuple[float, float, float]] = {}
        for dtype in ("float32", "float64"):
            res, dt, peak = measure(
                mmd.mmd_test,
                x,
                y,
                bw,
                args.permutations,
                args.seed,
                dtype=dtype,
                memory_budget_mb=args.budget_mb,
                standardize=False,
            )
            runs[f"streaming {dtype}"] = (res.p_value, dt, peak)
        dense_gb = (2 * n) ** 2 * 4 / 2**30
        if dense_gb <= args.dense_limit_gb:
            for name, fn in (
                ("dense-index float32", dense_index),
                ("dense-gemm float32", dense_gemm),
            ):
                p, dt, peak = measure(fn, x, y, bw, args.permutations, args.seed)
                runs[name] = (p, dt, peak)
        for name, (p, dt, peak) in runs.items():
            print(f"{n:>7} {name:<22} {dt:>8.2f} {peak:>9.0f} {p:>8.4f}")
        if dense_gb > args.dense_limit_gb:
            print(
                f"{n:>7} dense baselines skipped: the N x N float32 matrix alone is "
                f"{dense_gb:.2f} GiB > {args.dense_limit_gb} GiB"
            )
        else:
            base_t, base_m = runs["dense-index float32"][1:]
            s_t, s_m = runs["streaming float32"][1:]
            print(
                f"{n:>7} ratio dense-index / streaming float32: time {base_t / s_t:.1f}x, "
                f"peak memory {base_m / s_m:.1f}x"
            )
        print()


if __name__ == "__main__":
    main()
