"""ONNX parity relative to the logit scale, with argmax agreement, on large-logit ResNets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.deeplab import build_model
from models.export import ExportError, export_model, parity_figures, parity_line


def _pairs(ref: np.ndarray, delta: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    emb = np.ones((1, 4), np.float32)
    return {"logits": (ref + delta, ref), "embedding": (emb, emb)}


def test_tolerance_is_relative_to_the_logit_scale() -> None:
    ref = np.zeros((1, 3, 4, 4), np.float32)
    ref[:, 0] = 330.0  # class 0 wins everywhere, by far
    ok = parity_figures(_pairs(ref, 9.77e-4))  # the ResNet-50 case: 3e-6 relative
    assert ok["ok"] and ok["logits_scale"] == 330.0 and ok["argmax_agreement"] == 1.0
    assert not parity_figures(_pairs(ref, 0.04))["ok"]  # 1.2e-4 relative
    small = np.zeros((1, 3, 4, 4), np.float32)
    small[:, 1] = 0.5  # below 1 the scale is 1: an absolute 1e-4
    assert parity_figures(_pairs(small, 9e-5))["ok"]
    assert not parity_figures(_pairs(small, 2e-4))["ok"]


def test_argmax_disagreement_fails_even_within_tolerance() -> None:
    ref = np.zeros((1, 2, 100, 100), np.float32)
    ref[:, 0] = 1000.0
    got = ref.copy()
    got[0, 1, :2, 0] = 1000.05  # two pixels flip class, within 1e-4 x 1000
    figures = parity_figures({"logits": (got, ref), "embedding": (ref[:, 0, 0], ref[:, 0, 0])})
    assert figures["argmax_agreement"] == pytest.approx(0.9998)
    assert not figures["ok"]
    line = parity_line(figures)
    assert "argmax agreement 99.9800%" in line and "max|logits| = 1000" in line


def _large_logit_model(arch: str, seed: int) -> torch.nn.Module:
    """Random weights with perturbed BN statistics: logits in the hundreds or more."""
    torch.manual_seed(seed)
    model = build_model(arch, 19, 16).eval()
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
    model.classifier.fuse[1].running_var.div_(36)
    return model


@pytest.mark.parametrize("arch", ["deeplabv3plus_resnet50", "deeplabv3plus_resnet101"])
def test_large_logit_resnet_exports_with_parity(tmp_path: Path, arch: str) -> None:
    model = _large_logit_model(arch, 0)
    out = tmp_path / "m.onnx"
    report = export_model(model, out, height=64, width=64)
    assert out.is_file() and report["ok"]
    assert report["logits_scale"] > 100  # large logits: an absolute 1e-4 is not the rule here
    assert report["logits_max_abs_diff"] <= 1e-4 * report["logits_scale"]
    assert report["argmax_agreement"] >= 0.9999


def test_failed_parity_removes_the_file_and_says_both_figures(tmp_path: Path, monkeypatch) -> None:
    import models.export as export

    monkeypatch.setattr(export, "ARGMAX_AGREEMENT", 1.01)  # unreachable: always refused
    model = build_model("deeplabv3plus_mobilenet", 19, 16, head_channels=16).eval()
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError) as err:
        export_model(model, out, height=64, width=64)
    assert not out.exists()
    assert "argmax agreement" in str(err.value) and "max|logits|" in str(err.value)
