"""fourier_amplitude (FDA): against albumentations' functional (its window convention), against an
independent reference (paper convention, built differently), and its own claims: the fitted
window is the source MEAN amplitude, the output carries it, padding is filled then restored."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check on import

from albumentations.augmentations.mixing.domain_adaptation_functional import (
    fourier_domain_adaptation,
)

from domain_gap.mitigations import FitImage, build, from_params

SIZES = [(64, 128), (63, 101)]


def _image(rng: np.random.Generator, shape: tuple[int, int], loc: float) -> np.ndarray:
    """Structured (stripes + blobs) RGB image with a colour cast, mid-range so clipping is rare."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    phase = rng.uniform(0, 6, 3)
    stripes = 25 * np.sin(xx[..., None] / rng.uniform(3, 8) + phase)
    blobs = 20 * np.cos(yy[..., None] / rng.uniform(4, 10) + phase[::-1])
    img = loc + stripes + blobs + rng.normal(0, 8, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _pair(shape: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return _image(rng, shape, 150.0), _image(rng, shape, 90.0)


def _fit(source: list[np.ndarray], target: np.ndarray, **options) -> object:
    full = np.ones(target.shape[:2], bool)
    return build("fourier_amplitude", **options).fit(
        [FitImage(s, full) for s in source], [FitImage(target, full)]
    )


def _reference_paper_fda(target: np.ndarray, source: np.ndarray, beta: float) -> np.ndarray:
    """Independent FDA: unshifted spectra, window = |signed integer frequency| <= b on both axes."""
    h, w = target.shape[:2]
    b = int(np.floor(beta * min(h, w)))
    fy, fx = np.rint(np.fft.fftfreq(h) * h), np.rint(np.fft.fftfreq(w) * w)
    mask = (np.abs(fy)[:, None] <= b) & (np.abs(fx)[None, :] <= b)
    ft = np.fft.fft2(target.astype(np.float64), axes=(0, 1))
    fs = np.fft.fft2(source.astype(np.float64), axes=(0, 1))
    amplitude = np.where(mask[..., None], np.abs(fs), np.abs(ft))
    return np.fft.ifft2(amplitude * np.exp(1j * np.angle(ft)), axes=(0, 1)).real


@pytest.mark.parametrize("shape", SIZES)
@pytest.mark.parametrize("beta", [0.05, 0.12])
def test_albumentations_window_equals_albumentations_fda(shape, beta: float) -> None:
    source, target = _pair(shape)
    ours = _fit([source], target, beta=beta, window="albumentations").apply(
        target, np.ones(shape, bool)
    )
    # albumentations names the adapted image ``img`` and the style image ``target_img``; on float
    # input it works on 0..1 and clips there.
    theirs = fourier_domain_adaptation(target / 255.0, source / 255.0, beta)
    np.testing.assert_allclose(np.clip(ours / 255.0, 0, 1), theirs, rtol=0, atol=2e-6)
    assert np.abs(ours - target).max() > 5


@pytest.mark.parametrize("shape", SIZES)
@pytest.mark.parametrize("beta", [0.05, 0.12])
def test_paper_window_equals_an_independent_reference(shape, beta: float) -> None:
    source, target = _pair(shape, seed=1)
    ours = _fit([source], target, beta=beta).apply(target, np.ones(shape, bool))
    expected = _reference_paper_fda(target, source, beta)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-3)
    assert np.abs(ours - target).max() > 5


@pytest.mark.parametrize("window", ["paper", "albumentations"])
def test_window_size_follows_beta(window: str) -> None:
    shape, beta = (64, 128), 0.09
    source, target = _pair(shape)
    b = int(np.floor(beta * min(shape)))
    side = 2 * b + 1 if window == "paper" else 2 * b
    amplitude = np.asarray(_fit([source], target, beta=beta, window=window).params()["amplitude"])
    assert amplitude.shape == (3, side, side)


def test_fitted_window_is_the_mean_source_amplitude_and_the_output_carries_it() -> None:
    shape, beta = (64, 128), 0.05
    s1, target = _pair(shape, seed=2)
    s2, _ = _pair(shape, seed=3)
    fitted = _fit([s1, s2], target, beta=beta)
    b = int(np.floor(beta * min(shape)))
    rows = slice(shape[0] // 2 - b, shape[0] // 2 + b + 1)
    cols = slice(shape[1] // 2 - b, shape[1] // 2 + b + 1)

    def amp(img: np.ndarray) -> np.ndarray:
        spectrum = np.fft.fftshift(np.fft.fft2(img.astype(np.float64), axes=(0, 1)), axes=(0, 1))
        return np.moveaxis(np.abs(spectrum), -1, 0)

    mean = (amp(s1)[:, rows, cols] + amp(s2)[:, rows, cols]) / 2
    np.testing.assert_allclose(fitted.params()["amplitude"], mean, rtol=1e-10)
    assert not np.allclose(mean, amp(s1)[:, rows, cols], rtol=1e-3)
    out_amp, target_amp = amp(fitted.apply(target, np.ones(shape, bool))), amp(target)
    np.testing.assert_allclose(out_amp[:, rows, cols], mean, rtol=0, atol=5e-3)
    outside = np.ones(shape, bool)
    outside[rows, cols] = False
    np.testing.assert_allclose(out_amp[:, outside], target_amp[:, outside], rtol=0, atol=5e-3)


def test_default_beta_at_a_small_size_swaps_only_the_mean_colour() -> None:
    # β = 0.01 at 64x128: b = 0, the window is the DC term alone, i.e. the mean colour.
    source_a, target = _pair((64, 128), seed=4)
    source_b, _ = _pair((64, 128), seed=5)
    out = _fit([source_a, source_b], target).apply(target, np.ones((64, 128), bool))
    shift = (source_a.mean(axis=(0, 1)) + source_b.mean(axis=(0, 1))) / 2 - target.mean(axis=(0, 1))
    np.testing.assert_allclose(out, target + shift, rtol=0, atol=1e-3)


def test_padding_is_filled_with_the_mean_colour_then_restored() -> None:
    shape = (64, 128)
    source, target = _pair(shape, seed=6)
    valid = np.ones(shape, bool)
    valid[:10], valid[-10:] = False, False
    padded = np.where(valid[..., None], target, 0).astype(np.uint8)
    fitted = _fit([source], target, beta=0.05)
    out = fitted.apply(padded, valid)
    np.testing.assert_array_equal(out[~valid], padded[~valid])
    filled = padded.astype(np.float64)
    filled[~valid] = filled[valid].mean(axis=0)
    # The same swap on the mean-filled frame (no padding), done by the independent reference.
    expected = _reference_paper_fda(filled, source, 0.05)
    np.testing.assert_allclose(out[valid], expected[valid], rtol=0, atol=1e-3)


def test_params_round_trip_keeps_the_window_convention() -> None:
    source, target = _pair((64, 128))
    fitted = _fit([source], target, beta=0.05, window="albumentations")
    rebuilt = from_params("fourier_amplitude", fitted.params())
    assert rebuilt.window == "albumentations" and rebuilt.key() == fitted.key()
    paper = _fit([source], target, beta=0.05)
    assert paper.key() != fitted.key()


def _frame(shape: tuple[int, int] = (64, 128)) -> FitImage:
    return FitImage(_pair(shape)[0], np.ones(shape, bool))


def _fitted_params() -> dict:
    return build("fourier_amplitude").fit([_frame()], [_frame()]).params()


BAD_INPUT = [
    (lambda: build("fourier_amplitude", window="centre"), "window"),
    (
        lambda: build("fourier_amplitude", window="albumentations").fit([_frame()], [_frame()]),
        "beta",
    ),
    (
        lambda: build("fourier_amplitude").fit([_frame(), _frame((63, 128))], [_frame()]),
        "source[1]",
    ),
    (lambda: build("fourier_amplitude").fit([_frame()], [_frame((64, 120))]), "target[0]"),
    (
        lambda: (
            build("fourier_amplitude")
            .fit([_frame()], [_frame()])
            .apply(_frame((63, 128)).image, np.ones((63, 128), bool))
        ),
        "image",
    ),
    (
        lambda: from_params("fourier_amplitude", {**_fitted_params(), "amplitude": [[[1.0]] * 2]}),
        "params['amplitude']",
    ),
    (
        lambda: from_params("fourier_amplitude", {**_fitted_params(), "width": 12.5}),
        "params['height'/'width']",
    ),
]


@pytest.mark.parametrize(("call", "argument"), BAD_INPUT)
def test_bad_input_is_a_value_error_naming_the_argument(call, argument: str) -> None:
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value).startswith(f"{argument}: ") and "\n" not in str(err.value)
