"""Sizing rule for ``execution.executor: ray``: images/s per CPU model actor on this machine.

The demo model (256x512, CPU) extracts ``--frames`` frames of the demo's KITTI-like domain
into a fresh cache three ways: the local executor (one process, torch on every core) and a
local Ray with 1 and 2 model actors (``execution.concurrency``; each actor and each decode
task holds ``num_cpus_per_worker`` CPUs). Each figure is images/s over the whole pass, Ray's
actor start-up included (the first batch), and its ratio to the local pass measured in the
same run; the load average is printed with it.

    python benchmarks/bench_ray.py [--frames 96] [--actors 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _config(cache: Path, frames: int, actors: int, cpus: float) -> Any:
    from run import demo_config

    base = demo_config(cache)
    domains = [
        {**d.model_dump(mode="json"), "max_samples": frames}
        for d in base.domains
        if d.name == "kitti"
    ]
    execution = {
        "executor": "ray" if actors else "local",
        "concurrency": max(actors, 1),
        "num_cpus_per_worker": cpus,
    }
    analysis = {**base.analysis.model_dump(mode="json"), "source": "kitti"}
    return demo_config(cache, domains=domains, execution=execution, analysis=analysis)


def _pass(config: Any) -> tuple[int, float]:
    """Extract the config's kitti val frames into its (empty) cache: (frames, seconds)."""
    from domain_gap.analysis.cache import FeatureCache
    from domain_gap.analysis.extract import extract_domain
    from domain_gap.data.dataset import DomainDataset
    from domain_gap.execution import prefill_cache

    dataset, cache = DomainDataset(config), FeatureCache.for_config(config)
    n = len(dataset.select(domain="kitti", subset="val"))
    t0 = time.perf_counter()
    if config.execution.executor == "ray":
        prefill_cache(config, dataset, cache, [("kitti", "val")], progress=False)
    else:
        extract_domain(config, dataset, "kitti", "val", cache=cache, progress=False)
    return n, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    import ray
    import torch

    from domain_gap.demo import ensure_demo_inputs

    ensure_demo_inputs(progress=False)
    cores = os.cpu_count() or 1
    rows = []
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    try:
        for actors in [0, *args.actors]:
            tmp = Path(tempfile.mkdtemp(prefix="bench_ray_"))
            try:
                cpus = max(cores / (actors + 1), 0.25) if actors else 1.0
                n, seconds = _pass(_config(tmp, args.frames, actors, cpus))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            rows.append(
                {
                    "executor": f"ray, {actors} actor(s)" if actors else "local",
                    "actors": actors,
                    "frames": n,
                    "seconds": round(seconds, 1),
                    "img_per_s": round(n / seconds, 2),
                    "load_avg_1m": round(os.getloadavg()[0], 2),
                }
            )
            print(f"[bench] {rows[-1]}", flush=True)
    finally:
        ray.shutdown()
    local = rows[0]["img_per_s"]
    print(
        f"demo model, {args.frames} frames, {cores} cores, torch {torch.get_num_threads()} threads"
    )
    for r in rows:
        per = f"{r['img_per_s'] / r['actors']:.2f} img/s per actor" if r["actors"] else ""
        print(
            f"{r['executor']:>18}: {r['img_per_s']:6.2f} img/s ({r['img_per_s'] / local:.2f}x "
            f"local) {per}  load {r['load_avg_1m']}"
        )
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
