"""One model spec: written into the ONNX file, read back, and checked against the config
before any work starts (one line per mismatch, naming the setting)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import pytest
import torch

from domain_gap.model_spec import (
    SPEC_KEYS,
    ModelSpec,
    SpecError,
    check_model_config,
    read_onnx_spec,
)
from models.checkpoint import CheckpointError
from models.deeplab import build_model
from models.export import export_onnx

SPEC = ModelSpec(
    "deeplabv3plus_mobilenet", 19, 16, 256, "aspp", 256, (0.5, 0.4, 0.3), (0.2, 0.2, 0.25), 128, 256
)


def test_metadata_round_trip_and_missing_keys_named() -> None:
    props = SPEC.metadata()
    assert set(props) == set(SPEC_KEYS) and props["input_mean"] == "0.5,0.4,0.3"
    assert ModelSpec.from_metadata(props, "x") == SPEC
    old = {k: v for k, v in props.items() if k not in ("embedding_dim", "input_std")}
    with pytest.raises(SpecError, match=r"x: metadata lacks embedding_dim, input_std"):
        ModelSpec.from_metadata(old, "x")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small MobileNet checkpoint and its ONNX file with the decoder tap (16 channels)."""
    from models import save_checkpoint

    torch.manual_seed(0)
    model = build_model("deeplabv3plus_mobilenet", head_channels=16).eval()
    root = tmp_path_factory.mktemp("spec")
    ckpt = save_checkpoint(model, root / "m.pt")
    path = export_onnx(
        model,
        root / "m.onnx",
        64,
        96,
        tap="decoder",
        metadata={"input_mean": "0.1,0.2,0.3", "input_std": "1,1,1"},
    )
    return ckpt, path


def test_exported_onnx_carries_the_whole_spec(exported: tuple[Path, Path]) -> None:
    _, path = exported
    spec = read_onnx_spec(path)
    assert spec == ModelSpec(
        "deeplabv3plus_mobilenet",
        19,
        16,
        16,
        "decoder",
        16,
        (0.1, 0.2, 0.3),
        (1.0, 1.0, 1.0),
        64,
        96,
    )
    props = {p.key for p in onnx.load(str(path)).metadata_props}
    assert set(SPEC_KEYS) <= props


def _config(config_for, root: Path, **model):
    return config_for(root, top={"model": model})


def test_config_states_only_what_differs(config_for, tiny_sample, exported) -> None:
    ckpt, path = exported
    config = _config(config_for, tiny_sample, checkpoint=str(ckpt), onnx=str(path), tap="decoder")
    assert config.model.embedding_dim is None
    assert check_model_config(config).embedding_dim == 16


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"tap": "aspp"}, r"^model.tap = aspp, but .*m.onnx embeds the 'decoder' tap"),
        ({"tap": "decoder", "embedding_dim": 256}, r"^model.embedding_dim = 256, but .* 16-dim"),
    ],
)
def test_onnx_mismatch_is_one_line_naming_the_setting(
    config_for, tiny_sample, exported, setting, message
) -> None:
    ckpt, path = exported
    config = _config(config_for, tiny_sample, checkpoint=str(ckpt), onnx=str(path), **setting)
    with pytest.raises(SpecError, match=message) as err:
        check_model_config(config)
    assert "\n" not in str(err.value)


def test_num_classes_against_the_checkpoint_before_extraction(
    config_for, tiny_sample, exported
) -> None:
    ckpt, _ = exported
    config = _config(config_for, tiny_sample, checkpoint=str(ckpt), onnx=None, num_classes=21)
    with pytest.raises(CheckpointError, match=r"model.num_classes = 21, .* 19 classes") as err:
        check_model_config(config)
    assert "\n" not in str(err.value)


def test_bad_onnx_file_is_one_line_naming_it(config_for, tiny_sample, exported, tmp_path) -> None:
    ckpt, _ = exported
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model at all")
    config = _config(config_for, tiny_sample, checkpoint=str(ckpt), onnx=str(garbage))
    with pytest.raises(SpecError) as err:
        check_model_config(config)
    msg = str(err.value)
    assert msg.startswith(f"{garbage}: not a readable ONNX model") and "\n" not in msg
    missing = _config(config_for, tiny_sample, checkpoint=str(ckpt), onnx=str(tmp_path / "no"))
    assert check_model_config(missing) is None  # not exported yet: analyze does not need it
    with pytest.raises(SpecError, match="ONNX file not found"):
        read_onnx_spec(tmp_path / "no")  # what the binder's load_model says


def test_checkpoint_card_carries_the_spec(tmp_path: Path) -> None:
    from models import load_checkpoint, save_checkpoint

    model = build_model("deeplabv3_mobilenet", output_stride=8, head_channels=16)
    image = {"height": 64, "width": 96, "mean": [0.1, 0.2, 0.3], "std": [1, 1, 1]}
    path = save_checkpoint(model, tmp_path / "m.pt", image=image, tap="decoder")
    _, card = load_checkpoint(path)
    assert {k: card[k] for k in ("arch", "num_classes", "output_stride", "head_channels")} == {
        "arch": "deeplabv3_mobilenet",
        "num_classes": 19,
        "output_stride": 8,
        "head_channels": 16,
    }
    assert card["embedding_tap"] == "decoder" and card["embedding_dim"] == 16
    assert card["image"] == image


def test_the_model_check_runs_once_per_files_and_settings(
    tiny_sample: Path, tiny_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warm rerun skips the check (which loads the whole checkpoint); new settings or a
    changed checkpoint run it again, and a failing check is never remembered."""
    import shutil

    from conftest import tiny_config_dict

    from domain_gap import pipeline
    from domain_gap.config import parse_config

    calls: list[int] = []
    real = pipeline.check_model_config
    monkeypatch.setattr(pipeline, "check_model_config", lambda c: calls.append(1) or real(c))
    ckpt = tmp_path / "model.pt"
    shutil.copy(tiny_ckpt, ckpt)

    def config(**model: Any) -> Any:
        top = {"cache_dir": str(tmp_path / "cache"), "model": {"checkpoint": str(ckpt), **model}}
        return parse_config(tiny_config_dict(tiny_sample, top=top), source="t", base_dir=tmp_path)

    pipeline.check_model_once(config())
    pipeline.check_model_once(config())
    assert len(calls) == 1
    pipeline.check_model_once(config(batch_size=3))  # other settings: checked again
    assert len(calls) == 2
    with pytest.raises(Exception, match="num_classes"):
        pipeline.check_model_once(config(num_classes=7))
    with pytest.raises(Exception, match="num_classes"):  # the failure was not remembered
        pipeline.check_model_once(config(num_classes=7))
    assert len(calls) == 4
    ckpt.write_bytes(ckpt.read_bytes() + b"\0")  # other bytes: checked again
    pipeline.check_model_once(config())
    assert len(calls) == 5
