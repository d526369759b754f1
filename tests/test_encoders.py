"""Contracts of domain_gap.encoders."""

from __future__ import annotations

import re

import numpy as np
import pytest

from domain_gap import encoders
from domain_gap.labels import IGNORE_INDEX, NUM_CLASSES

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _image(seed: int = 0, h: int = 5, w: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_normalize_image_matches_the_formula_channel_first() -> None:
    img = _image()
    before = img.copy()
    x = encoders.normalize_image(img, MEAN, STD)
    assert x.dtype == np.float32 and x.shape == (3, 5, 7)
    assert x.flags["C_CONTIGUOUS"]
    for c in range(3):
        expected = (img[..., c] / 255.0 - MEAN[c]) / STD[c]
        np.testing.assert_allclose(x[c], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(img, before)


def test_uint8_table_path_is_bitwise_the_float_formula_on_every_level() -> None:
    """uint8 images go through a 256-entry table; float images through the arithmetic."""
    levels = np.arange(256, dtype=np.uint8)
    img = np.stack([np.roll(levels, k) for k in range(3)], axis=-1).reshape(16, 16, 3)
    table = encoders.normalize_image(img, MEAN, STD)
    formula = encoders.normalize_image(img.astype(np.float32), MEAN, STD)
    np.testing.assert_array_equal(table, formula)
    assert table.dtype == formula.dtype == np.float32


def test_normalize_image_takes_strided_views_and_empty_images() -> None:
    """A cropped or flipped view (not contiguous) normalises as its copy; no pixel, no value."""
    img = _image(3, h=9, w=11)
    for view in (img[1:8, 2:9], img[:, ::-1], img[::2, ::3]):
        np.testing.assert_array_equal(
            encoders.normalize_image(view, MEAN, STD),
            encoders.normalize_image(np.ascontiguousarray(view), MEAN, STD),
        )
    assert encoders.normalize_image(img[:0], MEAN, STD).shape == (3, 0, 11)


def test_normalize_image_batch_equals_per_sample() -> None:
    batch = np.stack([_image(1), _image(2)])
    x = encoders.normalize_image(batch, MEAN, STD)
    assert x.shape == (2, 3, 5, 7)
    for b in range(2):
        np.testing.assert_array_equal(x[b], encoders.normalize_image(batch[b], MEAN, STD))


def test_denormalize_inverts_normalize_exactly() -> None:
    img = _image(3)
    x = encoders.normalize_image(img, MEAN, STD)
    back = encoders.denormalize_image(x, MEAN, STD)
    assert back.dtype == np.uint8 and back.shape == img.shape
    np.testing.assert_array_equal(back, img)
    # Values outside the image range are clipped, not wrapped.
    assert encoders.denormalize_image(np.full((3, 1, 1), 100.0), MEAN, STD).max() == 255
    assert encoders.denormalize_image(np.full((3, 1, 1), -100.0), MEAN, STD).min() == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalize_image_takes_float_on_the_0_255_scale(dtype: type) -> None:
    img = _image(5)
    exact = img.astype(dtype)
    np.testing.assert_array_equal(
        encoders.normalize_image(exact, MEAN, STD), encoders.normalize_image(img, MEAN, STD)
    )
    # Off-grid and out-of-range values (a mitigated image) follow the same formula, unclipped.
    mitigated = (img.astype(np.float64) * 0.9 + 0.3).astype(dtype)
    mitigated[0, 0] = (-12.5, 300.0, 127.75)
    x = encoders.normalize_image(mitigated, MEAN, STD)
    assert x.dtype == np.float32 and x.shape == (3, 5, 7)
    for c in range(3):
        expected = (mitigated[..., c].astype(np.float64) / 255.0 - MEAN[c]) / STD[c]
        np.testing.assert_allclose(x[c], expected, rtol=1e-5, atol=1e-5)


def test_raw_image_scales_to_unit_range() -> None:
    img = np.array([[[0, 128, 255]]], dtype=np.uint8)
    raw = encoders.raw_image(img)
    assert raw.dtype == np.float32 and raw.shape == (1, 1, 3)
    np.testing.assert_allclose(raw[0, 0], [0.0, 128 / 255, 1.0], rtol=1e-6)


def test_one_hot_has_one_channel_per_class_and_void_all_zero() -> None:
    label = np.array([[0, 5, 18], [IGNORE_INDEX, 5, 1]], dtype=np.uint8)
    before = label.copy()
    oh = encoders.one_hot(label)
    assert oh.dtype == np.float32 and oh.shape == (NUM_CLASSES, 2, 3)
    assert oh[0, 0, 0] == 1 and oh[5, 0, 1] == 1 and oh[18, 0, 2] == 1 and oh[1, 1, 2] == 1
    assert oh[:, 1, 0].sum() == 0
    np.testing.assert_array_equal(oh.sum(axis=0), (label != IGNORE_INDEX).astype(np.float32))
    np.testing.assert_array_equal(label, before)


def test_one_hot_round_trips_through_labels_from_one_hot() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, NUM_CLASSES, size=(3, 6, 8)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.3] = IGNORE_INDEX
    for b in range(3):
        back = encoders.labels_from_one_hot(encoders.one_hot(labels[b]))
        assert back.dtype == np.uint8
        np.testing.assert_array_equal(back, labels[b])
    batch = encoders.one_hot(labels)
    assert batch.shape == (3, NUM_CLASSES, 6, 8)
    np.testing.assert_array_equal(encoders.labels_from_one_hot(batch), labels)


def test_labels_from_one_hot_takes_argmax_of_soft_scores() -> None:
    scores = np.zeros((NUM_CLASSES, 1, 2), dtype=np.float32)
    scores[3, 0, 0], scores[4, 0, 0] = 0.2, 0.7
    np.testing.assert_array_equal(encoders.labels_from_one_hot(scores), [[4, IGNORE_INDEX]])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: encoders.one_hot(np.array([[19]], dtype=np.uint8)), "[19]"),
        (lambda: encoders.one_hot(np.array([[3.0]])), "integer"),
        (lambda: encoders.normalize_image(np.zeros((4, 4), np.uint8), MEAN, STD), "(H, W, 3)"),
        (lambda: encoders.normalize_image(np.zeros((4, 4, 3), np.int32), MEAN, STD), "uint8"),
        (lambda: encoders.normalize_image(np.zeros((4, 4, 3), np.float16), MEAN, STD), "float32"),
        (lambda: encoders.normalize_image(np.full((1, 1, 3), np.nan), MEAN, STD), "finite"),
        (lambda: encoders.raw_image(np.zeros((4, 4, 3), np.float32)), "uint8"),
        (lambda: encoders.normalize_image(_image(), (0.5, 0.5), STD), "mean"),
        (lambda: encoders.normalize_image(_image(), MEAN, (1.0, 0.0, 1.0)), "std"),
        (lambda: encoders.labels_from_one_hot(np.zeros((4, 4))), "(C, H, W)"),
    ],
)
def test_bad_input_raises_a_clear_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        call()
