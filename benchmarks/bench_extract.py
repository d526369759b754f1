"""Time the demo: a cold run (empty cache: extraction + statistics + report) and a warm rerun.

Usage: ``python benchmarks/bench_extract.py [--checkpoint PATH] [--threads N]``

Writes the built-in sample where ``configs/sample.yaml`` expects it (if missing; not timed),
then runs the analysis twice into a temporary folder with a fresh cache: first cold (every
sample through the model), then warm (everything from the cache). Prints the wall time of
each run, the per-stage seconds, extraction throughput and the output sizes. The issue's bar
is a cold demo within 180 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

BUDGET_S = 180.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="model to use instead of the demo checkpoint")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args()

    import torch

    from domain_gap.config import load_config, parse_config
    from domain_gap.data.sample import write_sample
    from domain_gap.pipeline import run_analysis

    if args.threads:
        torch.set_num_threads(args.threads)
    base = load_config()
    sample_root = Path(base.resolve(base.domains[0].root) or ".").parent
    t0 = time.perf_counter()
    write_sample(sample_root, seed=0, size="demo")
    print(f"sample ready in {time.perf_counter() - t0:.1f} s (not counted): {sample_root}")

    with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
        data = base.model_dump(mode="json")
        data["cache_dir"] = str(Path(tmp) / "cache")
        if args.checkpoint:
            data["model"]["checkpoint"] = str(Path(args.checkpoint).resolve())
        config = parse_config(data, source="bench config", base_dir=base.base_dir)
        runs = {}
        for name in ("cold", "warm"):
            start = time.perf_counter()
            paths = run_analysis(config, Path(tmp) / name, progress=False)
            wall = time.perf_counter() - start
            summary = json.loads(paths["summary"].read_text())
            runs[name] = (wall, summary, paths)
        cold_wall, summary, paths = runs["cold"]
        n = sum(summary["sizes"].values())
        stages = summary["timing_s"]
        print(f"torch threads: {torch.get_num_threads()}, images analysed: {n} {summary['sizes']}")
        for stage, seconds in stages.items():
            print(f"  {stage:<45s} {seconds:7.2f} s")
        extract_s = stages.get("extract", float("nan"))
        print(f"extraction: {n / extract_s:.1f} images/s ({extract_s:.1f} s)")
        verdict = "within" if cold_wall <= BUDGET_S else "OVER"
        print(f"cold run: {cold_wall:.1f} s ({verdict} the {BUDGET_S:.0f} s budget)")
        print(f"warm run (all cached): {runs['warm'][0]:.1f} s")
        for key, path in paths.items():
            print(f"  {key}: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
