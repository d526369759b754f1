"""domain_gap.metadata against hand-computed values and independent references."""

from __future__ import annotations

import json
import math
import re

import cv2
import numpy as np
import pytest
from scipy import ndimage

from domain_gap import metadata as md
from domain_gap.labels import CLASS_NAMES, IGNORE_INDEX, NAME_TO_TRAIN_ID, NUM_CLASSES


def _const(rgb: tuple[int, int, int], h: int = 6, w: int = 8) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (h, w, 3)).copy()


def _pad(content: np.ndarray, top: int, left: int, h: int, w: int, fill: int) -> np.ndarray:
    out = np.full((h, w, *content.shape[2:]), fill, dtype=content.dtype)
    out[top : top + content.shape[0], left : left + content.shape[1]] = content
    return out


def test_constant_image_statistics() -> None:
    stats = md.image_metadata(_const((10, 100, 200)))
    assert set(stats) == set(md.IMAGE_KEYS)
    assert (stats["mean_r"], stats["mean_g"], stats["mean_b"]) == (10.0, 100.0, 200.0)
    assert stats["std_r"] == stats["std_g"] == stats["std_b"] == 0.0
    assert stats["brightness"] == pytest.approx(0.299 * 10 + 0.587 * 100 + 0.114 * 200)
    assert stats["contrast_rms"] == pytest.approx(0.0, abs=1e-12)
    assert stats["saturation"] == pytest.approx((200 - 10) / 200)
    assert stats["sharpness"] == pytest.approx(0.0, abs=1e-12)
    assert stats["entropy"] == 0.0
    # Hasler-Suesstrunk: no spread, so only 0.3 * |mean opponent colour| remains.
    assert stats["colorfulness"] == pytest.approx(0.3 * math.hypot(10 - 100, 55 - 200))
    assert stats["dark_fraction"] == 0.0 and stats["bright_fraction"] == 0.0
    assert stats["pad_fraction"] == 0.0
    black = md.image_metadata(_const((0, 0, 0)))
    assert black["saturation"] == 0.0 and black["dark_fraction"] == 1.0


def test_two_colour_image_statistics() -> None:
    img = _const((0, 0, 0), h=4, w=6)
    img[2:] = 255  # top half black, bottom half white
    stats = md.image_metadata(img)
    assert stats["brightness"] == pytest.approx(127.5)
    assert stats["std_r"] == pytest.approx(127.5)
    assert stats["contrast_rms"] == pytest.approx(0.5)
    assert stats["entropy"] == pytest.approx(1.0)
    assert stats["dark_fraction"] == 0.5 and stats["bright_fraction"] == 0.5
    assert stats["brightness_top"] == pytest.approx(0.0)
    assert stats["brightness_bottom"] == pytest.approx(255.0)
    assert stats["saturation"] == 0.0
    assert stats["colorfulness"] == pytest.approx(0.0, abs=1e-12)  # grey levels have no colour


