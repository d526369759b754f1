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

``--p3`` prints the P3 figure instead (:func:`p3_figure`, imported by ``benchmarks/run.py``):
the exact test at 10k per side, d = 256, 1,000 permutations, float32, in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
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


P3_GOAL_S, P3_GOAL_MB = 15, 3072


def peak_rss_mib() -> float:
    """This process's peak resident memory (MiB): ``VmHWM``, the high-water mark of its own
    address space. ``ru_maxrss`` is not used: Linux carries it across fork and exec, so a child
    started by a large parent reports the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _p3_child(n_per_side: int, d: int, permutations: int, dtype: str) -> dict[str, Any]:
    """Run the P3 test in this (fresh) process: seconds and memory, measured three ways."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_per_side, d))
    y = rng.normal(size=(n_per_side, d))
    y[:, :8] += 0.05
    rss_before = _rss_mb()
    res, seconds, traced = measure(mmd.mmd_test, x, y, None, permutations, 0, dtype=dtype, n_boot=0)
    peak_rss = peak_rss_mib()
    return {
        "seconds": round(seconds, 2),
        "peak_mb": round(peak_rss, 1),
        "peak_rss_delta_mb": round(peak_rss - rss_before, 1),
        "peak_traced_mb": round(traced, 1),
        "p_value": res.p_value,
        "mmd2": res.mmd2,
        "method": res.method,
    }


def _rss_mb() -> float:
    """Current resident set size of this process (Linux /proc), MiB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def p3_figure(
    n_per_side: int = 10_000, d: int = 256, permutations: int = 1000, *, dtype: str = "float32"
) -> dict[str, Any]:
    """The P3 figure: the exact MMD permutation test (``mmd_test`` defaults: standardised,
    median bandwidth, 256 MiB budget) on generated data, run in a fresh subprocess.

    ``peak_mb`` is the child's whole-process peak RSS (``VmHWM``: Python, numpy, BLAS and
    the 2 x n x d input included), the figure compared with the goal; ``peak_rss_delta_mb``
    is that peak less the RSS just before the test, ``peak_traced_mb`` the peak of
    tracemalloc-traced allocations (numpy buffers) during the test.
    """
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); "
        "from benchmarks.bench_mmd import _p3_child; "
        "print(json.dumps(_p3_child(*map(int, sys.argv[2:5]), sys.argv[5])))"
    )
    root = str(Path(__file__).resolve().parent.parent)
    args = [sys.executable, "-c", code, root, str(n_per_side), str(d), str(permutations), dtype]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    fig = json.loads(out.strip().splitlines()[-1])
    return {
        **fig,
        "goal_s": P3_GOAL_S,
        "goal_mb": P3_GOAL_MB,
        "pass": fig["seconds"] <= P3_GOAL_S and fig["peak_mb"] <= P3_GOAL_MB,
        "n": n_per_side,
        "d": d,
        "permutations": permutations,
        "dtype": dtype,
        "memory": "peak RSS of a fresh process (VmHWM); tracemalloc peak alongside",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000])
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--permutations", type=int, default=200)
    ap.add_argument("--dense-limit-gb", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-mb", type=float, default=256.0, help="mmd_test memory_budget_mb")
    ap.add_argument("--p3", action="store_true", help="print the P3 figure (JSON) and exit")
    ap.add_argument("--dtype", default="float32", help="dtype of the --p3 run")
    args = ap.parse_args()
    if args.p3:
        print(json.dumps(p3_figure(dtype=args.dtype), indent=1))
        return
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
