"""The committed demo model: loads strictly, reproduces its card, ONNX matches the checkpoint."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml

from domain_gap.config import DEFAULT_CONFIG, REPO_ROOT, Config, load_config, parse_config
from domain_gap.data import DomainDataset
from domain_gap.encoders import normalize_image
from models import load_checkpoint
from models.export import onnx_parity
from models.train_demo import evaluate, load_split

torch.set_num_threads(1)

DEMO = REPO_ROOT / "models" / "demo"
CKPT = DEMO / "deeplabv3plus_demo.pt"
ONNX = DEMO / "deeplabv3plus_demo.onnx"


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((DEMO / "card.json").read_text())


@pytest.fixture(scope="module")
def demo_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """configs/sample.yaml over the demo sample: data/sample when complete, else a fresh one."""
    stamp = REPO_ROOT / "data" / "sample" / ".domain-gap-sample.json"
    try:
        info = json.loads(stamp.read_text())
        ready = info.get("complete") and info.get("size") == "demo" and info.get("seed") == 0
    except (OSError, ValueError):
        ready = False
    if ready:
        return load_config()
    from domain_gap.data.sample import write_sample

    root = tmp_path_factory.mktemp("demo_sample")
    write_sample(root, seed=0, size="demo", progress=False)
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for domain in data["domains"]:
        domain["root"] = str(root / domain["kind"])
    return parse_config(data, source="demo_config", base_dir=DEFAULT_CONFIG.parent)


def test_files_match_the_card_and_the_config(card: dict) -> None:
    config = load_config()
    assert Path(config.resolve(config.model.checkpoint)) == CKPT.resolve()
    assert Path(config.resolve(config.model.onnx)) == ONNX.resolve()
    assert CKPT.stat().st_size <= 20_000_000
    assert hashlib.sha256(CKPT.read_bytes()).hexdigest() == card["files"]["checkpoint_sha256"]
    assert hashlib.sha256(ONNX.read_bytes()).hexdigest() == card["files"]["onnx_sha256"]
    assert card["data"]["synthetic"] is True
    assert "SYNTHETIC" in (DEMO / "MODEL_CARD.md").read_text()
    source = f"{config.source_domain}/val"
    assert card["metrics"][source]["miou"] >= 0.6


def test_checkpoint_loads_strictly_from_its_own_metadata(card: dict) -> None:
    model, meta = load_checkpoint(CKPT)
    assert meta["arch_source"] == "checkpoint"
    assert meta["arch"] == card["arch"] == "deeplabv3plus_efficientnet_lite0"
    assert (meta["output_stride"], meta["head_channels"]) == (
        card["output_stride"],
        card["head_channels"],
    )
    assert meta["image"]["mean"] == card["image"]["mean"]
    assert sum(p.numel() for p in model.parameters()) == card["parameters"]
    raw = torch.load(CKPT, weights_only=True)
    assert "model_state" in raw  # VainF's training-script layout


@pytest.mark.slow
@pytest.mark.parametrize("domain", ["cityscapes", "kitti"])
def test_checkpoint_reproduces_its_val_miou(card: dict, demo_config: Config, domain: str) -> None:
    """The card's numbers on the current sample: a changed sample needs a new card."""
    model, meta = load_checkpoint(CKPT)
    dataset = DomainDataset(demo_config, domains=[domain])
    x, y, _ = load_split(dataset, domain, "val")
    result = evaluate(model, x, y, meta["image"]["mean"], meta["image"]["std"])
    expected = card["metrics"][f"{domain}/val"]
    assert result["images"] == expected["images"]
    assert result["miou"] == pytest.approx(expected["miou"], abs=2e-3)
    for name, value in expected["per_class_iou"].items():
        if value is not None:
            assert result["per_class_iou"][name] == pytest.approx(value, abs=5e-3), name


@pytest.mark.slow
def test_committed_onnx_matches_committed_checkpoint(card: dict, demo_config: Config) -> None:
    model, meta = load_checkpoint(CKPT)
    proto = onnx.load(str(ONNX))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["arch"] == meta["arch"] and props["embedding_tap"] == card["onnx"]["tap"]
    assert [o.name for o in proto.graph.output] == ["logits", "embedding"]
    dataset = DomainDataset(demo_config)
    records = dataset.select(subset="val")
    picks = [records[0], records[-1]]  # one frame of each domain
    assert {r.domain for r in picks} == {"cityscapes", "kitti"}
    images = np.stack([dataset.prepare(r).image for r in picks])
    x = normalize_image(images, meta["image"]["mean"], meta["image"]["std"])
    parity = onnx_parity(model, ONNX, x, tap=card["onnx"]["tap"])
    assert parity["max_abs_diff"] <= 1e-4
