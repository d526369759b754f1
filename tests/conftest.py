"""Shared fixtures: a tiny generated synthetic sample and a config pointing at it."""

from __future__ import annotations

from pathlib import Path

import pytest

from domain_gap.config import Config, parse_config
from domain_gap.data.sample import write_sample


@pytest.fixture(scope="session")
def tiny_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``size="test"`` synthetic sample (seed 0) with ``cityscapes/`` and ``kitti/`` inside."""
    root = tmp_path_factory.mktemp("tiny_sample")
    write_sample(root, seed=0, size="test", progress=False)
    return root


def tiny_config_dict(root: Path) -> dict:
    """The config mapping of :func:`tiny_config` for a sample at ``root`` (tests may edit it)."""
    return {
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


@pytest.fixture(scope="session")
def tiny_config(tiny_sample: Path) -> Config:
    """A validated Config over :func:`tiny_sample` (input 128x256, pad; model defaults)."""
    return parse_config(tiny_config_dict(tiny_sample), source="tiny_config", base_dir=tiny_sample)
