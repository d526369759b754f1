"""ONNX export: outputs ``logits`` + ``embedding``, parity with torch, dynamic batch, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from models import build_model, image_embedding, save_checkpoint
from models.export import ExportError, export_checkpoint, export_onnx, onnx_parity

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("deeplabv3plus_efficientnet_lite0", head_channels=32)
    model.train()
    with torch.no_grad():  # non-trivial BN statistics
        model(torch.randn(2, 3, 64, 128))
    return model.eval()


@pytest.mark.parametrize("tap", ["aspp", "decoder"])
def test_onnx_outputs_match_torch_for_batch_1_and_3(
    tmp_path: Path, small_model: torch.nn.Module, tap: str
) -> None:
    path = export_onnx(small_model, tmp_path / "m.onnx", 64, 128, tap=tap)
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [o.name for o in proto.graph.output] == ["logits", "embedding"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["embedding_tap"] == tap and meta["arch"] == "deeplabv3plus_efficientnet_lite0"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch in (1, 3):
        x = rng.standard_normal((batch, 3, 64, 128)).astype(np.float32)
        logits, emb = session.run(None, {"image": x})
        with torch.no_grad():
            taps = small_model.forward_taps(torch.from_numpy(x))
        assert logits.shape == (batch, 19, 64, 128)
        assert emb.shape == (batch, 32)
        np.testing.assert_allclose(logits, taps["logits"].numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(emb, image_embedding(taps, tap).numpy(), atol=1e-4, rtol=0)


def test_export_checkpoint_reports_parity_and_writes_atomically(
    tmp_path: Path, small_model: torch.nn.Module
) -> None:
    ckpt = save_checkpoint(
        small_model, tmp_path / "m.pt", image={"mean": [0.1, 0.2, 0.3], "std": [1, 1, 1]}
    )
    out = tmp_path / "out" / "m.onnx"
    report = export_checkpoint(ckpt, out, height=64, width=128)
    assert out.is_file()
    assert report["max_abs_diff"] <= 1e-4
    assert report["max_abs_diff"] == max(
        report["logits_max_abs_diff"], report["embedding_max_abs_diff"]
    )
    assert report["embedding_dim"] == 32
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["input_mean"] == "0.1,0.2,0.3"
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.onnx"]  # no temp files left


def test_parity_detects_a_different_model(tmp_path: Path, small_model: torch.nn.Module) -> None:
    path = export_onnx(small_model, tmp_path / "m.onnx", 64, 128)
    other = build_model("deeplabv3plus_efficientnet_lite0", head_channels=32).eval()
    x = np.random.default_rng(3).standard_normal((1, 3, 64, 128)).astype(np.float32)
    assert onnx_parity(small_model, path, x)["max_abs_diff"] <= 1e-4
    assert onnx_parity(other, path, x)["max_abs_diff"] > 1e-2


def test_failed_parity_raises_and_removes_the_file(
    tmp_path: Path, small_model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.export as export

    ckpt = save_checkpoint(small_model, tmp_path / "m.pt")
    monkeypatch.setattr(export, "PARITY_TOLERANCE", 0.0)
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match=r"tolerance 0\.0"):
        export_checkpoint(ckpt, out, height=64, width=128)
    assert not out.exists()


def test_cli_export_onnx(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from domain_gap.cli import app

    torch.manual_seed(0)
    ckpt = save_checkpoint(
        build_model("deeplabv3plus_mobilenet", head_channels=16), tmp_path / "a.pt"
    )
    out = tmp_path / "a.onnx"
    args = ["export-onnx", "--checkpoint", str(ckpt), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--height", "64", "--width", "96"])
    assert result.exit_code == 0, result.output
    assert "max |onnx - torch|" in result.output and out.is_file()
    bad = CliRunner().invoke(app, [*args, "--arch", "deeplabv3plus_resnet50"])
    assert bad.exit_code == 2
    assert "best fit: arch=deeplabv3plus_mobilenet" in bad.output
