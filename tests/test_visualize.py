"""Visualizers: colours at known pixels, shapes/dtypes, and inputs never mutated."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from cityscapesscripts.helpers.labels import name2label

from domain_gap import visualize as vis
from domain_gap.labels import IGNORE_INDEX, NAME_TO_TRAIN_ID, NUM_CLASSES

ROAD, CAR, SKY = NAME_TO_TRAIN_ID["road"], NAME_TO_TRAIN_ID["car"], NAME_TO_TRAIN_ID["sky"]


def _labels() -> np.ndarray:
    return np.array([[ROAD, CAR, IGNORE_INDEX], [SKY, ROAD, CAR]], dtype=np.uint8)


def _image(h: int = 2, w: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def test_colorize_uses_cityscapes_colours_and_black_void() -> None:
    labels = _labels()
    before = labels.copy()
    rgb = vis.colorize(labels)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert tuple(rgb[0, 0]) == name2label["road"].color
    assert tuple(rgb[0, 1]) == name2label["car"].color
    assert tuple(rgb[1, 0]) == name2label["sky"].color
    assert tuple(rgb[0, 2]) == (0, 0, 0)
    assert tuple(rgb[0, 2]) != name2label["traffic light"].color
    np.testing.assert_array_equal(labels, before)
    with pytest.raises(ValueError, match=re.escape("[19]")):
        vis.colorize(np.array([[19]], dtype=np.uint8))


def test_overlay_blends_and_respects_where() -> None:
    img, mask = _image(seed=1), _image(seed=2)
    copies = img.copy(), mask.copy()
    np.testing.assert_array_equal(vis.overlay(img, mask, alpha=0.0), img)
    np.testing.assert_array_equal(vis.overlay(img, mask, alpha=1.0), mask)
    half = vis.overlay(img, mask, alpha=0.5)
    assert half.dtype == np.uint8
    expected = (img.astype(np.float64) + mask.astype(np.float64)) / 2
    assert np.abs(half - expected).max() <= 0.5 + 1e-9
    where = _labels() != IGNORE_INDEX
    partial = vis.overlay(img, mask, alpha=1.0, where=where)
    np.testing.assert_array_equal(partial[where], mask[where])
    np.testing.assert_array_equal(partial[~where], img[~where])
    np.testing.assert_array_equal(img, copies[0])
    np.testing.assert_array_equal(mask, copies[1])
    with pytest.raises(ValueError, match="alpha"):
        vis.overlay(img, mask, alpha=1.5)


def test_loss_heatmap_is_dark_at_zero_bright_at_high_and_robust_to_outliers() -> None:
    loss = np.ones((40, 40), dtype=np.float32)
    loss[0, 0] = 0.0  # void
    loss[0, 1] = np.nan
    loss[0, 2] = 0.5
    loss[39, 39] = 1000.0  # a single outlier among 1600 pixels
    before = loss.copy()
    heat = vis.loss_heatmap(loss)
    assert heat.dtype == np.uint8 and heat.shape == (40, 40, 3)
    np.testing.assert_array_equal(heat[0, 0], heat[0, 1])  # NaN shows like void
    assert _luma(heat[0, 0]) < 10  # inferno starts near black
    # The bulk of the losses (1.0) reaches the top of the scale despite the outlier.
    np.testing.assert_array_equal(heat[5, 5], heat[39, 39])
    assert _luma(heat[0, 0]) < _luma(heat[0, 2]) < _luma(heat[5, 5])
    np.testing.assert_array_equal(loss, before)
    # A fixed scale compares samples: the same loss gives the same colour.
    np.testing.assert_array_equal(
        vis.loss_heatmap(np.full((2, 2), 2.0), vmax=4.0)[0, 0],
        vis.loss_heatmap(np.array([[2.0, 4.0]]), vmax=4.0)[0, 0],
    )


def test_error_map_colours_correct_wrong_and_void() -> None:
    labels = _labels()
    pred = np.array([[ROAD, ROAD, CAR], [SKY, CAR, CAR]], dtype=np.uint8)
    copies = labels.copy(), pred.copy()
    out = vis.error_map(pred, labels)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    correct, wrong = tuple(vis.CORRECT_COLOR), tuple(vis.WRONG_COLOR)
    assert len({correct, wrong, (0, 0, 0)}) == 3
    assert tuple(out[0, 0]) == correct and tuple(out[1, 0]) == correct
    assert tuple(out[1, 2]) == correct
    assert tuple(out[0, 1]) == wrong and tuple(out[1, 1]) == wrong
    assert tuple(out[0, 2]) == (0, 0, 0)  # void, whatever was predicted
    np.testing.assert_array_equal(labels, copies[0])
    np.testing.assert_array_equal(pred, copies[1])


def test_heatmap_overlay_resizes_and_uses_blue_to_red() -> None:
    img = np.zeros((8, 12, 3), dtype=np.uint8)
    heat = np.array([[0.0, 1.0]], dtype=np.float32)  # feature resolution, left cold, right hot
    copies = img.copy(), heat.copy()
    out = vis.heatmap_overlay(img, heat, alpha=1.0)
    assert out.dtype == np.uint8 and out.shape == (8, 12, 3)
    cold, hot = out[4, 0].astype(int), out[4, -1].astype(int)
    assert cold[2] > cold[0]  # jet: low = blue
    assert hot[0] > hot[2]  # high = red
    np.testing.assert_array_equal(vis.heatmap_overlay(img, heat, alpha=0.0), img)
    np.testing.assert_array_equal(img, copies[0])
    np.testing.assert_array_equal(heat, copies[1])


def test_mask_for_leap_maps_void_to_its_own_label() -> None:
    labels = _labels()
    before = labels.copy()
    mask = vis.mask_for_leap(labels)
    assert mask.dtype == np.uint8
    assert mask[0, 2] == vis.LEAP_VOID_INDEX == NUM_CLASSES
    assert vis.LEAP_MASK_LABELS[mask[0, 2]] == "void"
    assert vis.LEAP_MASK_LABELS[mask[0, 0]] == "road"
    np.testing.assert_array_equal(mask[labels != IGNORE_INDEX], labels[labels != IGNORE_INDEX])
    np.testing.assert_array_equal(labels, before)
    assert len(vis.LEAP_MASK_LABELS) == NUM_CLASSES + 1


def test_leap_image_mask_accepts_our_mask_and_labels() -> None:
    # `domain_gap` is already imported above, so TL_DISABLE_ANALYTICS is set.
    from code_loader.contract.visualizer_classes import LeapImageMask

    mask = vis.mask_for_leap(_labels())
    LeapImageMask(mask=mask, image=_image(), labels=vis.LEAP_MASK_LABELS)


def test_pure_modules_import_neither_torch_nor_code_loader() -> None:
    code = (
        "import sys\n"
        "import domain_gap.encoders, domain_gap.metrics\n"
        "import domain_gap.metadata, domain_gap.visualize\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'code_loader'))\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_to_uint8_scales_unit_floats_and_copies_uint8() -> None:
    raw = np.array([[[0.0, 0.5, 1.0], [1.5, -0.2, np.nan]]], dtype=np.float32)
    before = raw.copy()
    out = vis.to_uint8(raw)
    assert out.dtype == np.uint8 and out.shape == raw.shape
    np.testing.assert_array_equal(out, [[[0, 128, 255], [255, 0, 0]]])
    np.testing.assert_array_equal(raw, before)
    img = _image()
    copy = vis.to_uint8(img)
    np.testing.assert_array_equal(copy, img)
    assert copy is not img and not np.shares_memory(copy, img)
    with pytest.raises(ValueError, match="dtype"):
        vis.to_uint8(np.zeros((2, 2, 3), dtype=np.int32))
