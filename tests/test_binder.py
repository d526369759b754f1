"""The Tensorleap binder: contracts of every registered function, the platform check, the
integration test on every subset and domain, leap.yaml's include list, and one latent space
shared with the local engine."""

from __future__ import annotations

import fnmatch
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from domain_gap import encoders, metrics
from domain_gap.config import load_config
from domain_gap.labels import IGNORE_INDEX, NUM_CLASSES

ROOT = Path(__file__).resolve().parent.parent
HEAD = 32  # a narrow head keeps the test model fast


@pytest.fixture(scope="module")
def binder(tiny_sample: Path, tmp_path_factory: pytest.TempPathFactory):
    """leap_binder imported against the tiny sample and a small random model exported to ONNX."""
    from models import build_model, save_checkpoint
    from models.export import export_onnx

    tmp = tmp_path_factory.mktemp("binder")
    torch.manual_seed(0)
    model = build_model("deeplabv3plus_mobilenet", output_stride=16, head_channels=HEAD).eval()
    save_checkpoint(model, tmp / "model.pt")
    export_onnx(model, tmp / "model.onnx", 128, 256)
    config = {
        "seed": 0,
        "image": {"height": 128, "width": 256, "resize": "pad"},
        "domains": [
            {"name": "cityscapes", "kind": "cityscapes", "root": str(tiny_sample / "cityscapes"),
             "splits": ["train", "val"]},
            {"name": "kitti", "kind": "kitti", "root": str(tiny_sample / "kitti"),
             "splits": ["training", "testing"]},
        ],
        "model": {"checkpoint": "model.pt", "onnx": "model.onnx", "embedding_dim": HEAD,
                  "arch": "deeplabv3plus_mobilenet", "batch_size": 4, "device": "cpu"},
        "cache_dir": "cache",
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOMAIN_GAP_CONFIG", str(path))
        module = importlib.import_module("leap_binder")
        yield module


def _subset(binder, state: str):
    for resp in binder.preprocess():
        if resp.state.name == state:
            return resp
    raise AssertionError(state)


def test_preprocess_covers_both_domains_with_string_ids(binder) -> None:
    train, val = binder.preprocess()
    unlabeled = binder.unlabeled_preprocess()
    for resp in (train, val, unlabeled):
        assert resp.sample_ids and all(isinstance(s, str) for s in resp.sample_ids)
        assert len(set(resp.sample_ids)) == len(resp.sample_ids)
    assert {s.split("/")[0] for s in train.sample_ids} == {"cityscapes", "kitti"}
    assert {s.split("/")[0] for s in val.sample_ids} == {"cityscapes", "kitti"}
    assert not set(train.sample_ids) & set(val.sample_ids)
    dataset = binder.source.active_dataset()
    # each sample counted once: subsets partition the dataset's records
    total = len(train.sample_ids) + len(val.sample_ids) + len(unlabeled.sample_ids)
    assert total == len(dataset.records)


def test_encoders_contract(binder) -> None:
    val = _subset(binder, "validation")
    sid = next(s for s in val.sample_ids if s.startswith("kitti/"))
    prepared = binder.source.prepared(sid)
    x = binder.input_image(sid, val)
    assert x.dtype == np.float32 and x.shape == (3, 128, 256)
    cfg = binder.source.active_config().image
    np.testing.assert_allclose(x, encoders.normalize_image(prepared.image, cfg.mean, cfg.std))
    raw = binder.raw_image(sid, val)
    assert raw.dtype == np.float32 and raw.shape == (128, 256, 3)
    assert raw.min() >= 0.0 and raw.max() <= 1.0
    gt = binder.gt_mask(sid, val)
    assert gt.dtype == np.float32 and gt.shape == (NUM_CLASSES, 128, 256)
    assert set(np.unique(gt)) <= {0.0, 1.0}
    void = prepared.label == IGNORE_INDEX
    assert void.any(), "the padded KITTI frame must contain void"
    assert np.all(gt[:, void] == 0) and np.all(gt[:, ~void].sum(axis=0) == 1)
    unlabeled = binder.unlabeled_preprocess()
    empty = binder.gt_mask(unlabeled.sample_ids[0], unlabeled)
    assert empty.dtype == np.float32 and empty.size == 0


def _batch(binder, n: int = 2):
    val = _subset(binder, "validation")
    ids = val.sample_ids[:n]
    masks = np.stack([binder.gt_mask(s, val) for s in ids])
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(n, NUM_CLASSES, 128, 256)).astype(np.float32)
    return logits, masks


