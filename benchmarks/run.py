"""Every performance goal of the project, each as a ratio measured in this run, with a verdict.

Run on an idle machine: ``TL_DISABLE_ANALYTICS=true .venv/bin/python benchmarks/run.py``
(about 6 minutes on 2 cores; ``--only P1 P3`` runs a subset, ``--readme`` rewrites the
README's performance table from the results). Prints the machine, its load average and the
thread counts, then one line per figure, and writes ``benchmarks/results.json`` atomically.

* **P1** extraction images/s ÷ bare forward images/s, on the demo's 198 evaluation images
  (batch 8); the bare pass is the model alone on pre-normalised batches; the median of 5
  ratios, each of a bare pass and the extraction right after it. Goal ≥ 0.85.
* **P2** peak RSS of the whole analysis at ~2,000 images ÷ at ~200 (hard-linked copies of
  the demo frames at 128 x 256, each run a fresh process), cold (model included) and warm.
  Goal ≤ 1.2 for both.
* **P3** the exact MMD permutation test at 10k per side, d = 256, 1,000 permutations.
  Goal ≤ 15 s and ≤ 3 GB (``benchmarks/bench_mmd.py``).
* **P4** cold demo analysis (sample on disk, empty cache) ÷ warm rerun. Goal ≥ 10x.
* **P5** the demo from nothing (sample generation + cold analysis, every configured section).
  Goal ≤ 90 s; each stage is timed.
* **CAM** the heatmap pass ÷ the bare forward pass (``benchmarks/bench_cam.py``). Goal ≤ 2x.

Only ratios compare across machines; the seconds are printed for the profile.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TL_DISABLE_ANALYTICS", "true")

RESULTS = ROOT / "benchmarks" / "results.json"
README_START, README_END = "<!-- perf:start -->", "<!-- perf:end -->"
P2_SIZES = (100, 1000)  # images per domain: ~200 and ~2,000 in all


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import torch

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def demo_config(cache_dir: Path, **overrides: Any) -> Any:
    """The demo config with its cache in ``cache_dir`` and ``overrides`` on the top level."""
    from domain_gap.config import load_config, parse_config

    base = load_config()
    data = base.model_dump(mode="json")
    data["cache_dir"] = str(cache_dir)
    for key, value in overrides.items():
        data[key] = value
    return parse_config(data, source="benchmark config", base_dir=base.base_dir)


# --- P1 ------------------------------------------------------------------------------------


def _bare_forward(runner: Any, batches: list[Any]) -> float:
    import torch

    start = time.perf_counter()
    with torch.inference_mode():
        for x in batches:
            runner.model(torch.as_tensor(x).to(runner.device))
    return time.perf_counter() - start


def p1_extraction(repeats: int = 5) -> dict[str, Any]:
    """Extraction throughput over the bare forward pass: the median of ``repeats`` ratios,
    each of a bare pass and the extraction right after it (a neighbour's load that comes and
    goes then moves both sides of one ratio, not one side of a ratio of medians)."""
    import numpy as np

    from domain_gap.analysis.cache import FeatureCache
    from domain_gap.analysis.extract import extract_domain, load_runner
    from domain_gap.data.dataset import DomainDataset
    from domain_gap.demo import ensure_demo_inputs
    from domain_gap.encoders import normalize_image

    with tempfile.TemporaryDirectory(prefix="bench_p1_") as tmp:
        config = demo_config(Path(tmp) / "warmup")
        ensure_demo_inputs(config, progress=False)
        dataset = DomainDataset(config)
        runner = load_runner(config)
        subset = config.analysis.subset
        records = [r for d in config.domains for r in dataset.select(domain=d.name, subset=subset)]
        size = config.model.batch_size
        batches = []
        for start in range(0, len(records), size):
            images = np.stack([dataset.prepare(r).image for r in records[start : start + size]])
            batches.append(normalize_image(images, config.image.mean, config.image.std))
        _bare_forward(runner, batches[:2])  # warm-up: allocator, kernels
        bare, extract = [], []
        for k in range(repeats):
            bare.append(_bare_forward(runner, batches))
            cache = FeatureCache.for_config(demo_config(Path(tmp) / f"cache{k}"))
            start = time.perf_counter()
            for d in config.domains:
                extract_domain(
                    config, dataset, d.name, subset, runner=runner, cache=cache, progress=False
                )
            extract.append(time.perf_counter() - start)
    n = len(records)
    ratios = [b / e for b, e in zip(bare, extract, strict=True)]
    ratio = float(np.median(ratios))
    return {
        "images": n,
        "batch": size,
        "bare_images_per_s": n / float(np.median(bare)),
        "extract_images_per_s": n / float(np.median(extract)),
        "ratios": [round(r, 4) for r in ratios],
        "value": ratio,
        "goal": ">= 0.85",
        "pass": ratio >= 0.85,
    }


# --- P2 ------------------------------------------------------------------------------------


def _replicate(src: Path, split: str, dst: Path, n: int) -> None:
    """``n`` frames in ``dst``'s Cityscapes layout (split val), hard links to ``src``'s frames
    of ``split`` under new sequence numbers (label and vehicle files alongside)."""
    images = sorted((src / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
    for k in range(n):
        image = images[k % len(images)]
        city = image.parent.name
        stem = image.name.removesuffix("_leftImg8bit.png")
        new = f"{city}_{k:06d}_{stem.split('_')[-1]}"
        for folder, suffix in (
            ("leftImg8bit", "_leftImg8bit.png"),
            ("gtFine", "_gtFine_labelIds.png"),
            ("vehicle", "_vehicle.json"),
        ):
            origin = src / folder / split / city / f"{stem}{suffix}"
            if origin.exists():
                target = dst / folder / "val" / city / f"{new}{suffix}"
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(origin, target)


def _p2_config(tmp: Path, per_domain: int) -> Path:
    """A two-domain config over replicated frames, small images, no what-if or heatmaps."""
    import yaml

    from domain_gap.config import load_config

    base = load_config()
    sample = Path(base.resolve(base.domains[0].root) or ".")
    data_root = tmp / f"data{per_domain}"
    _replicate(sample, "val", data_root / "a", per_domain)
    _replicate(sample, "train", data_root / "b", per_domain)
    cfg = base.model_dump(mode="json")
    cfg["image"].update(height=128, width=256)
    cfg["domains"] = [
        {"name": "a", "kind": "cityscapes", "root": str(data_root / "a"), "splits": ["val"]},
        {"name": "b", "kind": "cityscapes", "root": str(data_root / "b"), "splits": ["val"]},
    ]
    cfg["analysis"].update(source="a", mitigations=[])
    cfg["analysis"]["heatmaps"] = {**cfg["analysis"].get("heatmaps", {}), "enabled": False}
    for key in ("checkpoint", "onnx"):
        cfg["model"][key] = str(base.resolve(cfg["model"][key]))
    cfg["cache_dir"] = str(tmp / f"cache{per_domain}")
    path = tmp / f"p2_{per_domain}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _child_run(config_path: Path, out: Path) -> dict[str, float]:
    """One analysis in a fresh process; its wall time and peak RSS (MiB)."""
    code = (
        "import json, sys, time; from domain_gap.config import load_config;"
        "from benchmarks.bench_mmd import peak_rss_mib;"
        "from domain_gap.pipeline import run_analysis; t = time.perf_counter();"
        f"run_analysis(load_config({str(config_path)!r}), {str(out)!r}, progress=False);"
        "print(json.dumps({'seconds': time.perf_counter() - t,"
        " 'peak_mib': peak_rss_mib()}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"P2 child run failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def p2_memory() -> dict[str, Any]:
    """Peak RSS at ~2,000 images ÷ at ~200, cold and warm, each in its own process."""
    runs: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_p2_") as tmp:
        for n in P2_SIZES:
            path = _p2_config(Path(tmp), n)
            for kind in ("cold", "warm"):
                runs[f"{kind}_{2 * n}"] = _child_run(path, Path(tmp) / f"out{n}{kind}")
    small, large = 2 * P2_SIZES[0], 2 * P2_SIZES[1]
    ratios = {
        kind: runs[f"{kind}_{large}"]["peak_mib"] / runs[f"{kind}_{small}"]["peak_mib"]
        for kind in ("cold", "warm")
    }
    worst = max(ratios.values())
    return {
        "runs": runs,
        "ratio_cold": ratios["cold"],
        "ratio_warm": ratios["warm"],
        "value": worst,
        "goal": "<= 1.2 (cold and warm)",
        "pass": worst <= 1.2,
    }


# --- P3, CAM -------------------------------------------------------------------------------


def p3_mmd() -> dict[str, Any]:
    from benchmarks.bench_mmd import p3_figure

    fig = p3_figure()
    return {**fig, "value": fig["seconds"], "goal": "<= 15 s and <= 3 GB"}


def cam_cost() -> dict[str, Any]:
    from benchmarks.bench_cam import cam_cost_figure

    fig = cam_cost_figure()
    return {**fig, "goal": "<= 2x the forward pass"}


# --- P4, P5 --------------------------------------------------------------------------------


def p45_demo() -> dict[str, Any]:
    """The demo from nothing into a temporary folder, then a warm rerun on its cache."""
    from domain_gap.data.sample import write_sample
    from domain_gap.pipeline import run_analysis

    with tempfile.TemporaryDirectory(prefix="bench_demo_") as tmp:
        base = demo_config(Path(tmp) / "cache")
        domains = base.model_dump(mode="json")["domains"]
        for d in domains:
            d["root"] = str(Path(tmp) / "sample" / d["kind"])
        config = demo_config(Path(tmp) / "cache", domains=domains)
        start = time.perf_counter()
        write_sample(Path(tmp) / "sample", seed=config.seed, size="demo", progress=False)
        sample_s = time.perf_counter() - start
        start = time.perf_counter()
        paths = run_analysis(config, Path(tmp) / "cold", progress=False)
        cold_s = time.perf_counter() - start
        stages = json.loads(paths["timings"].read_text())["stages_s"]
        start = time.perf_counter()
        run_analysis(config, Path(tmp) / "warm", progress=False)
        warm_s = time.perf_counter() - start
    total = sample_s + cold_s
    return {
        "P4": {
            "cold_s": cold_s,
            "warm_s": warm_s,
            "value": cold_s / warm_s,
            "goal": ">= 10x",
            "pass": cold_s / warm_s >= 10,
        },
        "P5": {
            "sample_s": sample_s,
            "analysis_s": cold_s,
            "stages_s": stages,
            "value": total,
            "goal": "<= 90 s",
            "pass": total <= 90,
        },
    }


FIGURES: dict[str, Callable[[], dict[str, Any]]] = {
    "P1": p1_extraction,
    "P2": p2_memory,
    "P3": p3_mmd,
    "P45": p45_demo,
    "CAM": cam_cost,
}


def _line(name: str, fig: dict[str, Any]) -> str:
    verdict = "pass" if fig.get("pass") else "MISS"
    return f"{name:<4} {fig['value']:>9.3f}   goal {fig['goal']:<26} {verdict}"


def readme_table(results: dict[str, Any]) -> str:
    """The README's performance table (markdown) from ``results``."""
    rows = ["| figure | measured | goal | verdict |", "|---|---|---|---|"]
    for name, fig in results["figures"].items():
        verdict = "pass" if fig.get("pass") else "**miss**"
        value = f"{fig['value']:.3g}"
        if name == "P2":
            value = f"cold {fig['ratio_cold']:.3g}, warm {fig['ratio_warm']:.3g}"
        if fig.get("ratios"):
            low, high, k = min(fig["ratios"]), max(fig["ratios"]), len(fig["ratios"])
            value += f" (median of {k}: {low:.3g} to {high:.3g})"
        rows.append(f"| {name} | {value} | {fig['goal']} | {verdict} |")
    m = results["machine"]
    speed = ""
    if "P1" in results["figures"]:  # how fast this machine was: the seconds goals depend on it
        bare_ms = 1000 / results["figures"]["P1"]["bare_images_per_s"]
        speed = f" The bare forward pass took {bare_ms:.0f} ms an image (256 x 512)."
    rows.append("")
    rows.append(
        f"Measured by `benchmarks/run.py` on {m['cpus']} CPU cores ({m['device']}, torch "
        f"{m['torch_threads']} threads), load average {m['load_average_start'][0]} at the "
        f"start.{speed}"
    )
    return "\n".join(rows)


