"""Checkpoints: VainF dict / bare state dict round trips, strictness, safety, metadata."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models import CheckpointError, build_model, load_checkpoint, save_checkpoint
from models.checkpoint import best_fit, infer_architecture

torch.set_num_threads(1)

X = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))


def _trained_like(arch: str = "deeplabv3plus_mobilenet", **kw: int) -> torch.nn.Module:
    """A model with non-trivial BN statistics, so that a wrong load changes the output."""
    torch.manual_seed(0)
    model = build_model(arch, **kw)
    model.train()
    with torch.no_grad():
        model(X)
    return model.eval()


def _vainf_dict(model: torch.nn.Module) -> dict:
    return {
        "cur_itrs": 30000,
        "model_state": model.state_dict(),
        "optimizer_state": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]},
        "scheduler_state": {"last_epoch": 30000},
        "best_score": 0.7215,
    }


@pytest.mark.parametrize("layout", ["vainf", "bare"])
def test_round_trip_gives_identical_logits(tmp_path: Path, layout: str) -> None:
    model = _trained_like()
    path = tmp_path / "best_deeplabv3plus_mobilenet_cityscapes_os16.pth"
    torch.save(_vainf_dict(model) if layout == "vainf" else model.state_dict(), path)
    loaded, card = load_checkpoint(path)
    assert not loaded.training
    assert card["arch"] == "deeplabv3plus_mobilenet"
    assert card["arch_source"] == "inferred"
    assert card["layout"] == layout
    if layout == "vainf":
        assert card["cur_itrs"] == 30000
        assert card["best_score"] == pytest.approx(0.7215)
    with torch.no_grad():
        assert torch.equal(loaded(X), model(X))


@pytest.mark.slow
def test_round_trip_resnet50_os8(tmp_path: Path) -> None:
    model = _trained_like("deeplabv3plus_resnet50", output_stride=8)
    path = tmp_path / "r50.pth"
    torch.save(_vainf_dict(model), path)
    loaded, card = load_checkpoint(path, output_stride=8)
    assert card["arch"] == "deeplabv3plus_resnet50"
    with torch.no_grad():
        assert torch.equal(loaded(X), model(X))


def test_own_metadata_drives_the_build(tmp_path: Path) -> None:
    model = _trained_like("deeplabv3plus_efficientnet_lite0", output_stride=8, head_channels=24)
    path = save_checkpoint(
        model,
        tmp_path / "demo.pt",
        image={"height": 64, "width": 96, "mean": [0.5] * 3, "std": [0.25] * 3},
        training={"seed": 0},
    )
    loaded, card = load_checkpoint(path)  # defaults say output_stride=16; metadata says 8
    assert card["arch_source"] == "checkpoint"
    assert card["layout"] == "domain-gap"
    assert (card["output_stride"], card["head_channels"]) == (8, 24)
    assert card["image"]["std"] == [0.25] * 3
    assert card["training"] == {"seed": 0}
    with torch.no_grad():
        assert torch.equal(loaded(X), model(X))
    raw = torch.load(path, weights_only=True)
    assert set(raw["model_state"]) == set(model.state_dict())  # VainF's loader reads this key
    assert not list(tmp_path.glob(".*tmp"))


def test_dataparallel_prefix_and_missing_bn_counters_are_accepted(tmp_path: Path) -> None:
    model = _trained_like(head_channels=16)
    state = {
        f"module.{k}": v
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    torch.save({"model_state": state}, tmp_path / "dp.pth")
    loaded, _ = load_checkpoint(tmp_path / "dp.pth")
    with torch.no_grad():
        assert torch.equal(loaded(X), model(X))


def test_infer_architecture_from_keys() -> None:
    for arch, kw in [
        ("deeplabv3plus_mobilenet", {"num_classes": 21}),
        ("deeplabv3plus_resnet50", {}),
        ("deeplabv3plus_resnet101", {"head_channels": 64}),
        ("deeplabv3plus_efficientnet_lite0", {"head_channels": 128}),
    ]:
        with torch.device("meta"):
            state = build_model(arch, **kw).state_dict()
        got = infer_architecture(state)
        assert got == {
            "arch": arch,
            "num_classes": kw.get("num_classes", 19),
            "head_channels": kw.get("head_channels", 256),
        }
    assert infer_architecture({"encoder.weight": torch.zeros(1)}) is None


def test_mismatch_lists_keys_and_names_best_fit(tmp_path: Path) -> None:
    with torch.device("meta"):
        state = build_model("deeplabv3plus_resnet101", num_classes=21).state_dict()
    state = {k: torch.zeros(v.shape) for k, v in state.items()}
    path = tmp_path / "voc_r101.pth"
    torch.save({"model_state": state}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, arch="deeplabv3plus_resnet50")  # num_classes: the checkpoint's
    msg = str(err.value)
    assert "voc_r101.pth" in msg
    assert "unexpected keys" in msg and "backbone.layer3.6.conv1.weight" in msg
    assert "+" in msg and "more" in msg  # long lists are truncated
    assert "best fit: arch=deeplabv3plus_resnet101, num_classes=21" in msg
    assert "100% of keys match" in msg
    with pytest.raises(CheckpointError, match=r"model.num_classes = 19, .* has 21 classes"):
        load_checkpoint(path, arch="deeplabv3plus_resnet101", num_classes=19)


def test_missing_keys_are_reported(tmp_path: Path) -> None:
    model = _trained_like(head_channels=16)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.aspp")}
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match=r"missing keys \[classifier\.aspp"):
        load_checkpoint(tmp_path / "cut.pth")


def test_best_fit_on_a_foreign_state_dict() -> None:
    fit, share = best_fit({"encoder.weight": torch.zeros(3)})
    assert share == 0.0
    assert fit["arch"]


class _Payload:
    """Unpickling this would create a file (stand-in for arbitrary code execution)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def test_pickle_payload_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model_state": {}, "hook": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match=r"refused to load.*weights-only"):
        load_checkpoint(path)
    assert not marker.exists()


def test_unreadable_and_wrong_payloads(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pth"):
        load_checkpoint(tmp_path / "junk.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint(tmp_path / "list.pth")
    torch.save({"epoch": 3, "net": {"w": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="model_state"):
        load_checkpoint(tmp_path / "other.pth")
    torch.save({"w": torch.zeros(1)}, tmp_path / "unknown.pth")
    with pytest.raises(CheckpointError, match="cannot tell the architecture"):
        load_checkpoint(tmp_path / "unknown.pth")
