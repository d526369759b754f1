"""Cost of the heatmap pass: the CAM pass ÷ the bare forward pass on the evaluation subsets.

Usage: ``python benchmarks/bench_cam.py [--max-images N] [--layer aspp|classifier]``

Uses the demo config (the built-in sample and the demo model, written when missing; not
timed). Every evaluation image (each domain's ``analysis.subset``) is decoded and resized once
beforehand, so neither pass pays for data loading. Batch by batch, interleaved so that a
changing machine load hits both alike, it times

* the bare forward pass: the model alone under ``torch.inference_mode`` on normalised batches;
* the CAM pass: ``domain_gap.heatmaps.run.cam_records``, i.e. the forward pass, the exact
  Grad-CAM of every present class, upsampling with padding masked, the per-class statistics
  and grid maps, everything the heatmap cache stores.

The goal is a ratio ≤ 2. For comparison it also times, on the first batch, the Grad-CAM by
autograd (one backward pass vectorised over the classes, ``models.cam.gradcam_autograd``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL = 2.0


def _batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _autograd_ratio(model: Any, device: Any, x: Any, layer: str) -> float:
    """Autograd Grad-CAM ÷ bare forward on one batch (predicted-class masks)."""
    import torch

    from models.cam import gradcam_autograd, target_layer

    with torch.inference_mode():
        start = time.perf_counter()
        logits = model(x)
        forward = time.perf_counter() - start
    masks = torch.nn.functional.one_hot(logits.argmax(1), logits.shape[1]).permute(0, 3, 1, 2)
    start = time.perf_counter()
    gradcam_autograd(model, x, masks.float(), target_layer(model, layer))
    return (time.perf_counter() - start) / forward


def cam_cost_figure(max_images: int | None = None, layer: str | None = None) -> dict[str, Any]:
    """The CAM pass ÷ the bare forward pass on the demo's evaluation images (see above)."""
    import numpy as np
    import torch

    from domain_gap.analysis.extract import load_runner
    from domain_gap.config import load_config
    from domain_gap.data.dataset import DomainDataset
    from domain_gap.demo import ensure_demo_inputs
    from domain_gap.encoders import normalize_image
    from domain_gap.heatmaps.run import cam_records

    config = load_config()
    if layer is not None:
        heat = config.analysis.heatmaps.model_copy(update={"layer": layer})
        config = config.model_copy(
            update={"analysis": config.analysis.model_copy(update={"heatmaps": heat})}
        )
    ensure_demo_inputs(config, progress=False)
    dataset = DomainDataset(config)
    subset = None if config.analysis.subset == "all" else config.analysis.subset
    records = [r for d in config.domains for r in dataset.select(domain=d.name, subset=subset)]
    prepared = [dataset.prepare(r) for r in records[:max_images]]
    runner = load_runner(config)
    model, device = runner.model, runner.device
    batches = _batches(prepared, config.model.batch_size)
    mean, std = config.image.mean, config.image.std
    inputs = [
        torch.from_numpy(normalize_image(np.stack([p.image for p in b]), mean, std)).to(device)
        for b in batches
    ]
    cam_records(model, device, batches[0], config)  # warm-up (threads, allocator)
    forward_s = cam_s = 0.0
    for batch, x in zip(batches, inputs, strict=True):
        with torch.inference_mode():
            start = time.perf_counter()
            model(x)
            forward_s += time.perf_counter() - start
        start = time.perf_counter()
        cam_records(model, device, batch, config)
        cam_s += time.perf_counter() - start
    ratio = cam_s / forward_s
    h = config.analysis.heatmaps
    return {
        "value": ratio,
        "pass": ratio <= GOAL,
        "ratio": ratio,
        "images": len(prepared),
        "batch_size": config.model.batch_size,
        "layer": h.layer,
        "input": f"{config.image.height}x{config.image.width}",
        "forward_s": forward_s,
        "cam_s": cam_s,
        "autograd_ratio_first_batch": _autograd_ratio(model, device, inputs[0], h.layer),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--layer", choices=["aspp", "classifier"], default=None)
    args = parser.parse_args()
    fig = cam_cost_figure(args.max_images, args.layer)
    print(
        f"{fig['images']} images at {fig['input']}, batch {fig['batch_size']}, layer "
        f"{fig['layer']}, {fig['threads']} torch threads"
    )
    print(f"bare forward pass: {fig['forward_s']:.1f} s; CAM pass: {fig['cam_s']:.1f} s")
    verdict = "within" if fig["pass"] else "OVER"
    print(f"CAM pass / forward pass = {fig['ratio']:.2f}x ({verdict} the {GOAL:g}x goal)")
    print(f"autograd Grad-CAM (first batch) / forward = {fig['autograd_ratio_first_batch']:.1f}x")


if __name__ == "__main__":
    main()
