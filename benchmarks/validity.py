"""Validity checks of the domain-gap statistics (issue 5, item 7); prints its figures.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/validity.py`` (a few minutes on one core;
``--quick`` for a smaller, noisier run). Everything is seeded.

What is simulated
-----------------
* Gaussians with known means/covariances, where FD and the Gaussian-kernel MMD² have closed
  forms (MMD²: for D = X - Y ~ N(μ, S), E exp(-‖D‖²/2s²) = det(I + S/s²)^-½ ·
  exp(-½ μᵀ(S + s² I)^-1 μ)).
* "Images": 32 x 32 RGB scenes = brightness U(0.25, 0.75) x per-image white balance
  (1 + 5 % Gaussian per channel) x a smooth luminance texture (Gaussian-filtered noise, ±25 %)
  + 2 % pixel noise, clipped to [0, 1]. The target domain applies a 5 % colour cast to the
  same kind of scenes: R x 1.05, G x 1.00, B x 0.95. Embeddings come from a fixed random
  3-layer conv/ReLU network (3→32→64→128 channels, strides 1/2/2, global average pool,
  d = 128), a stand-in for a frozen backbone that was never trained on either domain.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from scipy import stats
from scipy.ndimage import gaussian_filter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from domain_gap.analysis import c2st, frechet, mmd
from domain_gap.analysis.stats_utils import bootstrap_ci

ALPHA = 0.05
CAST = np.array([1.05, 1.00, 0.95])


# ----------------------------------------------------------------------------- references


def fd_closed_form(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


def _gauss_expect(mu: np.ndarray, s: np.ndarray, bw: float) -> float:
    d = len(mu)
    det = np.linalg.det(np.eye(d) + s / bw**2)
    quad = mu @ np.linalg.solve(s + bw**2 * np.eye(d), mu)
    return float(det**-0.5 * np.exp(-0.5 * quad))


def mmd2_closed_form(mu1, s1, mu2, s2, bw: float) -> float:
    zero = np.zeros_like(mu1)
    return (
        _gauss_expect(zero, 2 * s1, bw)
        + _gauss_expect(zero, 2 * s2, bw)
        - 2 * _gauss_expect(mu1 - mu2, s1 + s2, bw)
    )


def random_cov(rng: np.random.Generator, d: int, floor: float) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + floor * np.eye(d)


# ----------------------------------------------------------------------------- images


def scenes(rng: np.random.Generator, n: int, cast: bool, size: int = 32) -> np.ndarray:
    """(n, 3, size, size) float32 scenes in [0, 1] (see the module docstring)."""
    bright = rng.uniform(0.25, 0.75, n)
    balance = 1 + 0.05 * rng.standard_normal((n, 3))
    tex = gaussian_filter(rng.standard_normal((n, size, size)), sigma=(0, 2, 2))
    tex /= tex.std(axis=(1, 2), keepdims=True)
    tex = 1 + 0.25 * tex
    img = bright[:, None, None, None] * balance[:, :, None, None] * tex[:, None]
    img = img + 0.02 * rng.standard_normal(img.shape)
    if cast:
        img = img * CAST[None, :, None, None]
    return np.clip(img, 0, 1).astype(np.float32)


class RandomFeatures:
    """A fixed random conv/ReLU network: the embedding of the simulated images."""

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.layers = []
        for cin, cout, stride in ((3, 32, 1), (32, 64, 2), (64, 128, 2)):
            w = torch.randn(cout, cin, 3, 3, generator=g) * (2.0 / (cin * 9)) ** 0.5
            b = 0.1 * torch.randn(cout, generator=g)
            self.layers.append((w, b, stride))

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        h = (torch.from_numpy(images) - 0.5) / 0.25
        for w, b, stride in self.layers:
            h = torch.relu(torch.nn.functional.conv2d(h, w, b, stride=stride, padding=1))
        return h.mean(dim=(2, 3)).double().numpy()


# ----------------------------------------------------------------------------- checks


def check_fd(quick: bool) -> None:
    print("== Fréchet distance vs closed form (Gaussians, d = 8)")
    rng = np.random.default_rng(0)
    d = 8
    mu1, mu2 = np.zeros(d), rng.normal(0, 0.5, d)
    s1, s2 = random_cov(rng, d, 0.3), random_cov(rng, d, 0.1)
    truth = fd_closed_form(mu1, s1, mu2, s2)
    print(f"   closed form: {truth:.4f}")
    for n in (100, 1000, 10000) if quick else (100, 1000, 10000, 100000):
        x = rng.multivariate_normal(mu1, s1, n)
        y = rng.multivariate_normal(mu2, s2, n)
        v = frechet.frechet_distance(x, y).value
        print(
            f"   n = {n:>6} per side: FD = {v:.4f}  (relative error {abs(v - truth) / truth:.2%})"
        )
    x, y = rng.normal(size=(50, 256)), rng.normal(size=(50, 256)) + 0.1
    res = frechet.frechet_distance(x, y)
    print(
        f"   N < d (n = 50, d = 256): value {res['value']:.4f}, real and finite: "
        f"{isinstance(res['value'], float) and np.isfinite(res['value'])}, reduced: "
        f"{res['reduced']} to {res['dims']} dims"
    )
    reps = 40 if quick else 200
    n, n_boot = 300, 100
    hit_pct = hit_basic = 0
    for r in range(reps):
        x = rng.multivariate_normal(mu1, s1, n)
        y = rng.multivariate_normal(mu2, s2, n)
        pct = bootstrap_ci(
            lambda a, b: frechet.frechet_distance(a, b).value, x, y, n_boot=n_boot, seed=r
        )
        basic = frechet.frechet_with_ci(x, y, n_boot=n_boot, seed=r).ci
        hit_pct += pct[0] <= truth <= pct[1]
        hit_basic += basic[0] <= truth <= basic[1]
    print(
        f"   95% CI coverage of the true FD over {reps} repeats (n = {n}): "
        f"percentile {hit_pct / reps:.2f}, basic (used) {hit_basic / reps:.2f}"
    )


def check_mmd_closed_form(quick: bool) -> None:
    print("== MMD² vs closed form (Gaussians, d = 4, bandwidth 2)")
    rng = np.random.default_rng(1)
    d, bw = 4, 2.0
    mu1, mu2 = np.zeros(d), np.full(d, 0.25)
    s1, s2 = random_cov(rng, d, 0.5), random_cov(rng, d, 0.5)
    truth = mmd2_closed_form(mu1, s1, mu2, s2, bw)
    reps = 60 if quick else 300
    n = 200
    est, hit_tie_free, hit_naive, naive_reps = [], 0, 0, 0
    for r in range(reps):
        x = rng.multivariate_normal(mu1, s1, n)
        y = rng.multivariate_normal(mu2, s2, n)
        res = mmd.mmd_test(x, y, bw, permutations=19, seed=r, n_boot=200, standardize=False)
        est.append(res.mmd2)
        hit_tie_free += res.ci[0] <= truth <= res.ci[1]
        if r < reps // 3:
            naive_reps += 1
            ci = bootstrap_ci(lambda a, b: mmd.mmd2_unbiased(a, b, bw), x, y, n_boot=100, seed=r)
            hit_naive += ci[0] <= truth <= ci[1]
    est_a = np.array(est)
    se = est_a.std(ddof=1) / np.sqrt(reps)
    print(
        f"   closed form {truth:.5f}; mean unbiased estimate over {reps} repeats (n = {n}) "
        f"{est_a.mean():.5f} ± {se:.5f} (z = {(est_a.mean() - truth) / se:+.2f})"
    )
    print(
        f"   95% CI coverage: tie-excluded bootstrap (used) {hit_tie_free / reps:.2f}; "
        f"naive with-replacement bootstrap {hit_naive / naive_reps:.2f} ({naive_reps} repeats)"
    )


def check_null_and_power(quick: bool) -> None:
    feats = RandomFeatures(seed=0)
    rng = np.random.default_rng(2)
    n, b = 200, 200
    null_splits = 300 if quick else 1000
    print(f"== Identical domains: {null_splits} null splits, n = {n} per side, B = {b}")
    pool = feats(scenes(rng, 8000, cast=False))
    t0 = time.perf_counter()
    p_values, p_raw, c2_p, c2_lo, c2_hi, delong_miss = [], [], [], 0, 0, 0
    c2_runs = min(300, null_splits)
    for s in range(null_splits):
        idx = rng.choice(len(pool), 2 * n, replace=False)
        x, y = pool[idx[:n]], pool[idx[n:]]
        p_values.append(mmd.mmd_test(x, y, permutations=b, seed=s).p_value)
        p_raw.append(mmd.mmd_test(x, y, permutations=b, seed=s, standardize=False).p_value)
        if s < c2_runs:
            res = c2st.c2st(x, y, seed=s)
            c2_lo += res.auc_ci[1] < 0.5
            c2_hi += res.auc_ci[0] > 0.5
            c2_p.append(res.p_value)
            delong_miss += abs(res.auc - 0.5) > 1.96 * res.auc_se_delong
    p = np.array(p_values)
    rate = float(np.mean(p < ALPHA))
    se = np.sqrt(ALPHA * (1 - ALPHA) / null_splits)
    deciles = np.histogram(p, bins=10, range=(0, 1))[0]
    print(
        f"   MMD (standardised, default) type-I error at alpha = {ALPHA}: {rate:.3f} "
        f"(binomial SE {se:.3f}; target [0.03, 0.07]); min p = {p.min():.4f} "
        f"(floor 1/(B+1) = {1 / (b + 1):.4f})"
    )
    print(f"   MMD (raw features) type-I error: {np.mean(np.array(p_raw) < ALPHA):.3f}")
    print(f"   p-value deciles (counts): {deciles.tolist()}")
    print(f"   KS test of p-values against U(0, 1): p = {stats.kstest(p, 'uniform').pvalue:.3f}")
    print(
        f"   C2ST over {c2_runs} null splits: AUC 95% CI covers 0.5 in "
        f"{c2_runs - c2_lo - c2_hi}; entirely above 0.5 (a false 'gap') in {c2_hi}, entirely "
        f"below in {c2_lo}; one-sided p < {ALPHA} in {np.mean(np.array(c2_p) < ALPHA):.3f} "
        f"of them"
    )
    print(
        f"   (a DeLong-only normal 95% interval would miss 0.5 in {delong_miss}/{c2_runs}: "
        "it ignores that each fold has its own model)"
    )
    print(f"   ({time.perf_counter() - t0:.0f} s)")

    trials = 100 if quick else 200
    print(f"== Power against a 5% colour cast (R x 1.05, B x 0.95), {trials} trials, B = {b}")
    for n_side in (100, 200):
        rej_mmd = rej_raw = rej_c2 = 0
        for t in range(trials):
            x = feats(scenes(rng, n_side, cast=False))
            y = feats(scenes(rng, n_side, cast=True))
            rej_mmd += mmd.mmd_test(x, y, permutations=b, seed=t).p_value < ALPHA
            raw = mmd.mmd_test(x, y, permutations=b, seed=t, standardize=False)
            rej_raw += raw.p_value < ALPHA
            rej_c2 += c2st.c2st(x, y, seed=t).auc_ci[0] > 0.5
        print(
            f"   n = {n_side} per side: MMD power {rej_mmd / trials:.2f} (standardised, default),"
            f" {rej_raw / trials:.2f} (raw features); C2ST (CI above 0.5) power "
            f"{rej_c2 / trials:.2f}"
        )


def _occluded(prepared: object, car: int) -> object:
    """The sample with its labelled car pixels painted in the mean colour of its other valid
    pixels: the object is gone, its context stays."""
    from dataclasses import replace

    p = prepared
    cars = p.label == car  # type: ignore[attr-defined]
    rest = p.valid & ~cars  # type: ignore[attr-defined]
    image = p.image.copy()  # type: ignore[attr-defined]
    image[cars] = image[rest].mean(axis=0).round().astype(np.uint8)
    return replace(p, image=image)  # type: ignore[type-var]


def check_heatmaps(quick: bool) -> None:
    """Heatmaps with the demo model, CAMs of the *labelled* pixels: two halves of the source's
    evaluation images (null: no significant attention difference expected), then the same
    halves with every car of the second half occluded (planted: car attention must leave
    the car for its context)."""
    from domain_gap.analysis.extract import load_runner
    from domain_gap.config import load_config
    from domain_gap.data.dataset import DomainDataset
    from domain_gap.demo import ensure_demo_inputs
    from domain_gap.heatmaps.compare import Settings, compare_domains
    from domain_gap.heatmaps.run import assemble, cam_records
    from domain_gap.labels import CLASS_NAMES

    base = load_config()
    heat = base.analysis.heatmaps.model_copy(update={"target": "labelled"})
    analysis = base.analysis.model_copy(update={"heatmaps": heat})
    config = base.model_copy(update={"analysis": analysis})
    ensure_demo_inputs(config, progress=False)
    dataset = DomainDataset(config)
    records = dataset.select(domain=config.source_domain, subset="val")[: 40 if quick else None]
    prepared = [dataset.prepare(r) for r in records]
    runner = load_runner(config)
    car = CLASS_NAMES.index("car")
    settings = Settings(10, 199 if quick else 500, ALPHA, 0)
    for name, change in (("null (two halves)", None), ("planted (cars occluded)", car)):
        hide = change is not None
        samples = [_occluded(p, car) if hide and i % 2 else p for i, p in enumerate(prepared)]
        shards = []
        for start in range(0, len(samples), 8):
            batch = samples[start : start + 8]
            shards += cam_records(runner.model, runner.device, batch, config)
        rows = [{"sample_id": r.sample_id, **s} for r, s in zip(records, shards, strict=True)]
        halves = ["a" if i % 2 == 0 else "b" for i in range(len(rows))]
        comp = compare_domains(assemble(rows, halves), "a", "b", CLASS_NAMES, settings)
        tests = [(c.class_name, t) for c in comp.classes for t in c.tests]
        sig = [f"{name}/{t.statistic}" for name, t in tests if t.significant]
        cars = next((c for c in comp.classes if c.class_name == "car"), None)
        print(f"heatmaps {name}: {len(sig)} of {comp.n_tests} tests significant {sig[:6]}")
        if cars is not None and cars.tested:
            print(f"  car: {cars.sentence}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (noisier figures)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    check_fd(args.quick)
    check_mmd_closed_form(args.quick)
    check_null_and_power(args.quick)
    check_heatmaps(args.quick)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
