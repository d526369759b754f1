"""Peak memory of the whole ``analyze`` run at fleet scale: 10x and 100x the demo.

Each size gets a ``folder`` dataset of tiny frames per domain and a cache already holding a
synthetic record for every frame (the model never runs: the run is the statistics, the
streamed pass and the report). ``run_analysis`` then runs in a fresh process with
``analysis.subsample`` frames per domain in memory, and its peak resident memory
(``VmHWM``) is read before and after.

Goal: the peak is independent of N beyond the subsample (only the frame index, about
1 kB a frame, grows with N): the largest size's peak within 10% of the smallest's.

    python benchmarks/bench_fleet_analyze.py [--scales 10 100] [--subsample 200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEMO_PER_DOMAIN = 100
"""Frames per domain the demo analyses (Cityscapes-like val 100, KITTI-like val 98)."""
DIM = 128
DOMAINS = {"source": 0.0, "target": 0.4}
"""Domain name → shift of its synthetic embeddings and metadata."""


def config_dict(root: Path, subsample: int) -> dict[str, Any]:
    return {
        "seed": 0,
        "image": {"height": 64, "width": 128, "resize": "pad"},
        "domains": [
            {"name": d, "kind": "folder", "root": str(root / "data" / d), "images": "*.png"}
            for d in DOMAINS
        ],
        "cache_dir": str(root / "cache"),
        "model": {
            "checkpoint": str(ROOT / "models" / "demo" / "deeplabv3plus_demo.pt"),
            "device": "cpu",
            "onnx": None,
        },
        "analysis": {
            "subset": "all",
            "subsample": subsample,
            "permutations": 99,
            "bootstrap": 50,
            "clusters": 4,
            "heatmaps": {"enabled": False},
        },
    }


def _records(n: int, shift: float, rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    """``n`` synthetic shard records (the fields ``analysis.extract.batch_records`` writes)."""
    from domain_gap.analysis.extract import CALIBRATION_BINS, PRED_STRIDE
    from domain_gap.labels import CLASS_NAMES
    from domain_gap.metrics import per_class_iou, pixel_accuracy, sample_miou

    c = len(CLASS_NAMES)
    cm = rng.integers(0, 50, (n, c, c)) + np.eye(c, dtype=np.int64) * rng.integers(
        200, 900, (n, 1, 1)
    )
    iou, miou, acc = per_class_iou(cm), sample_miou(cm), pixel_accuracy(cm)
    prob = rng.dirichlet(np.ones(c), n)
    out = []
    for i in range(n):
        meta = {f"field_{k}": float(rng.normal(10 * k + shift, 1 + k)) for k in range(10)}
        out.append(
            {
                "embedding": (rng.normal(0, 1, DIM) + shift).astype(np.float32),
                "class_emb": rng.normal(0, 1, (c, DIM)).astype(np.float16),
                "class_counts": rng.integers(0, 30, c).astype(np.int64),
                "loss": np.asarray(float(rng.gamma(2.0, 0.1 + shift))),
                "miou": np.asarray(miou[i]),
                "class_iou": iou[i],
                "pixel_acc": np.asarray(acc[i]),
                "confusion": cm[i],
                "prob_mean": prob[i],
                "pred_frac": np.append(prob[i] * 0.9, 0.1),
                "pred_small": rng.integers(0, c, (64 // PRED_STRIDE, 128 // PRED_STRIDE)).astype(
                    np.uint8
                ),
                "labelled": np.asarray(True),
                "calibration": np.abs(rng.normal(5, 1, (CALIBRATION_BINS, 3))),
                "entropy": np.asarray(float(rng.uniform(0.1, 1.0))),
                "max_prob": np.asarray(float(rng.uniform(0.5, 1.0))),
                "metadata": np.asarray(json.dumps(meta, sort_keys=True)),
            }
        )
    return out


def build(root: Path, n: int, subsample: int) -> Path:
    """Frames and a full cache for ``n`` frames per domain; returns the config file."""
    import cv2

    from domain_gap.analysis.cache import FeatureCache
    from domain_gap.analysis.extract import cache_source
    from domain_gap.config import parse_config
    from domain_gap.data.dataset import DomainDataset

    noise = np.random.default_rng(0).integers(0, 256, (16, 32, 3), dtype=np.uint8)
    png = cv2.imencode(".png", noise)[1].tobytes()
    for d in DOMAINS:
        folder = root / "data" / d
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (folder / f"frame_{i:07d}.png").write_bytes(png)
    data = config_dict(root, subsample)
    config = parse_config(data, source="bench_fleet_analyze", base_dir=root)
    cache, dataset = FeatureCache.for_config(config), DomainDataset(config)
    for k, (d, shift) in enumerate(DOMAINS.items()):
        rng, source = np.random.default_rng(k), cache_source(config, d)
        recs = dataset.select(domain=d)
        for start in range(0, len(recs), 1000):
            part = recs[start : start + 1000]
            for r, arrays in zip(part, _records(len(part), shift, rng), strict=True):
                cache.save(d, r.sample_id, arrays, source)
    path = root / "config.json"
    path.write_text(json.dumps(data))
    return path


class NoModel:
    def __call__(self, x: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        raise AssertionError("the model ran although the cache was full")


def child(config_path: str, out: str, subsample: int) -> dict[str, Any]:
    """One ``run_analysis`` in this (fresh) process: seconds, peak MiB, what it stated."""
    from benchmarks.bench_mmd import peak_rss_mib
    from domain_gap.config import parse_config
    from domain_gap.pipeline import run_analysis

    data = json.loads(Path(config_path).read_text())
    data["analysis"]["subsample"] = subsample
    config = parse_config(data, source=config_path, base_dir=Path(config_path).parent)
    before = peak_rss_mib()
    t0 = time.perf_counter()
    paths = run_analysis(config, out, progress=False, runner=NoModel())
    seconds = time.perf_counter() - t0
    summary = json.loads(paths["summary"].read_text())
    fleet = summary["fleet"]
    fd = fleet["frechet"] if fleet else {"target": summary["latent_gap"]["target"]["frechet"]}
    return {
        "seconds": round(seconds, 1),
        "peak_mib": round(peak_rss_mib(), 1),
        "peak_before_mib": round(before, 1),
        "in_memory": summary["sizes"],
        "fd_every_frame": round(fd["target"]["value"], 4),
    }


def _child_run(config: Path, out: Path, subsample: int) -> dict[str, Any]:
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); "
        "from benchmarks.bench_fleet_analyze import child; "
        "print(json.dumps(child(sys.argv[2], sys.argv[3], int(sys.argv[4]))))"
    )
    env = {**os.environ, "TL_DISABLE_ANALYTICS": "true"}
    args = [sys.executable, "-c", code, str(ROOT), str(config), str(out), str(subsample)]
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{config}: analyze failed\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_size(n: int, subsample: int, contrast: bool) -> list[dict[str, Any]]:
    """The fleet-scale run at ``n`` frames per domain (and, with ``contrast``, the same
    frames all held in memory)."""
    with tempfile.TemporaryDirectory(prefix="bench_fleet_") as tmp:
        config = build(Path(tmp), n, subsample)
        rows = [{"n_per_domain": n, **_child_run(config, Path(tmp) / "out", subsample)}]
        if contrast:
            whole = _child_run(config, Path(tmp) / "out_all", max(n, subsample))
            rows.append({"n_per_domain": n, **whole})
    return rows


def main() -> None:
    from benchmarks.bench_scale import peak_ratio  # the goal and verdict of bench_scale

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--subsample", type=int, default=200)
    ap.add_argument(
        "--no-contrast",
        action="store_true",
        help="skip the largest size's in-memory run (every frame held, for contrast)",
    )
    args = ap.parse_args()
    rows, contrast = [], []
    for k, s in enumerate(args.scales):
        print(f"[bench] {s}x: building {DEMO_PER_DOMAIN * s} frames per domain ...", flush=True)
        last = k == len(args.scales) - 1
        got = run_size(DEMO_PER_DOMAIN * s, args.subsample, last and not args.no_contrast)
        rows.append(got[0])
        contrast.extend(got[1:])
    print(f"analyze at fleet scale, subsample {args.subsample} per domain, d = {DIM}")
    head = f"{'scale':>6} {'N/domain':>9} {'in memory':>10} {'peak MiB':>9} {'imports MiB':>12}"
    print(f"{head} {'seconds':>8}  FD")
    for s, r in [*zip(args.scales, rows, strict=True), *((args.scales[-1], c) for c in contrast)]:
        held = r["in_memory"]["target"]
        print(
            f"{s:>5}x {r['n_per_domain']:>9} {held:>10} {r['peak_mib']:>9.1f} "
            f"{r['peak_before_mib']:>12.1f} {r['seconds']:>8.1f}  {r['fd_every_frame']}"
        )
    ratio, verdict = peak_ratio(args.scales, rows)
    if contrast:
        held = contrast[0]["peak_mib"]
        print(
            f"every frame in memory at {args.scales[-1]}x instead: peak {held:.1f} MiB "
            f"({held / rows[-1]['peak_mib']:.2f}x the fleet-scale run)"
        )
    body = {"rows": rows, "in_memory": contrast, "ratio": round(ratio, 3), "verdict": verdict}
    print(json.dumps(body))


if __name__ == "__main__":
    main()
