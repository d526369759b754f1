"""Peak memory of the fleet-scale statistics stage (``analysis.fleet``) at 10x and 100x the demo.

The demo analyses about 100 images per domain. Here each size gets synthetic records (256-d
embeddings with a shift, ten numeric metadata fields and one text field, generated chunk by
chunk from a seed, never all at once) and runs ``fleet_gap`` in a fresh process, whose peak
resident memory is read from ``/proc/self/status`` (``VmHWM``, as ``bench_mmd.py`` does).

Goal: the peak is independent of N beyond the subsample size (the tests run on a seeded
subsample of ``--subsample`` images per domain, FD and histograms stream every image): the
largest size's peak within 10% of the smallest's.

    python benchmarks/bench_scale.py [--scales 10 100] [--subsample 500]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

DEMO_PER_DOMAIN = 100
"""Images per domain the demo analyses (Cityscapes-like val 100, KITTI-like val 98)."""
DIM = 256
CHUNK = 1024
GOAL_RATIO = 1.10


def _stream(n: int, domain: str, shift: float, seed: int) -> Any:
    """A re-iterable stream of synthetic :class:`~domain_gap.analysis.fleet.Chunk`."""
    from domain_gap.analysis.fleet import Chunk

    def make() -> Iterator[Chunk]:
        for start in range(0, n, CHUNK):
            m = min(CHUNK, n - start)
            rng = np.random.default_rng([seed, start])
            emb = rng.normal(0.0, 1.0, (m, DIM)).astype(np.float32)
            emb[:, :8] += shift
            meta: dict[str, np.ndarray] = {
                f"field_{k}": rng.normal(10.0 * k + shift, 1.0 + k, m) for k in range(10)
            }
            meta["weather"] = rng.choice(["clear", "rain", "fog"], m)
            ids = np.array([f"{domain}/frame_{i:08d}.png" for i in range(start, start + m)])
            yield Chunk(ids, emb, meta)

    return make


def child(n: int, subsample: int, permutations: int) -> dict[str, Any]:
    """Run the stage once in this (fresh) process: seconds, peak MiB, what ran."""
    from benchmarks.bench_mmd import peak_rss_mib
    from domain_gap.analysis.fleet import fleet_gap

    before = peak_rss_mib()
    t0 = time.perf_counter()
    res = fleet_gap(
        _stream(n, "source", 0.0, 1),
        _stream(n, "target", 0.3, 2),
        subsample=subsample,
        permutations=permutations,
        n_boot=50,
        max_dim=64,
    )
    seconds = time.perf_counter() - t0
    return {
        "n_per_domain": n,
        "seconds": round(seconds, 2),
        "peak_mib": round(peak_rss_mib(), 1),
        "peak_before_mib": round(before, 1),
        "subsample_used": res.subsample_source.n_used,
        "fd": round(res.frechet.value, 4),
        "mmd_method": res.latent.mmd.method,
        "mmd_significant": res.latent.mmd.significant,
    }


def peak_ratio(scales: list[int], rows: list[dict[str, Any]]) -> tuple[float, str]:
    """Print and return the largest size's peak over the smallest's, with its verdict."""
    ratio = rows[-1]["peak_mib"] / rows[0]["peak_mib"]
    verdict = "pass" if ratio <= GOAL_RATIO else "miss"
    print(
        f"peak ratio {scales[-1]}x / {scales[0]}x = {ratio:.3f} "
        f"(goal: independent of N beyond the subsample, <= {GOAL_RATIO}): {verdict}"
    )
    return ratio, verdict


def run_size(n: int, subsample: int, permutations: int) -> dict[str, Any]:
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); "
        "from benchmarks.bench_scale import child; "
        "print(json.dumps(child(*map(int, sys.argv[2:5]))))"
    )
    root = str(Path(__file__).resolve().parent.parent)
    args = [sys.executable, "-c", code, root, str(n), str(subsample), str(permutations)]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--subsample", type=int, default=500)
    ap.add_argument("--permutations", type=int, default=200)
    args = ap.parse_args()
    rows = [run_size(DEMO_PER_DOMAIN * s, args.subsample, args.permutations) for s in args.scales]
    print(f"fleet statistics stage, subsample {args.subsample} per domain, d = {DIM}")
    print(f"{'scale':>6} {'N/domain':>9} {'peak MiB':>9} {'seconds':>8}  FD / MMD")
    for s, r in zip(args.scales, rows, strict=True):
        print(
            f"{s:>5}x {r['n_per_domain']:>9} {r['peak_mib']:>9.1f} {r['seconds']:>8.2f}  "
            f"{r['fd']} / significant={r['mmd_significant']}"
        )
    ratio, verdict = peak_ratio(args.scales, rows)
    print(json.dumps({"rows": rows, "ratio": round(ratio, 3), "verdict": verdict}))


if __name__ == "__main__":
    main()
