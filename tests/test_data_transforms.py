"""resize_pair: shapes, aspect, padding void, centring, and interpolation against references."""

from __future__ import annotations

import numpy as np
import pytest

from domain_gap.data.transforms import resize_pair


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _label(h: int, w: int, values=(0, 7, 13, 18), seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.asarray(values, np.uint8)[rng.integers(0, len(values), (h, w))]


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


@pytest.mark.parametrize("policy", ["pad", "crop", "stretch"])
@pytest.mark.parametrize(("h", "w"), [(188, 621), (256, 512), (375, 1242), (100, 90)])
def test_output_shapes_and_types(policy: str, h: int, w: int) -> None:
    img, lab, valid = resize_pair(_image(h, w), _label(h, w), 128, 256, policy)
    assert img.shape == (128, 256, 3) and img.dtype == np.uint8
    assert lab.shape == (128, 256) and lab.dtype == np.uint8
    assert valid.shape == (128, 256) and valid.dtype == bool


def test_pad_keeps_aspect_centres_and_pads_void() -> None:
    src = np.full((188, 621, 3), 200, np.uint8)  # KITTI-like 3.3:1 into 2:1
    img, lab, valid = resize_pair(src, np.full((188, 621), 7, np.uint8), 256, 512, "pad")
    y0, y1, x0, x1 = _bbox(valid)
    assert (x0, x1) == (0, 512)
    assert abs((x1 - x0) / (y1 - y0) - 621 / 188) < 0.03
    assert abs(y0 - (256 - y1)) <= 1  # centred
    assert (img[~valid] == 0).all() and (lab[~valid] == 255).all()
    assert (lab[valid] == 7).all() and (img[valid] == 200).all()


def test_pad_taller_image_pads_left_and_right() -> None:
    img, lab, valid = resize_pair(_image(300, 200), _label(300, 200), 128, 256, "pad")
    y0, y1, x0, x1 = _bbox(valid)
    assert (y0, y1) == (0, 128)
    assert abs(x0 - (256 - x1)) <= 1 and abs((x1 - x0) - 128 * 200 / 300) <= 1
    assert (lab[:, :x0] == 255).all() and (img[:, x1:] == 0).all()


def test_crop_fills_keeps_aspect_and_centres() -> None:
    # A 1:4 stripe pattern: after a centre crop the middle column must be the source middle.
    src = np.zeros((100, 400, 3), np.uint8)
    src[:, 195:205] = 255
    lab = np.zeros((100, 400), np.uint8)
    lab[:, 195:205] = 26
    img, out_lab, valid = resize_pair(src, lab, 128, 256, "crop")
    assert valid.all()
    cols = np.nonzero(out_lab[0] == 26)[0]
    assert abs((cols.min() + cols.max()) / 2 - 127.5) <= 1.0
    # Scale 1.28 on both axes (aspect kept): the 10-px stripe becomes ~13 px wide.
    assert abs(len(cols) - 12.8) <= 1.0
    assert set(np.unique(out_lab)) <= {0, 26}
    assert img[0, cols, 0].min() > 150 and img[0, : cols.min() - 2, 0].max() == 0


def test_stretch_scales_axes_independently() -> None:
    lab = np.zeros((100, 400), np.uint8)
    lab[:50] = 11
    _, out, valid = resize_pair(_image(100, 400), lab, 128, 256, "stretch")
    assert valid.all()
    assert (out[:64] == 11).all() and (out[64:] == 0).all()


def test_area_downscale_matches_block_mean_and_labels_take_block_centres() -> None:
    img = _image(90, 180)
    lab = _label(90, 180)
    out_img, out_lab, _ = resize_pair(img, lab, 30, 60, "stretch")
    block_mean = img.reshape(30, 3, 60, 3, 3).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(out_img.astype(np.float64) - block_mean).max() <= 1.0
    np.testing.assert_array_equal(out_lab, lab[1::3, 1::3])


def test_upscale_labels_repeat_and_images_interpolate() -> None:
    lab = _label(20, 40)
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, 20:] = 200
    out_img, out_lab, _ = resize_pair(img, lab, 40, 80, "stretch")
    np.testing.assert_array_equal(out_lab, np.repeat(np.repeat(lab, 2, 0), 2, 1))
    # Bilinear: the step gets an intermediate value, area would not blur an upscale.
    row = out_img[0, :, 0]
    assert row[0] == 0 and row[-1] == 200
    assert 0 < row[39] < 200 or 0 < row[40] < 200


@pytest.mark.parametrize("policy", ["pad", "crop", "stretch"])
def test_no_new_label_values(policy: str) -> None:
    lab = _label(187, 619, values=(0, 1, 7, 21, 26))
    _, out, _ = resize_pair(_image(187, 619), lab, 128, 256, policy)
    assert set(np.unique(out)) <= {0, 1, 7, 21, 26, 255}


def test_no_label_and_inputs_untouched() -> None:
    img = _image(50, 60)
    before = img.copy()
    out_img, out_lab, valid = resize_pair(img, None, 64, 64, "pad")
    assert out_lab is None and out_img.shape == (64, 64, 3) and valid.any()
    np.testing.assert_array_equal(img, before)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="policy"):
        resize_pair(_image(10, 10), None, 8, 8, "squash")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="label"):
        resize_pair(_image(10, 10), _label(10, 11), 8, 8, "pad")
    with pytest.raises(ValueError, match="image"):
        resize_pair(np.zeros((10, 10), np.uint8), None, 8, 8, "pad")
