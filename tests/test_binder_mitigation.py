"""``tensorleap.mitigation``: the binder's ``image`` input of target-domain samples is the local
engine's mitigated input (same fit, same pure functions); source samples are untouched; the
platform check passes; no torch on the way; the config refuses adabn and unknown names."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from domain_gap.analysis.cache import FeatureCache, prep_hash
from domain_gap.analysis.mitigate import choose_fit_records, fit_mitigation
from domain_gap.config import ConfigError, parse_config
from domain_gap.data.dataset import DomainDataset
from domain_gap.encoders import normalize_image

ROOT = Path(__file__).resolve().parent.parent
HEAD = 32  # the width test_binder.py uses too: leap_binder is imported once per session


def _config(tiny_sample: Path, tmp: Path, **model: Any) -> dict[str, Any]:
    return {
        "seed": 0,
        "image": {"height": 128, "width": 256, "resize": "pad"},
        "domains": [
            {
                "name": "cityscapes",
                "kind": "cityscapes",
                "root": str(tiny_sample / "cityscapes"),
                "splits": ["train", "val"],
            },
            {
                "name": "kitti",
                "kind": "kitti",
                "root": str(tiny_sample / "kitti"),
                "splits": ["training", "testing"],
            },
        ],
        "model": {
            "checkpoint": "model.pt",
            "onnx": "model.onnx",
            "embedding_dim": HEAD,
            "arch": "deeplabv3plus_mobilenet",
            "device": "cpu",
            **model,
        },
        "analysis": {
            "mitigations": [{"kind": "rgb_normalize"}, {"kind": "adabn"}],
            "mitigation_fit": {"max_images": 4},
        },
        "tensorleap": {"mitigation": "rgb_normalize"},
        "cache_dir": str(tmp / "cache"),
        "base_dir": str(tmp),
    }


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models import build_model, save_checkpoint
    from models.export import export_onnx

    tmp = tmp_path_factory.mktemp("binder_mitigation")
    torch.manual_seed(0)
    model = build_model("deeplabv3plus_mobilenet", output_stride=16, head_channels=HEAD).eval()
    save_checkpoint(model, tmp / "model.pt")
    export_onnx(model, tmp / "model.onnx", 128, 256)
    return tmp


@pytest.fixture(scope="module")
def binder(tiny_sample: Path, model_dir: Path):
    """leap_binder against the tiny sample with ``tensorleap.mitigation: rgb_normalize``."""
    path = model_dir / "config.yaml"
    path.write_text(yaml.safe_dump(_config(tiny_sample, model_dir)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOMAIN_GAP_CONFIG", str(path))
        yield importlib.import_module("leap_binder")


def _val(binder: Any, domain: str) -> tuple[Any, str]:
    _, val = binder.preprocess()
    return val, next(s for s in val.sample_ids if s.startswith(f"{domain}/"))


def test_target_input_is_the_local_engines_mitigated_input(binder: Any, tmp_path: Path) -> None:
    config = binder.source.active_config()
    dataset = DomainDataset(config)  # the local engine's own index, prepare and fit
    evaluated = [r.sample_id for r in dataset.records if r.subset == "val"]
    src, tgt, fit_set = choose_fit_records(config, dataset, "cityscapes", "kitti", evaluated)
    fresh = FeatureCache(tmp_path, "local-engine", "aspp", prep_hash(config))  # a real re-fit
    spec = config.analysis.mitigations[0]
    fitted = fit_mitigation(config, dataset, spec, (src, tgt), fit_set, fresh)
    val, sid = _val(binder, "kitti")
    prepared = dataset.prepare(binder.source.record(sid))
    mean, std = config.image.mean, config.image.std
    expected = normalize_image(fitted.apply(prepared.image, prepared.valid), mean, std)
    got = binder.input_image(sid, val)
    assert got.dtype == np.float32 and got.shape == (3, 128, 256)
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    plain = normalize_image(prepared.image, mean, std)
    assert np.abs(got - plain)[:, prepared.valid].max() > 1e-2  # the fix did change the input
    assert binder.mitigation(sid, val) == "rgb_normalize"
    assert binder.source.mitigation(sid).key() == fitted.key()


def test_source_input_is_unchanged(binder: Any) -> None:
    config = binder.source.active_config()
    val, sid = _val(binder, "cityscapes")
    prepared = DomainDataset(config).prepare(binder.source.record(sid))
    plain = normalize_image(prepared.image, config.image.mean, config.image.std)
    np.testing.assert_array_equal(binder.input_image(sid, val), plain)
    assert binder.mitigation(sid, val) == "none"
    # raw_image (the visualizers' picture) stays the frame as it is on disk, for every domain
    _, kitti = _val(binder, "kitti")
    raw = binder.raw_image(kitti, val)
    np.testing.assert_array_equal(raw, binder.source.prepared(kitti).image / np.float32(255))


def test_platform_check_passes_with_the_mitigation(binder: Any) -> None:
    import leap_test

    report = leap_test.run_platform_check()
    assert report["is_valid"], report
    assert "mitigation" in report["metadata"] and "domain" in report["metadata"]
    done = leap_test.run_integration_tests(per_domain=1)
    assert {sid.split("/")[0] for _, sid in done} == {"cityscapes", "kitti"}


def test_binder_fits_without_torch_or_a_checkpoint(
    tiny_sample: Path, model_dir: Path, tmp_path: Path
) -> None:
    """As on the platform: only the ONNX file, no torch; the fit is made and cached."""
    data = _config(
        tiny_sample, tmp_path, checkpoint="absent.pt", onnx=str(model_dir / "model.onnx")
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    code = (
        "import sys, leap_binder as b\n"
        "_, val = b.preprocess()\n"
        "sid = next(s for s in val.sample_ids if s.startswith('kitti/'))\n"
        "x = b.input_image(sid, val)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'models'))\n"
        "print('@@' + repr((b.mitigation(sid, val), x.shape, bad[:3])))\n"
    )
    env = {**os.environ, "TL_DISABLE_ANALYTICS": "true", "DOMAIN_GAP_CONFIG": str(path)}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("@@"))
    assert line[2:] == repr(("rgb_normalize", (3, 128, 256), []))
    fits = list((tmp_path / "cache").glob("no-checkpoint/*/fits/rgb_normalize-*.json"))
    assert len(fits) == 1 and json.loads(fits[0].read_text())["kind"] == "rgb_normalize"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("adabn", "export-onnx --adabn-config"), ("no_such_fix", "analysis.mitigations")],
)
def test_config_refuses_adabn_and_unknown_names(
    tiny_sample: Path, tmp_path: Path, name: str, expected: str
) -> None:
    data = {**_config(tiny_sample, tmp_path), "tensorleap": {"mitigation": name}}
    with pytest.raises(ConfigError) as err:
        parse_config(data, source="c.yaml")
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert "tensorleap.mitigation" in message and name in message and expected in message
    unset = parse_config({**data, "tensorleap": {}}, source="c.yaml")
    assert unset.tensorleap.mitigation is None
