"""Where P1's extraction time goes: per-image milliseconds of each part, serially, on one thread
of the caller (torch keeps its own intra-op threads), then the pipelined extraction vs the
bare forward pass, alternated.

``TL_DISABLE_ANALYTICS=true .venv/bin/python benchmarks/profile_p1.py [--repeats 3]``

The parts (each timed over the demo's 198 evaluation images, batch 8, medians of repeats):

- ``prepare``: decode + resize (``DomainDataset.prepare``), the loader thread's work;
- ``normalize``: the loader thread's ``normalize_image`` of the batch;
- ``bare``: ``model(x)`` alone (what P1 divides by);
- ``run_batch``: the extraction's forward (the model plus the embeddings of the tap);
- ``summarize``: ``summarize_pixels`` of the logits (forward thread, torch);
- ``records``: ``batch_records`` (IoUs and the metadata), the writer thread's compute;
- ``metadata``: the metadata alone, part of ``records``;
- ``save``: ``FeatureCache.save`` of the records (npz shards), the writer thread's I/O.

Timings are noisy on a shared machine: compare the ratios of one run, never seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("TL_DISABLE_ANALYTICS", "true")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parts-only", action="store_true")
    args = parser.parse_args()

    import numpy as np
    import torch
    from run import _bare_forward, demo_config

    from domain_gap.analysis import extract as ex
    from domain_gap.analysis.cache import FeatureCache
    from domain_gap.data.dataset import DomainDataset
    from domain_gap.demo import ensure_demo_inputs
    from domain_gap.encoders import normalize_image
    from domain_gap.metrics_torch import scratch_buffer, summarize_pixels

    print(
        "load average",
        [round(x, 2) for x in os.getloadavg()],
        "torch threads",
        torch.get_num_threads(),
    )
    with tempfile.TemporaryDirectory(prefix="prof_p1_") as tmp:
        config = demo_config(Path(tmp) / "c")
        ensure_demo_inputs(config, progress=False)
        dataset = DomainDataset(config)
        runner = ex.load_runner(config)
        subset = config.analysis.subset
        records = [r for d in config.domains for r in dataset.select(domain=d.name, subset=subset)]
        n, size = len(records), config.model.batch_size
        chunks = [records[s : s + size] for s in range(0, n, size)]

        def t_prepare():
            return [[dataset.prepare(r) for r in c] for c in chunks]

        prepared = t_prepare()

        def t_normalize():
            return [
                normalize_image(
                    np.stack([p.image for p in ps]), config.image.mean, config.image.std
                )
                for ps in prepared
            ]

        xs = t_normalize()
        _bare_forward(runner, xs[:2])
        times: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}

        def timed(name, fn):
            start, start_cpu = time.perf_counter(), time.process_time()
            result = fn()
            times.setdefault(name, []).append(time.perf_counter() - start)
            cpu.setdefault(name, []).append(time.process_time() - start_cpu)
            return result

        labels = [
            np.stack(
                [
                    p.label if p.label is not None else np.full(p.image.shape[:2], 255, np.uint8)
                    for p in ps
                ]
            )
            for ps in prepared
        ]
        valids = [np.stack([p.valid for p in ps]) for ps in prepared]

        def t_run_batch():
            return [runner(x, y) for x, y in zip(xs, labels, strict=True)]

        def t_summarize(outs):
            with scratch_buffer():
                return [
                    summarize_pixels(o["logits"], y, v, ex.CALIBRATION_BINS, ex.PRED_STRIDE)
                    for o, y, v in zip(outs, labels, valids, strict=True)
                ]

        for k in range(args.repeats):
            timed("prepare", t_prepare)
            timed("normalize", t_normalize)
            timed("bare", lambda: _bare_forward(runner, xs))
            outs = timed("run_batch", t_run_batch)
            pix = timed("summarize", lambda o=outs: t_summarize(o))
            batches = [
                ex.Forwarded(
                    ps,
                    np.array([p.label is not None for p in ps]),
                    {kk: vv for kk, vv in o.items() if kk != "logits"},
                    px,
                    v,
                )
                for ps, o, px, v in zip(prepared, outs, pix, valids, strict=True)
            ]
            del outs
            recs = timed("records", lambda bs=batches: [ex.batch_records(b) for b in bs])
            timed("metadata", lambda: [ex._metadata(ps) for ps in prepared])
            cache = FeatureCache.for_config(demo_config(Path(tmp) / f"save{k}"))

            def t_save(bs=batches, rs=recs, cache=cache):
                for b, r in zip(bs, rs, strict=True):
                    for p, arrays in zip(b.prepared, r, strict=True):
                        cache.save(p.record.domain, p.record.sample_id, arrays, "s")

            timed("save", t_save)
        print("load average", [round(x, 2) for x in os.getloadavg()])
        print(
            f"{n} images, batch {size}; per image, ms (median of {args.repeats}), wall and "
            "CPU (all threads of the process):"
        )
        for name, ts in times.items():
            print(
                f"  {name:10s} wall {1000 * float(np.median(ts)) / n:7.2f}"
                f"  cpu {1000 * float(np.median(cpu[name])) / n:7.2f}   walls "
                + " ".join(f"{1000 * t / n:.2f}" for t in ts)
            )
        if args.parts_only:
            return
        bare, full = [], []
        for k in range(args.repeats):
            bare.append(_bare_forward(runner, xs))
            cache = FeatureCache.for_config(demo_config(Path(tmp) / f"x{k}"))
            start = time.perf_counter()
            for d in config.domains:
                ex.extract_domain(
                    config, dataset, d.name, subset, runner=runner, cache=cache, progress=False
                )
            full.append(time.perf_counter() - start)
        print("bare ms/img", " ".join(f"{1000 * t / n:.1f}" for t in bare))
        print("extr ms/img", " ".join(f"{1000 * t / n:.1f}" for t in full))
        print(
            "P1 ratios  ",
            " ".join(f"{b / f:.3f}" for b, f in zip(bare, full, strict=True)),
            f"median-of-medians {np.median(bare) / np.median(full):.3f}",
        )
        print("load average", [round(x, 2) for x in os.getloadavg()])


if __name__ == "__main__":
    main()
