"""rgb_normalize, histogram_match and histogram_match_lab do what they claim, checked against
statistics recomputed here from the raw pixels and against scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import rgb2lab
from skimage.exposure import match_histograms

from domain_gap.mitigations import FitImage, build
from domain_gap.mitigations.histogram_match_lab import LAB_RANGES, lab_to_rgb, rgb_to_lab

H, W = 64, 128


def _frames(seed: int, n: int, loc: tuple[float, ...], scale: float, pad: int) -> list[FitImage]:
    """Gaussian colour noise around ``loc`` (clipped to uint8), ``pad`` void rows top/bottom."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = np.clip(rng.normal(loc, scale, (H, W, 3)), 0, 255).astype(np.uint8)
        valid = np.ones((H, W), bool)
        valid[: pad + i], valid[H - pad :] = False, False
        img[~valid] = 0
        out.append(FitImage(img, valid, f"d{seed}/{i}"))
    return out


SOURCE = _frames(0, 3, (140.0, 120.0, 100.0), 60.0, pad=4)
TARGET = _frames(1, 3, (70.0, 90.0, 60.0), 15.0, pad=8)


def _pooled(images: list[np.ndarray], valids: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([img[v] for img, v in zip(images, valids, strict=True)]).astype(float)


def test_rgb_normalize_gives_the_target_the_source_moments() -> None:
    fitted = build("rgb_normalize").fit(SOURCE, TARGET)
    outs = [fitted.apply(t.image, t.valid) for t in TARGET]
    src = _pooled([s.image for s in SOURCE], [s.valid for s in SOURCE])
    got = _pooled(outs, [t.valid for t in TARGET])
    np.testing.assert_allclose(got.mean(axis=0), src.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(got.std(axis=0), src.std(axis=0), rtol=1e-6)
    for t, out in zip(TARGET, outs, strict=True):
        np.testing.assert_array_equal(out[~t.valid], t.image[~t.valid])
    # Not clipped: a flat target stretched to the wide source leaves 0..255.
    assert min(o.min() for o in outs) < 0 and max(o.max() for o in outs) > 255


def _cdf_at_values(pixels: np.ndarray) -> np.ndarray:
    """P(X <= v) for v = 0..255, per channel, of float pixels ``(N, 3)``."""
    values = np.arange(256.0)
    return (
        np.stack([np.searchsorted(np.sort(pixels[:, c]), values, side="right") for c in range(3)])
        / pixels.shape[0]
    )


def test_histogram_match_gives_the_target_the_source_cdf() -> None:
    fitted = build("histogram_match").fit(SOURCE, TARGET)
    outs = [fitted.apply(t.image, t.valid) for t in TARGET]
    matched = _pooled(outs, [t.valid for t in TARGET])
    source = _pooled([s.image for s in SOURCE], [s.valid for s in SOURCE])
    target = _pooled([t.image for t in TARGET], [t.valid for t in TARGET])
    gap = np.abs(_cdf_at_values(matched) - _cdf_at_values(source)).max(axis=1)
    # Discretisation: a target bin maps as a whole, so the CDFs differ by at most its mass.
    bin_mass = np.stack([np.bincount(target[:, c].astype(int), minlength=256) for c in range(3)])
    bound = bin_mass.max(axis=1) / target.shape[0]
    assert (gap <= bound + 1e-12).all(), (gap, bound)
    before = np.abs(_cdf_at_values(target) - _cdf_at_values(source)).max(axis=1)
    assert (before > 10 * bound).all()
    assert (np.diff(np.asarray(fitted.params()["lut"]), axis=1) >= 0).all()


def test_histogram_match_equals_skimage_on_one_pair() -> None:
    image, reference = TARGET[0].image, SOURCE[0].image
    full = np.ones((H, W), bool)
    fitted = build("histogram_match").fit([FitImage(reference, full)], [FitImage(image, full)])
    ours = fitted.apply(image, full).astype(np.float64)
    # skimage on float input keeps its interpolated values: the same mapping, float32 rounding.
    exact = match_histograms(
        image.astype(np.float64), reference.astype(np.float64), channel_axis=-1
    )
    np.testing.assert_allclose(ours, exact, rtol=0, atol=1e-4)
    # On uint8 input skimage truncates the same values into uint8.
    truncated = match_histograms(image, reference, channel_axis=-1).astype(np.float64)
    assert ((ours - truncated) > -1e-4).all() and ((ours - truncated) < 1 + 1e-4).all()


def _lab_cdf(pixels_lab: np.ndarray, bins: int) -> np.ndarray:
    """Empirical CDF at the fixed bin edges, recomputed with np.histogram."""
    rows = []
    for c, (lo, hi) in enumerate(LAB_RANGES):
        counts, _ = np.histogram(pixels_lab[:, c], bins=np.linspace(lo, hi, bins + 1))
        rows.append(np.concatenate([[0.0], np.cumsum(counts) / pixels_lab.shape[0]]))
    return np.stack(rows)


def _lab_pixels(images: list[FitImage]) -> np.ndarray:
    """Pooled valid pixels in CIE LAB, converted here with skimage directly."""
    rgb = _pooled([x.image for x in images], [x.valid for x in images])
    return rgb2lab(rgb.reshape(-1, 1, 3) / 255.0).reshape(-1, 3)


def test_histogram_match_lab_gives_the_target_the_source_lab_cdf() -> None:
    bins = 256
    fitted = build("histogram_match_lab", bins=bins).fit(SOURCE, TARGET)
    source_lab, target_lab = _lab_pixels(SOURCE), _lab_pixels(TARGET)
    source_cdf = _lab_cdf(source_lab, bins)
    np.testing.assert_allclose(fitted.params()["source_cdf"], source_cdf, atol=1e-12)
    matched = fitted.match_lab(target_lab)
    gap = np.abs(_lab_cdf(matched, bins) - source_cdf).max(axis=1)
    bound = np.diff(_lab_cdf(target_lab, bins), axis=1).max(axis=1)
    assert (gap <= bound + 1e-12).all(), (gap, bound)
    assert (np.abs(_lab_cdf(target_lab, bins) - source_cdf).max(axis=1) > 3 * bound).all()
    for t in TARGET:
        out = fitted.apply(t.image, t.valid)
        assert out.min() >= 0 and out.max() <= 255
        np.testing.assert_array_equal(out[~t.valid], t.image[~t.valid])
    # The whole apply path (RGB → LAB → match → RGB) moves the target's lightness to the source's.
    outs = [fitted.apply(t.image, t.valid) for t in TARGET]
    rgb_out = _pooled(outs, [t.valid for t in TARGET]).reshape(-1, 1, 3) / 255.0
    l_out = rgb2lab(rgb_out).reshape(-1, 3)[:, 0].mean()
    assert abs(l_out - source_lab[:, 0].mean()) < 0.1 * abs(
        target_lab[:, 0].mean() - source_lab[:, 0].mean()
    )


@pytest.mark.parametrize("name", ["histogram_match", "histogram_match_lab"])
def test_matching_a_domain_to_itself_is_the_identity(name: str) -> None:
    fitted = build(name).fit(SOURCE, SOURCE)
    for s in SOURCE:
        out = fitted.apply(s.image, s.valid)
        np.testing.assert_allclose(out, s.image, rtol=0, atol=1e-3)


def test_lab_conversion_is_skimage_s_fits_the_fixed_ranges_and_round_trips() -> None:
    pixels = SOURCE[0].image.reshape(-1, 3)
    lab = rgb_to_lab(pixels)
    np.testing.assert_allclose(lab, rgb2lab(pixels.reshape(-1, 1, 3) / 255.0).reshape(-1, 3))
    np.testing.assert_allclose(lab_to_rgb(lab), pixels, rtol=0, atol=1e-3)
    low = np.asarray(LAB_RANGES)[:, 0]
    high = np.asarray(LAB_RANGES)[:, 1]
    assert (lab >= low).all() and (lab <= high).all()