def test_sharpness_matches_scipy_laplace_on_a_checkerboard() -> None:
    yy, xx = np.mgrid[:16, :20]
    board = np.where((yy // 2 + xx // 2) % 2 == 0, 30, 220).astype(np.uint8)
    img = np.repeat(board[..., None], 3, axis=2)
    luma = img[..., 0].astype(np.float64)  # grey: luma equals each channel
    expected = ndimage.laplace(luma)[1:-1, 1:-1].var()
    assert expected > 0
    assert md.image_metadata(img)["sharpness"] == pytest.approx(expected, rel=1e-9)


def test_sharpness_matches_scipy_laplace_on_a_colour_image() -> None:
    img = np.random.default_rng(0).integers(0, 256, size=(12, 15, 3), dtype=np.uint8)
    luma = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    expected = ndimage.laplace(luma)[1:-1, 1:-1].var()
    assert md.image_metadata(img)["sharpness"] == pytest.approx(expected, rel=1e-9)


def test_saturation_matches_opencv_hsv() -> None:
    img = np.random.default_rng(1).integers(0, 256, size=(10, 10, 3), dtype=np.uint8)
    s = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)[..., 1].astype(np.float64) / 255.0
    assert md.image_metadata(img)["saturation"] == pytest.approx(s.mean(), abs=1 / 255)


def test_padding_is_excluded_from_every_image_statistic() -> None:
    rng = np.random.default_rng(2)
    content = rng.integers(0, 256, size=(10, 14, 3), dtype=np.uint8)
    padded = _pad(content, top=3, left=5, h=18, w=24, fill=0)
    valid = _pad(np.ones((10, 14), bool), top=3, left=5, h=18, w=24, fill=0)
    alone = md.image_metadata(content)
    with_pad = md.image_metadata(padded, valid)
    for key in md.IMAGE_KEYS:
        if key == "pad_fraction":
            assert with_pad[key] == pytest.approx(1 - (10 * 14) / (18 * 24))
        else:
            assert with_pad[key] == pytest.approx(alone[key], rel=1e-12, abs=1e-12), key
    # A different padding colour changes nothing either.
    white_pad = md.image_metadata(_pad(content, 3, 5, 18, 24, fill=255), valid)
    assert white_pad == with_pad


def test_no_valid_pixel_gives_nan_statistics() -> None:
    stats = md.image_metadata(_const((5, 5, 5)), np.zeros((6, 8), bool))
    assert stats["pad_fraction"] == 1.0
    assert all(math.isnan(v) for k, v in stats.items() if k != "pad_fraction")


def test_class_fractions_on_a_hand_made_label_exclude_padding() -> None:
    road, car = NAME_TO_TRAIN_ID["road"], NAME_TO_TRAIN_ID["car"]
    label = np.array(
        [
            [road, road, car, IGNORE_INDEX],
            [road, road, 18, IGNORE_INDEX],
            [IGNORE_INDEX] * 4,  # padding row
        ],
        dtype=np.uint8,
    )
    valid = np.ones(label.shape, bool)
    valid[2] = False
    frac = md.label_metadata(label, valid)
    assert list(frac) == list(md.LABEL_KEYS)
    assert frac["frac_road"] == pytest.approx(4 / 8)
    assert frac["frac_car"] == pytest.approx(1 / 8)
    assert frac[f"frac_{CLASS_NAMES[18].replace(' ', '_')}"] == pytest.approx(1 / 8)
    assert frac["frac_void"] == pytest.approx(2 / 8)
    assert frac["frac_traffic_light"] == 0.0  # void is not a class
    assert frac["num_classes_present"] == 3.0
    assert sum(v for k, v in frac.items() if k.startswith("frac_")) == pytest.approx(1.0)


def test_unlabeled_sample_has_the_same_keys_all_nan() -> None:
    frac = md.label_metadata(None, None)
    assert list(frac) == list(md.LABEL_KEYS)
    assert len(frac) == NUM_CLASSES + 2
    assert all(math.isnan(v) for v in frac.values())


def test_vehicle_fields_are_snake_case_and_never_invented() -> None:
    vehicle = {"speed": 12.5, "yawRate": -0.1, "outsideTemperature": 21, "gps heading": 90.0}
    out = md.vehicle_metadata(vehicle)
    assert out == {
        "vehicle_speed": 12.5,
        "vehicle_yaw_rate": -0.1,
        "vehicle_outside_temperature": 21.0,
        "vehicle_gps_heading": 90.0,
    }
    assert md.vehicle_metadata({}) == {}
    assert md.vehicle_metadata(None) == {}
    fixed = md.vehicle_metadata({"speed": 3.0}, keys=["speed", "yawRate"])
    assert list(fixed) == ["vehicle_speed", "vehicle_yaw_rate"]
    assert fixed["vehicle_speed"] == 3.0 and math.isnan(fixed["vehicle_yaw_rate"])
    with pytest.raises(ValueError, match="'speed'"):
        md.vehicle_metadata({"speed": "fast"})


def test_compute_metadata_keys_types_and_no_mutation() -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(8, 12, 3), dtype=np.uint8)
    label = rng.integers(0, NUM_CLASSES, size=(8, 12)).astype(np.uint8)
    valid = np.ones((8, 12), bool)
    valid[:, :2] = False
    copies = (image.copy(), label.copy(), valid.copy())
    vehicle = {"speed": 4.0, "yawRate": 0.5}
    out = md.compute_metadata(
        image,
        label,
        valid,
        domain="cityscapes",
        group="aachen",
        file_name="aachen_000000_000019_leftImg8bit.png",
        orig_hw=(1024, 2048),
        vehicle=vehicle,
    )
    assert list(out) == md.metadata_keys(vehicle)
    assert out["domain"] == "cityscapes" and out["group"] == "aachen"
    assert out["aspect_ratio"] == 2.0 and out["orig_height"] == 1024.0
    assert all(type(v) in (float, str) for v in out.values())
    json.dumps(out)
    assert out["pad_fraction"] == pytest.approx(2 / 12)
    for before, after in zip(copies, (image, label, valid), strict=True):
        np.testing.assert_array_equal(before, after)

    unlabeled = md.compute_metadata(
        image, None, valid, domain="kitti", group="0001", file_name="x.png", orig_hw=(375, 1242)
    )
    assert list(unlabeled) == md.metadata_keys()
    assert math.isnan(unlabeled["frac_road"])
    assert not any(k.startswith("vehicle_") for k in unlabeled)

    fixed = md.compute_metadata(
        image,
        None,
        valid,
        domain="kitti",
        group="0001",
        file_name="x.png",
        orig_hw=(375, 1242),
        vehicle={"speed": 7.0},
        vehicle_keys=["speed", "yawRate"],
    )
    assert list(fixed) == md.metadata_keys(["speed", "yawRate"])
    assert fixed["vehicle_speed"] == 7.0 and math.isnan(fixed["vehicle_yaw_rate"])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: md.image_metadata(np.zeros((4, 4), np.uint8)), "image"),
        (lambda: md.image_metadata(_const((1, 1, 1)), np.ones((6, 8))), "valid"),
        (lambda: md.label_metadata(np.full((2, 2), 19, np.uint8)), "[19]"),
        (
            lambda: md.compute_metadata(
                _const((1, 1, 1)),
                np.zeros((3, 3), np.uint8),
                None,
                domain="d",
                group="g",
                file_name="f",
                orig_hw=(6, 8),
            ),
            "label: shape",
        ),
    ],
)
def test_bad_input_raises_a_clear_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_padded_and_ragged_masks_read_the_same_pixels_as_a_boolean_gather() -> None:
    rng = np.random.default_rng(11)
    img = rng.integers(0, 256, (40, 64, 3)).astype(np.uint8)
    band = np.zeros((40, 64), bool)
    band[6:31, 3:60] = True  # letterbox padding: the fast slice path
    ragged = band.copy()
    ragged[10, 10] = False  # a hole: the boolean gather
    for mask, is_box in ((band, True), (ragged, False)):
        box = md._valid_box(mask)
        assert (box is not None) == is_box
        meta = md.image_metadata(img, mask)
        px = img[mask].astype(np.float64)
        luma = px @ np.array([0.299, 0.587, 0.114])
        assert meta["mean_g"] == pytest.approx(px[:, 1].mean(), rel=1e-12)
        assert meta["std_b"] == pytest.approx(px[:, 2].std(), rel=1e-12)
        assert meta["brightness"] == pytest.approx(luma.mean(), rel=1e-12)
        assert meta["pad_fraction"] == pytest.approx(1 - mask.mean(), rel=1e-12)