def test_loss_and_metrics_batched_ignore_void(binder) -> None:
    logits, masks = _batch(binder)
    loss = binder.cross_entropy(logits, masks)
    assert loss.shape == (2,) and loss.dtype == np.float32
    single = [binder.cross_entropy(logits[i:i + 1], masks[i:i + 1])[0] for i in range(2)]
    np.testing.assert_allclose(loss, single, rtol=1e-6)
    # void pixels do not count: changing logits there leaves the loss unchanged
    void = masks.sum(axis=1) == 0
    assert void.any()
    changed = logits.copy()
    changed[:, 0][void] += 50.0
    np.testing.assert_allclose(binder.cross_entropy(changed, masks), loss, rtol=1e-6)
    miou = binder.miou(logits, masks)
    acc = binder.pixel_accuracy(logits, masks)
    per_class = binder.class_iou(logits, masks)
    assert miou.shape == acc.shape == (2,)
    assert len(per_class) == NUM_CLASSES and all(v.shape == (2,) for v in per_class.values())
    labels = encoders.labels_from_one_hot(masks)
    cm = metrics.confusion_matrices(metrics.predict(logits), labels)
    # code-loader casts model outputs as its engine does, which can flip near-tied argmaxes of
    # random logits on a handful of pixels: hence an absolute tolerance on the IoUs
    np.testing.assert_allclose(miou, metrics.sample_miou(cm), atol=1e-4)
    np.testing.assert_allclose(per_class["iou_road"], metrics.per_class_iou(cm)[:, 0], atol=1e-4)


def test_visualizers_uint8_and_do_not_mutate(binder) -> None:
    logits, masks = _batch(binder, 1)
    val = _subset(binder, "validation")
    raw = binder.raw_image(val.sample_ids[0], val)[None]
    before = [a.copy() for a in (raw, logits, masks)]
    outputs = [
        binder.image_visualizer(raw).data,
        binder.gt_visualizer(raw, masks).mask,
        binder.prediction_visualizer(raw, logits).mask,
        binder.loss_visualizer(logits, masks).data,
        binder.error_visualizer(logits, masks).data,
    ]
    for out in outputs:
        assert out.dtype == np.uint8 and out.shape[:2] == (128, 256)
    for a, b in zip((raw, logits, masks), before, strict=True):
        np.testing.assert_array_equal(a, b)
    gt_mask = outputs[1]
    void = masks[0].sum(axis=0) == 0
    assert np.all(gt_mask[void] == NUM_CLASSES)  # void is its own label, never a class


def test_metadata_from_data_never_invented(binder) -> None:
    val = _subset(binder, "validation")
    cs = next(s for s in val.sample_ids if s.startswith("cityscapes/"))
    kt = next(s for s in val.sample_ids if s.startswith("kitti/"))
    assert binder.domain(cs, val) == "cityscapes" and binder.domain(kt, val) == "kitti"
    assert binder.mitigation(cs, val) == binder.mitigation(kt, val) == "none"  # none configured
    record = binder.source.record(cs)
    vehicle_file = Path(record.vehicle_path)  # records hold full locations
    truth = json.loads(vehicle_file.read_text())
    got = binder.vehicle(cs, val)
    assert got["speed"] == pytest.approx(truth["speed"])
    assert got["yaw_rate"] == pytest.approx(truth["yawRate"])
    assert all(np.isnan(v) for v in binder.vehicle(kt, val).values())  # KITTI has none
    fractions = binder.class_fractions(kt, val)
    label = binder.source.prepared(kt).label
    valid = binder.source.prepared(kt).valid
    assert fractions["frac_vegetation"] == pytest.approx(np.mean(label[valid] == 8))
    src = binder.source_info(kt, val)
    assert src["orig_width"] / src["orig_height"] > 3.0


