"""Type-I error and power of the random-Fourier-feature MMD test against the exact test.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mmd_linear_validity.py [--quick]``.

Same simulated "images" as ``benchmarks/validity.py`` (32 x 32 RGB scenes through a fixed
random conv network, d = 128; the target has a 5 % colour cast). Printed, each with a 95 %
Clopper-Pearson interval:

* type-I error at alpha = 0.05 over null splits of one pool of source embeddings (n = 200
  per side), for the exact test and for RFF at each D;
* power against the colour cast at n = 100 and 200 per side, exact vs RFF, on the same
  samples and permutations;
* power at n = 2,000 per side (D < N, where RFF is meant to be used) against a 1 % cast
  (R x 1.01, B x 0.99 on the clipped scenes), samples drawn without replacement from two
  fixed pools of 12,000 embeddings each (so trials overlap: a rough figure).

Everything is seeded; B = 200 permutations, pooled standardisation and the median bandwidth
as in the pipeline.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from validity import RandomFeatures, scenes

from domain_gap.analysis import mmd, mmd_linear

ALPHA = 0.05
FEATURES = (256, 1024, 2048, 4096)


def rate(hits: int, trials: int) -> str:
    """``0.050 [0.027, 0.083]``: a rejection rate with its exact binomial 95 % interval."""
    lo, hi = stats.binomtest(hits, trials).proportion_ci(0.95, method="exact")
    return f"{hits / trials:.3f} [{lo:.3f}, {hi:.3f}]"


def rejections(x: np.ndarray, y: np.ndarray, seed: int, b: int) -> dict[str, bool]:
    """Whether each test rejects at ALPHA on one pair of samples (same seed for all)."""
    out = {"exact": mmd.mmd_test(x, y, permutations=b, seed=seed).p_value < ALPHA}
    for d in FEATURES:
        res = mmd_linear.rff_mmd_test(x, y, permutations=b, seed=seed, features=d)
        out[f"RFF D={d}"] = res.p_value < ALPHA
    return out


def check_null(feats: RandomFeatures, splits: int, n: int, b: int) -> None:
    rng = np.random.default_rng(2)
    pool = feats(scenes(rng, 8000, cast=False))
    hits: dict[str, int] = {}
    for s in range(splits):
        idx = rng.choice(len(pool), 2 * n, replace=False)
        for name, rej in rejections(pool[idx[:n]], pool[idx[n:]], s, b).items():
            hits[name] = hits.get(name, 0) + rej
    print(f"== Type-I error at alpha = {ALPHA}: {splits} null splits, n = {n} per side, B = {b}")
    for name, h in hits.items():
        print(f"   {name:<12} {rate(h, splits)}")


def check_power(feats: RandomFeatures, trials: int, b: int) -> None:
    rng = np.random.default_rng(3)
    print(f"== Power against a 5% colour cast, {trials} trials, B = {b}")
    for n in (100, 200):
        hits: dict[str, int] = {}
        for t in range(trials):
            x = feats(scenes(rng, n, cast=False))
            y = feats(scenes(rng, n, cast=True))
            for name, rej in rejections(x, y, t, b).items():
                hits[name] = hits.get(name, 0) + rej
        print(f"   n = {n} per side:")
        for name, h in hits.items():
            print(f"      {name:<12} {rate(h, trials)}")


def check_power_large(feats: RandomFeatures, trials: int, b: int, n: int = 2000) -> None:
    rng = np.random.default_rng(4)
    weak = np.array([1.01, 1.00, 0.99])[None, :, None, None]
    source = feats(scenes(rng, 12000, cast=False))
    target = feats(np.clip(scenes(rng, 12000, cast=False) * weak, 0, 1).astype(np.float32))
    hits: dict[str, int] = {}
    for t in range(trials):
        x = source[rng.choice(len(source), n, replace=False)]
        y = target[rng.choice(len(target), n, replace=False)]
        for name, rej in rejections(x, y, t, b).items():
            hits[name] = hits.get(name, 0) + rej
    print(f"== Power against a 1% colour cast, n = {n} per side, {trials} trials, B = {b}")
    for name, h in hits.items():
        print(f"   {name:<12} {rate(h, trials)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 null splits, 100 + 40 power trials")
    args = ap.parse_args()
    torch.set_num_threads(1)
    feats = RandomFeatures(seed=0)
    t0 = time.perf_counter()
    check_null(feats, 200 if args.quick else 500, 200, 200)
    check_power(feats, 100 if args.quick else 200, 200)
    check_power_large(feats, 40 if args.quick else 100, 200)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
