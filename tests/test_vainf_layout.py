"""Checkpoints in VainF/DeepLabV3Plus-Pytorch's own layouts load strictly.

The expected keys and shapes come from ``tests/data/vainf/*.json``, written by
``tests/data/vainf/make_vainf_keys.py`` from a reading of VainF's code, without this project's
modules. Shapes do not depend on the output stride (dilations and atrous rates do not show in
state-dict keys), so each list is checked at OS 8 and 16.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.checkpoint import CheckpointError, infer_architecture, load_checkpoint
from models.deeplab import build_model

FIXTURES = Path(__file__).parent / "data" / "vainf"
ARCHS = [
    "deeplabv3plus_mobilenet",
    "deeplabv3plus_resnet50",
    "deeplabv3plus_resnet101",
    "deeplabv3_mobilenet",
    "deeplabv3_resnet50",
    "deeplabv3_resnet101",
]


def _fixture(name: str) -> dict[str, tuple[int, ...]]:
    doc = json.loads((FIXTURES / f"{name}.json").read_text())
    return {k: tuple(v) for k, v in doc["keys"].items()}


def _state(keys: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights of the fixture's shapes (positive BN variances, integer counters)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in keys.items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            state[k] = torch.rand(shape, generator=g) + 0.5
        else:
            state[k] = torch.randn(shape, generator=g) * 0.05
    return state


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("arch", ARCHS)
def test_model_keys_and_shapes_equal_vainf(arch: str, output_stride: int) -> None:
    with torch.device("meta"):
        model = build_model(arch, 19, output_stride)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = _fixture(arch)
    assert sorted(set(ours) ^ set(expected)) == []
    assert {k: s for k, s in ours.items() if expected[k] != s} == {}


def test_fixture_resnet_backbone_equals_torchvision() -> None:
    """The fixture's ResNet keys against an independent builder (VainF copies torchvision's)."""
    from torchvision.models import resnet101

    with torch.device("meta"):
        tv = {f"backbone.{k}": tuple(v.shape) for k, v in resnet101().state_dict().items()}
    tv = {k: s for k, s in tv.items() if not k.startswith("backbone.fc.")}
    fixture = {k: s for k, s in _fixture("deeplabv3plus_resnet101").items() if "backbone." in k}
    assert fixture == tv


@pytest.mark.parametrize("arch", ARCHS)
def test_architecture_inferred_from_vainf_keys(arch: str) -> None:
    state = {k: torch.empty(s, device="meta") for k, s in _fixture(arch).items()}
    assert infer_architecture(state) == {"arch": arch, "num_classes": 19, "head_channels": 256}


@pytest.mark.parametrize("arch", ["deeplabv3plus_mobilenet", "deeplabv3_mobilenet"])
def test_vainf_training_dict_loads_strictly_and_runs(tmp_path: Path, arch: str) -> None:
    state = _state(_fixture(arch))
    path = tmp_path / "best.pth"
    torch.save({"model_state": state, "optimizer_state": {}, "cur_itrs": 3}, path)
    model, card = load_checkpoint(path, output_stride=8)
    assert card["arch"] == arch and card["layout"] == "vainf" and card["num_classes"] == 19
    loaded = model.state_dict()
    for key in ("backbone.high_level_features.17.conv.2.weight", "classifier.classifier.1.weight"):
        assert torch.equal(loaded[key], state[key])
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 64, 64))
    assert logits.shape == (1, 19, 64, 64) and torch.isfinite(logits).all()


def test_resnet50_vainf_checkpoint_loads(tmp_path: Path) -> None:
    state = _state(_fixture("deeplabv3plus_resnet50"))
    path = tmp_path / "best.pth"
    torch.save({"model_state": state}, path)
    model, card = load_checkpoint(path, output_stride=16)
    assert card["arch"] == "deeplabv3plus_resnet50"
    assert torch.equal(
        model.state_dict()["backbone.layer4.2.bn3.running_var"],
        state["backbone.layer4.2.bn3.running_var"],
    )


def test_separable_conv_checkpoint_refused_in_one_line_naming_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "sep.pth"
    torch.save({"model_state": _state(_fixture("deeplabv3plus_mobilenet_separable"))}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "--separable_conv" in str(err.value) and "\n" not in str(err.value)


def test_num_classes_mismatch_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "best.pth"
    torch.save({"model_state": _state(_fixture("deeplabv3plus_mobilenet"))}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, num_classes=21)
    msg = str(err.value)
    assert "model.num_classes = 21" in msg and "19 classes" in msg and "\n" not in msg


@pytest.mark.parametrize("arch", ["deeplabv3plus_hrnetv2_48", "deeplabv3plus_xception"])
def test_hrnet_and_xception_refused_in_one_line(arch: str) -> None:
    with pytest.raises(ValueError) as err:
        build_model(arch)
    assert "not supported" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("layer", ["aspp", "classifier"])
def test_gradcam_of_a_deeplabv3_head_equals_autograd(layer: str) -> None:
    from models.cam import gradcam, gradcam_autograd, target_layer

    torch.manual_seed(0)
    model = build_model("deeplabv3_mobilenet", 19, 16, head_channels=32).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        masks = torch.nn.functional.one_hot(model(x).argmax(1), 19).permute(0, 3, 1, 2).float()
    ours = gradcam(model, x, masks, layer)
    ref = gradcam_autograd(model, x, masks, target_layer(model, layer))
    assert torch.allclose(ours.weights, ref.weights, atol=1e-5, rtol=1e-4)
    assert ours.taps is not None and ours.cams.shape == ref.cams.shape
