"""Shared fixtures: a tiny generated synthetic sample and configs pointing at it."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from domain_gap.analysis.schema import SCHEMA_PATH
from domain_gap.config import Config, parse_config
from domain_gap.data.sample import write_sample

_TINY_CONFIG = {
    "seed": 0,
    "image": {"height": 128, "width": 256, "resize": "pad"},
    "domains": [
        {
            "name": "cityscapes",
            "kind": "cityscapes",
            "root": "cityscapes",
            "splits": ["train", "val"],
        },
        {
            "name": "kitti",
            "kind": "kitti",
            "root": "kitti",
            "splits": ["training", "testing"],
            "val_fraction": 0.5,
        },
    ],
    "cache_dir": ".cache",
}


def tiny_config_dict(root: Path, **domain_changes: dict) -> dict:
    """The mapping behind :func:`tiny_config` for a sample at ``root``.

    ``domain_changes`` maps a domain name to keys to update, e.g. ``kitti={"max_samples": 2}``;
    the key ``top`` updates top-level keys.
    """
    data = copy.deepcopy(_TINY_CONFIG)
    data.update(domain_changes.pop("top", {}))
    for d in data["domains"]:
        d.update(domain_changes.get(d["name"], {}))
    data["base_dir"] = str(root)
    return data


def standalone_config_dict(root: Path, ckpt: Path, cache: Path, batch_size: int) -> dict:
    """A tiny-sample config that names every path absolutely (no ``base_dir``), so it can be
    written to any file and run by the CLI: small statistics, no heatmaps, no ONNX."""
    data = tiny_config_dict(root)
    data.update(
        cache_dir=str(cache),
        model={"checkpoint": str(ckpt), "batch_size": batch_size, "device": "cpu", "onnx": None},
        analysis={
            "clusters": 3,
            "permutations": 19,
            "bootstrap": 10,
            "heatmaps": {"enabled": False},
        },
    )
    data["domains"] = [{**d, "root": str(root / d["root"])} for d in data["domains"]]
    data.pop("base_dir")
    return data


@pytest.fixture(scope="session")
def tiny_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``size="test"`` synthetic sample (seed 0) with ``cityscapes/`` and ``kitti/`` inside."""
    root = tmp_path_factory.mktemp("tiny_sample")
    write_sample(root, seed=0, size="test", progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_config(tiny_sample: Path) -> Config:
    """A validated Config over :func:`tiny_sample` (input 128x256, pad; model defaults)."""
    return parse_config(tiny_config_dict(tiny_sample), source="tiny_config", base_dir=tiny_sample)


@pytest.fixture
def sample_copy(tiny_sample: Path, tmp_path: Path) -> Path:
    """A private, writable copy of :func:`tiny_sample` (for tests that damage files)."""
    root = tmp_path / "sample"
    shutil.copytree(tiny_sample, root)
    return root


@pytest.fixture(scope="session")
def config_for() -> Callable[..., Config]:
    """``config_for(root, kitti={...}, top={...})``: the tiny config at another root, edited."""

    def make(root: Path, **changes: dict) -> Config:
        return parse_config(tiny_config_dict(root, **changes), source="test config", base_dir=root)

    return make


@pytest.fixture(scope="session")
def validate_summary() -> Callable[[dict], None]:
    """``validate_summary(data)`` raises ``jsonschema.ValidationError`` unless ``data`` fits
    the committed ``summary.schema.json``."""
    import json

    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema).validate


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random DeepLabV3+ MobileNet (BatchNorm statistics calibrated on noise), saved."""
    import torch

    from models import build_model, save_checkpoint

    torch.set_num_threads(1)
    torch.manual_seed(1)
    model = build_model("deeplabv3plus_mobilenet", output_stride=16)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, 3, 64, 128) * 1.5 + 0.3)
    model.eval()
    path = tmp_path_factory.mktemp("pipeline_model") / "tiny.pt"
    save_checkpoint(model, path)
    return path


@pytest.fixture(scope="session")
def whatif_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One feature cache for the what-if runs on the tiny sample: the baseline pass, the fits
    and the mitigated passes they share are computed once."""
    return tmp_path_factory.mktemp("whatif_cache")