def _write_readme(results: dict[str, Any]) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise SystemExit(f"{readme}: no {README_START} ... {README_END} block to rewrite")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_START}\n{readme_table(results)}\n{README_END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=[*FIGURES, "P4", "P5"], default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--readme", action="store_true", help="rewrite README's table")
    parser.add_argument(
        "--readme-only", action="store_true", help="rewrite the table from --out only"
    )
    args = parser.parse_args()
    if args.readme_only:
        _write_readme(json.loads(args.out.read_text()))
        return
    wanted = set(args.only or FIGURES)
    if wanted & {"P4", "P5"}:
        wanted = (wanted - {"P4", "P5"}) | {"P45"}
    results: dict[str, Any] = {"machine": machine(), "figures": {}}
    print(json.dumps(results["machine"]))
    for name, measure in FIGURES.items():
        if name not in wanted:
            continue
        start = time.perf_counter()
        fig = measure()
        parts = fig if name == "P45" else {name: fig}
        for key, value in parts.items():
            results["figures"][key] = value
            print(_line(key, value), flush=True)
        print(f"     ({time.perf_counter() - start:.0f} s)", flush=True)
    results["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    from domain_gap.atomic import write_atomic

    write_atomic(args.out, json.dumps(results, indent=1, default=float).encode())
    if args.readme:
        _write_readme(results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
