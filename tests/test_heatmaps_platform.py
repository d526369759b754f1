"""The platform's CAM: the ONNX ``cam`` output is the closed form and equals the autograd
Grad-CAM at the classifier layer; the binder with that output passes code-loader's platform
check and draws the overlay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from domain_gap.heatmaps.overlay import cam_overlay, predicted_class_cam

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def exported(tiny_sample: Path, tmp_path_factory: pytest.TempPathFactory):
    """A narrow random model exported with the cam output, and a binder config for it."""
    from models import build_model, save_checkpoint
    from models.export import export_model

    tmp = tmp_path_factory.mktemp("cam_onnx")
    torch.manual_seed(0)
    model = build_model("deeplabv3plus_mobilenet", head_channels=16)
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 128) * 1.5 + 0.3)
    model.eval()
    save_checkpoint(model, tmp / "model.pt")
    report = export_model(model, tmp / "model.onnx", 64, 128, cam=True)
    config = {
        "image": {"height": 64, "width": 128, "resize": "pad"},
        "domains": [
            {"name": n, "kind": n, "root": str(tiny_sample / n), "splits": s}
            for n, s in (("cityscapes", ["train", "val"]), ("kitti", ["training", "testing"]))
        ],
        "model": {"checkpoint": "model.pt", "onnx": "model.onnx", "embedding_dim": 16},
        "cache_dir": "cache",
    }
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    return model, tmp, report


def test_onnx_cam_is_the_closed_form_and_equals_autograd(exported) -> None:
    import onnxruntime as ort

    from models.cam import gradcam_autograd, target_layer

    model, tmp, report = exported
    assert report["cam_max_abs_diff"] <= 1e-4  # ONNX against torch's closed form
    session = ort.InferenceSession(str(tmp / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "embedding", "cam"]
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 128)).astype(np.float32)
    logits, _, cam = session.run(None, {"image": x})
    assert cam.shape == (2, 19, 16, 32)
    pred = torch.from_numpy(logits).argmax(1)
    masks = torch.nn.functional.one_hot(pred, 19).permute(0, 3, 1, 2).float()
    ref = gradcam_autograd(model, torch.from_numpy(x), masks, target_layer(model, "classifier"))
    for b, c in torch.nonzero(masks.sum(dim=(2, 3)) > 0).tolist():
        a, r = cam[b, c], ref.cams[b, c].numpy()
        if r.max() == 0:
            assert a.max() <= 1e-6
            continue
        np.testing.assert_allclose(a / a.max(), r / r.max(), atol=1e-4)


def test_overlay_shows_the_class_predicted_on_most_pixels() -> None:
    logits = np.zeros((19, 8, 16), np.float32)
    logits[13, :, :10] = 5.0  # car on 80 pixels, road (0) elsewhere
    cam = np.zeros((19, 2, 4), np.float32)
    cam[13, 1, 1] = 3.0
    c, heat = predicted_class_cam(logits, cam)
    assert c == 13 and heat.max() == 1.0 and heat.sum() == 1.0
    image = np.full((8, 16, 3), 100, np.uint8)
    out = cam_overlay(image, logits, cam)
    assert out.dtype == np.uint8 and out.shape == image.shape and (image == 100).all()


def test_binder_with_the_cam_output_passes_the_platform_check(exported) -> None:
    _, tmp, _ = exported
    code = (
        "import json, leap_binder, leap_test; "
        "r = leap_test.run_platform_check(); d = leap_test.run_integration_tests(1); "
        "v = [x.visualizer_handler_data.name "
        "for x in leap_binder.leap_binder.setup_container.visualizers]; "
        "print('@@' + json.dumps([leap_binder.HAS_CAM, r['is_valid'], len(d), v]))"
    )
    env = {**os.environ, "DOMAIN_GAP_CONFIG": str(tmp / "config.yaml")}
    env["TL_DISABLE_ANALYTICS"] = "true"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    has_cam, valid, done, visualizers = json.loads(lines[-1][2:])
    assert has_cam and valid and done >= 4
    assert "cam_overlay" in visualizers