def test_platform_check_is_valid(binder) -> None:
    import leap_test

    report = leap_test.run_platform_check()
    assert report["is_valid"], report
    assert "domain" in report["metadata"]
    assert "model_custom_latent_space" in report["payloads"]
    assert binder.leap_binder.leap_analysis_configuration.domain_gap_metadata == ["domain"]


def test_integration_test_on_every_subset_and_domain(binder) -> None:
    import leap_test

    done = leap_test.run_integration_tests(per_domain=2)
    assert {state for state, _ in done} == {"training", "validation", "unlabeled"}
    for state in ("training", "validation"):
        assert {sid.split("/")[0] for st, sid in done if st == state} == {"cityscapes", "kitti"}


def test_leap_yaml_includes_every_project_module_the_binder_imports() -> None:
    code = (
        "import sys, json, leap_binder; "
        "print(json.dumps([m.__file__ for m in list(sys.modules.values()) "
        "if getattr(m, '__file__', None)]))"
    )
    env = {**os.environ, "TL_DISABLE_ANALYTICS": "true"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout.strip().splitlines()[-1]
    files = {Path(f).resolve() for f in json.loads(out)}
    project = sorted(str(f.relative_to(ROOT)) for f in files
                     if f.is_relative_to(ROOT) and ".venv" not in f.parts)
    assert "leap_binder.py" in project and "domain_gap/metrics.py" in project
    include = yaml.safe_load((ROOT / "leap.yaml").read_text())["include"]
    missing = [f for f in project if not any(fnmatch.fnmatch(f, pat) for pat in include)]
    assert not missing, f"leap.yaml include lacks {missing}"
    for pattern in include:
        assert list(ROOT.glob(pattern)), f"leap.yaml include {pattern!r} matches no file"
    assert not any(f.startswith("models/") for f in project), "the binder must not need torch"


def test_leap_yaml_has_entry_python_and_no_ids() -> None:
    spec = yaml.safe_load((ROOT / "leap.yaml").read_text())
    assert spec["entryFile"] == "leap_binder.py" and spec["pythonVersion"] == "py311"
    assert "projectId" not in spec and "secretId" not in spec


def test_latent_space_equals_local_engine_embedding(binder, tiny_sample: Path) -> None:
    """The platform's latent vector (ONNX embedding output through the registered latent
    space) equals the local engine's embedding of the same sample within 1e-4."""
    import onnxruntime as ort

    from domain_gap.analysis.extract import compute_records, load_runner

    config = binder.source.active_config()
    val = _subset(binder, "validation")
    ids = val.sample_ids[:3]
    session = ort.InferenceSession(str(binder._onnx_path()))
    x = np.stack([binder.input_image(s, val) for s in ids])
    _, embedding = session.run(None, {"image": x})
    platform = binder.embedding_latent(embedding)
    assert platform.shape == (3, HEAD) and platform.dtype == np.float32
    prepared = [binder.source.prepared(s) for s in ids]
    local = np.stack([r["embedding"] for r in compute_records(load_runner(config), prepared,
                                                              config)])
    np.testing.assert_allclose(platform, local, atol=1e-4)
    # the check can fail: another tap is another space
    other = config.model_copy(update={"model": config.model.model_copy(update={"tap": "decoder"})})
    decoder = np.stack([r["embedding"] for r in compute_records(load_runner(other), prepared,
                                                                other)])
    assert not np.allclose(platform, decoder[:, : platform.shape[1]], atol=1e-4)


def test_default_config_is_the_sample() -> None:
    cfg = load_config()
    assert [d.kind for d in cfg.domains] == ["cityscapes", "kitti"]
