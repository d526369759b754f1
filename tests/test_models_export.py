"""ONNX export: outputs ``logits`` + ``embedding``, parity with torch, dynamic batch, CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml

from domain_gap import encoders
from models import build_model, image_embedding, save_checkpoint
from models.export import ExportError, export_checkpoint, export_onnx, onnx_parity

torch.set_num_threads(1)
DEMO_CKPT = Path(__file__).resolve().parent.parent / "models" / "demo" / "deeplabv3plus_demo.pt"


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
    with pytest.raises(ExportError, match=r"differs from torch, file removed; parity: .* <= 0 x"):
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
    assert "max |onnx - torch| logits" in result.output and out.is_file()
    assert "argmax agreement 100.0000%" in result.output
    decoder = CliRunner().invoke(
        app, [*args, "--height", "64", "--width", "96", "--tap", "decoder"]
    )
    assert decoder.exit_code == 0, decoder.output
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["embedding_tap"] == "decoder" and "embedding: decoder, 16 dims" in decoder.output
    wrong = CliRunner().invoke(app, [*args, "--tap", "logits"])
    assert wrong.exit_code == 2 and "--tap" in wrong.output
    bad = CliRunner().invoke(app, [*args, "--arch", "deeplabv3plus_resnet50"])
    assert bad.exit_code == 2
    assert "best fit: arch=deeplabv3plus_mobilenet" in bad.output


def _adabn_config(config_for: Any, root: Path, tmp: Path, ckpt: Path, fixes: list) -> Any:
    return config_for(
        root,
        top={
            "cache_dir": str(tmp / "cache"),
            "model": {"checkpoint": str(ckpt), "batch_size": 4, "device": "cpu"},
            "analysis": {"mitigations": fixes, "mitigation_fit": {"max_images": 4}},
        },
    )


def test_adabn_export_is_the_adapted_model(
    tiny_sample: Path, tmp_path: Path, config_for: Any
) -> None:
    """The exported ONNX carries the AdaBN statistics: it differs from the plain export and
    equals the adapted torch model (fitted as the what-if fits it) within the tolerance.

    The trained demo model: a random network's BN statistics on flat synthetic frames are
    ill-conditioned enough that float32 rounding alone breaks the 1e-4 parity."""
    from domain_gap.binder_mitigation import fit_for_target
    from domain_gap.data.dataset import DomainDataset
    from models import load_checkpoint
    from models.export import PARITY_TOLERANCE, export_adabn

    ckpt = DEMO_CKPT
    fixes = [{"kind": "rgb_normalize"}, {"kind": "adabn", "options": {"batch_size": 2}}]
    config = _adabn_config(config_for, tiny_sample, tmp_path, ckpt, fixes)
    report = export_adabn(ckpt, tmp_path / "adapted.onnx", config)  # the config's 128x256
    assert report["target"] == "kitti" and report["mitigation"] == "adabn"
    assert report["max_abs_diff"] <= PARITY_TOLERANCE and report["n_images"] >= 2
    export_checkpoint(ckpt, tmp_path / "plain.onnx", height=128, width=256)
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "adapted.onnx")).metadata_props}
    assert meta["adabn_target"] == "kitti" and meta["adabn_fit_key"] == report["fit_key"]

    dataset = DomainDataset(config)
    kitti = [dataset.prepare(r) for r in dataset.select(domain="kitti", subset="val")[:2]]
    x = np.stack(
        [encoders.normalize_image(p.image, config.image.mean, config.image.std) for p in kitti]
    )
    adapted_onnx = _run(tmp_path / "adapted.onnx", x)
    plain_onnx = _run(tmp_path / "plain.onnx", x)
    fitted = fit_for_target(config, dataset, config.analysis.mitigations[1], "kitti")  # cached
    assert fitted.key() == report["fit_key"]
    adapted = fitted.adapt_model(load_checkpoint(ckpt)[0]).eval()
    with torch.no_grad():
        taps = adapted.forward_taps(torch.from_numpy(x))
    torch_out = (taps["logits"].numpy(), image_embedding(taps, "aspp").numpy())
    for onnx_out, plain, ref in zip(adapted_onnx, plain_onnx, torch_out, strict=True):
        np.testing.assert_allclose(onnx_out, ref, atol=PARITY_TOLERANCE, rtol=0)
        assert np.abs(onnx_out - plain).max() > 100 * PARITY_TOLERANCE  # BN statistics changed


def _run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits", "embedding"], {"image": x})


def test_cli_adabn_export_without_an_adabn_entry_is_one_line(
    tiny_sample: Path, tiny_ckpt: Path, tmp_path: Path, config_for: Any
) -> None:
    from typer.testing import CliRunner

    from domain_gap.cli import app

    config = _adabn_config(
        config_for, tiny_sample, tmp_path, tiny_ckpt, [{"kind": "rgb_normalize"}]
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    out = tmp_path / "a.onnx"
    args = ["export-onnx", "--checkpoint", str(tiny_ckpt), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--adabn-config", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert "adabn" in lines[0] and "analysis.mitigations" in lines[0]
    assert not out.exists()
    target_alone = CliRunner().invoke(app, [*args, "--adabn-target", "kitti"])
    assert target_alone.exit_code == 2 and "--adabn-config" in target_alone.stderr
