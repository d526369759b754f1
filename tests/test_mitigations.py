"""The mitigation contract, common to every image-space kind: fit → immutable fitted object,
pure ``apply`` (padding unchanged), JSON params that rebuild the very same function, a stable
cache key, the registry, the fit/eval guard, import walls and one-line ValueErrors."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from domain_gap import mitigations
from domain_gap.mitigations import FitImage, Fitted, Mitigation, build, check_disjoint, from_params

ROOT = Path(__file__).resolve().parent.parent
H, W = 64, 128
IMAGE_KINDS = {
    "rgb_normalize": {},
    "histogram_match": {},
    "histogram_match_lab": {},
    "fourier_amplitude": {"beta": 0.05},
}


def _frame(rng: np.random.Generator, loc: float, scale: float, pad: int) -> FitImage:
    """A smooth-plus-noise RGB frame with ``pad`` void rows top and bottom (image 0 there)."""
    yy, xx = np.mgrid[0:H, 0:W]
    base = loc + scale * np.sin(xx / 9.0 + rng.uniform(0, 6))[..., None] * rng.uniform(0.5, 1, 3)
    img = np.clip(base + rng.normal(0, scale / 2, (H, W, 3)) + yy[..., None] * 0.2, 0, 255)
    valid = np.ones((H, W), bool)
    valid[:pad], valid[H - pad :] = False, False
    img[~valid] = 0
    return FitImage(img.astype(np.uint8), valid, f"frame/{rng.integers(1 << 30)}")


def domains(seed: int = 0, n: int = 3, pad: int = 6) -> tuple[list[FitImage], list[FitImage]]:
    """(source, target): the target is darker and flatter than the source."""
    rng = np.random.default_rng(seed)
    source = [_frame(rng, 130.0, 45.0, pad) for _ in range(n)]
    target = [_frame(rng, 80.0, 18.0, pad) for _ in range(n)]
    return source, target


@pytest.fixture(scope="module")
def fitted_all() -> dict[str, Fitted]:
    source, target = domains()
    return {name: build(name, **opts).fit(source, target) for name, opts in IMAGE_KINDS.items()}


def test_registry_names_every_kind_once() -> None:
    assert set(mitigations.KINDS) == set(IMAGE_KINDS) | {"adabn"}
    assert set(mitigations.FITTED) == set(mitigations.KINDS)
    for name, cls in mitigations.KINDS.items():
        assert cls.name == name and mitigations.FITTED[name].name == name


@pytest.mark.parametrize("name", IMAGE_KINDS)
def test_apply_is_pure_float32_and_keeps_padding(name: str, fitted_all) -> None:
    fitted = fitted_all[name]
    assert isinstance(fitted, Fitted) and isinstance(build(name, **IMAGE_KINDS[name]), Mitigation)
    frame = domains(seed=1)[1][0]
    before = frame.image.copy()
    out = fitted.apply(frame.image, frame.valid)
    assert out.dtype == np.float32 and out.shape == frame.image.shape
    np.testing.assert_array_equal(frame.image, before)
    np.testing.assert_array_equal(out[~frame.valid], frame.image[~frame.valid].astype(np.float32))
    assert np.isfinite(out).all()
    assert not np.allclose(out[frame.valid], frame.image[frame.valid], atol=1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fitted.name = "other"  # type: ignore[misc]
    model = object()
    assert fitted.adapt_model(model) is model


@pytest.mark.parametrize("name", IMAGE_KINDS)
def test_params_rebuild_the_same_function_through_json(name: str, fitted_all) -> None:
    fitted = fitted_all[name]
    text = json.dumps(fitted.params(), allow_nan=False)
    rebuilt = from_params(name, json.loads(text))
    assert type(rebuilt) is type(fitted)
    assert rebuilt.params() == fitted.params() and rebuilt.key() == fitted.key()
    frame = domains(seed=2)[1][1]
    np.testing.assert_array_equal(
        rebuilt.apply(frame.image, frame.valid), fitted.apply(frame.image, frame.valid)
    )


@pytest.mark.parametrize("name", IMAGE_KINDS)
def test_key_is_stable_and_follows_the_fit(name: str, fitted_all) -> None:
    key = fitted_all[name].key()
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    source, target = domains()
    assert build(name, **IMAGE_KINDS[name]).fit(source, target).key() == key
    other_source, _ = domains(seed=5)
    assert build(name, **IMAGE_KINDS[name]).fit(other_source, target).key() != key
    assert mitigations.params_key("another_name", fitted_all[name].params()) != key


def _loud_padding(images: list[FitImage]) -> list[FitImage]:
    return [
        FitImage(np.where(t.valid[..., None], t.image, 255).astype(np.uint8), t.valid)
        for t in images
    ]


def test_fit_and_apply_ignore_padding_pixel_values(fitted_all) -> None:
    source, target = domains()
    loud_source, loud_target = _loud_padding(source), _loud_padding(target)
    for name, opts in IMAGE_KINDS.items():
        fitted = build(name, **opts).fit(loud_source, loud_target)
        assert fitted.key() == fitted_all[name].key(), name
        quiet, loud = target[0], loud_target[0]
        np.testing.assert_array_equal(
            fitted.apply(loud.image, loud.valid)[loud.valid],
            fitted.apply(quiet.image, quiet.valid)[quiet.valid],
        )


def test_check_disjoint_names_the_shared_ids() -> None:
    check_disjoint(["kitti/a.png", "kitti/b.png"], ["kitti/c.png"])
    with pytest.raises(ValueError, match=r"2 shared: kitti/a\.png, kitti/c\.png$") as err:
        check_disjoint(
            ["kitti/c.png", "kitti/a.png", "kitti/b.png"], ["kitti/a.png", "kitti/c.png"]
        )
    assert "\n" not in str(err.value) and "kitti/b.png" not in str(err.value)


def test_fit_image_from_a_prepared_sample() -> None:
    frame = domains()[0][0]
    record = type("Record", (), {"sample_id": "cityscapes/x.png"})()
    sample = type("Prepared", (), {"image": frame.image, "valid": frame.valid, "record": record})()
    item = FitImage.from_prepared(sample)
    assert item.sample_id == "cityscapes/x.png" and item.image is frame.image


def test_pure_kinds_import_neither_torch_nor_code_loader() -> None:
    code = (
        "import sys, numpy as np\n"
        "from domain_gap import mitigations as m\n"
        "img = np.full((8, 8, 3), 9, np.uint8); img[0, 0] = 200; ok = np.ones((8, 8), bool)\n"
        "x = [m.FitImage(img, ok)]\n"
        "for name in ('rgb_normalize', 'histogram_match', 'histogram_match_lab',"
        " 'fourier_amplitude'):\n"
        "    m.from_params(name, m.build(name).fit(x, x).params()).apply(img, ok)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'code_loader'))\n"
        "print(bad[:3]); sys.exit(1 if bad else 0)\n"
    )
    env = {**os.environ, "TL_DISABLE_ANALYTICS": "true"}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _image(shape=(H, W, 3), dtype=np.uint8) -> np.ndarray:
    return np.full(shape, 7, dtype)


def _ok(shape=(H, W)) -> np.ndarray:
    return np.ones(shape, bool)


SOURCE, TARGET = domains(n=1)
FITTED_RGB = build("rgb_normalize").fit(SOURCE, TARGET)
BAD_INPUT = [
    (lambda: FitImage(_image((H, W)), _ok()), "image", "(H, W, 3)"),
    (lambda: FitImage(_image(dtype=np.float32), _ok()), "image", "uint8"),
    (lambda: FitImage(_image(), _ok().astype(np.uint8)), "valid", "bool mask"),
    (lambda: FitImage(_image(), _ok((H, W + 1))), "valid", f"({H}, {W})"),
    (lambda: FitImage(_image(), ~_ok()), "valid", "at least one valid"),
    (lambda: FITTED_RGB.apply(_image(), ~_ok()), "valid", "at least one valid"),
    (lambda: FITTED_RGB.apply(_image(dtype=np.int16), _ok()), "image", "uint8"),
    (lambda: build("rgb_normalize").fit(SOURCE, []), "target", "at least one FitImage"),
    (lambda: build("rgb_normalize").fit(SOURCE[0], TARGET), "source", "sequence of FitImage"),
    (lambda: build("histogram_match").fit([], TARGET), "source", "at least one FitImage"),
    (lambda: build("histogram_match").fit([_image()], TARGET), "source[0]", "FitImage"),
    (lambda: build("histogram_match_lab").fit(SOURCE, []), "target", "at least one"),
    (lambda: build("histogram_match_lab", bins=1), "bins", "integer >= 2"),
    (lambda: build("fourier_amplitude").fit([], TARGET), "source", "at least one FitImage"),
    (lambda: build("fourier_amplitude", beta=0.0), "beta", "(0, 0.5)"),
    (lambda: build("fourier_amplitude", beta=0.5), "beta", "(0, 0.5)"),
    (lambda: build("fourier_amplitude", beta="0.1"), "beta", "(0, 0.5)"),
    (lambda: build("rgb_normalize").fit(SOURCE, [FitImage(_image(), _ok())]), "target", "constant"),
    (lambda: build("no_such_fix"), "name", "rgb_normalize"),
    (lambda: build("fourier_amplitude", alpha=1), "options", "beta"),
    (lambda: from_params("no_such_fix", {}), "name", "expected one of"),
    (lambda: from_params("rgb_normalize", {"lut": []}), "params", "source_mean"),
    (
        lambda: from_params("histogram_match", {"lut": [[0.0] * 256] * 2}),
        "params['lut']",
        "(3, 256)",
    ),
    (
        lambda: from_params("rgb_normalize", {**FITTED_RGB.params(), "target_std": [1, 0, 1]}),
        "params['target_std']",
        "positive",
    ),
    (
        lambda: from_params("histogram_match", {"lut": [[float("nan")] * 256] * 3}),
        "params['lut']",
        "finite",
    ),
]


@pytest.mark.parametrize(("call", "argument", "expected"), BAD_INPUT)
def test_bad_input_is_one_clear_value_error(call, argument: str, expected: str) -> None:
    with pytest.raises(ValueError) as err:
        call()
    message = str(err.value)
    assert message.startswith(f"{argument}: "), message
    assert expected in message and "\n" not in message
