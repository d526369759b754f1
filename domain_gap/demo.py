"""The built-in demo's inputs: the synthetic sample on disk, written on first use."""

from __future__ import annotations

from pathlib import Path

from domain_gap.config import Config, load_config


def ensure_demo_inputs(
    config: Config | None = None, size: str = "demo", progress: bool = True
) -> Path:
    """Write the built-in SYNTHETIC sample where ``config`` (default: the sample config) expects it.

    Every domain root of the config must be a local folder named after its kind inside one
    sample folder (``.../cityscapes``, ``.../kitti``); the sample writer skips a complete one.
    """
    from domain_gap.data.sample import write_sample

    config = config or load_config()
    roots = {Path(config.resolve(d.root)) for d in config.domains}
    parents = {r.parent for r in roots}
    if len(parents) != 1 or any(d.root.startswith("gs://") for d in config.domains):
        raise ValueError("the demo sample needs every domain root in one local folder")
    out = parents.pop()
    write_sample(out, seed=config.seed, size=size, progress=progress)
    return out
