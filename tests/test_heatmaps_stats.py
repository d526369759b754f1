"""domain_gap.heatmaps.stats: the attention statistics equal hand-computed values on small
synthetic maps, and padding never receives attention mass."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from domain_gap.heatmaps.stats import (
    STAT_NAMES,
    class_stats,
    grid_entropy,
    image_stats,
    ring_mask,
    to_grid,
)


def blob() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """20x40 image: a 4x4 object (value 1), its 1-px side ring (0.5), one far pixel (0.25)."""
    mask = np.zeros((20, 40), bool)
    mask[8:12, 18:22] = True
    cam = np.zeros((20, 40))
    cam[mask] = 1.0
    cam[7, 18:22] = cam[12, 18:22] = cam[8:12, 17] = cam[8:12, 22] = 0.5
    cam[0, 0] = 0.25
    return cam, mask, np.ones((20, 40), bool)


def test_statistics_equal_hand_computed_values() -> None:
    cam, mask, valid = blob()
    # ring = 0.05 x 20 rows = 1 px: the 16 side pixels (the corners lie sqrt(2) away)
    values, grid = class_stats(cam, mask, valid, ring=0.05, grid=(20, 40))
    stats = dict(zip(STAT_NAMES, values, strict=True))
    mass = 16 + 16 * 0.5 + 0.25
    assert stats["on_object"] == pytest.approx(16 / mass)
    assert stats["context"] == pytest.approx(8 / mass)
    # object and ring are centred at (0.5, 0.5); the far pixel sits at ((0 + .5)/40, (0 + .5)/20)
    assert stats["centroid_x"] == pytest.approx((24 * 0.5 + 0.25 * 0.5 / 40) / mass)
    assert stats["centroid_y"] == pytest.approx((24 * 0.5 + 0.25 * 0.5 / 20) / mass)
    p = cam[cam > 0] / mass
    assert stats["entropy"] == pytest.approx(-(p * np.log(p)).sum() / np.log(800))
    np.testing.assert_allclose(grid, cam / mass, atol=1e-7)  # the grid is the image here


def test_ring_is_euclidean_and_stays_on_valid_pixels() -> None:
    mask = np.zeros((9, 9), bool)
    mask[4, 4] = True
    valid = np.ones((9, 9), bool)
    ring = ring_mask(mask, valid, 2.0)
    assert ring.sum() == 12 and not ring[4, 4]  # offsets with dx² + dy² <= 4
    valid[:, 5:] = False
    assert ring_mask(mask, valid, 2.0).sum() == 8  # dx <= 0 only
    assert not ring_mask(np.zeros((9, 9), bool), valid, 2.0).any()


def test_to_grid_area_averages_the_valid_box_into_a_distribution() -> None:
    cam = np.arange(32, dtype=float).reshape(4, 8)
    grid = to_grid(cam, (2, 4))
    blocks = cam.reshape(2, 2, 4, 2).sum(axis=(1, 3))
    np.testing.assert_allclose(grid, blocks / blocks.sum())
    assert to_grid(np.zeros((4, 8)), (2, 4)).sum() == 0


def test_padding_never_receives_attention_mass() -> None:
    cam, mask, _ = blob()
    tall = np.zeros((30, 40))
    tall[5:25] = cam
    tall[:5] = tall[25:] = 7.0  # large values on padding must be ignored
    valid = np.zeros((30, 40), bool)
    valid[5:25] = True
    tall_mask = np.zeros((30, 40), bool)
    tall_mask[5:25] = mask
    padded, grid_p = class_stats(tall, tall_mask, valid, ring=0.05, grid=(20, 40))
    plain, grid = class_stats(cam, mask, np.ones((20, 40), bool), ring=0.05, grid=(20, 40))
    # ring width 0.05 x the valid height (20 rows), centroid in valid-box coordinates
    np.testing.assert_allclose(padded, plain)
    np.testing.assert_allclose(grid_p, grid)


def test_entropy_extremes_and_a_map_without_mass() -> None:
    assert grid_entropy(np.ones((4, 4))) == pytest.approx(1.0)
    one = np.zeros((4, 4))
    one[1, 2] = 3.0
    assert grid_entropy(one) == pytest.approx(0.0)
    values, grid = class_stats(
        np.zeros((6, 6)), np.eye(6, dtype=bool), np.ones((6, 6), bool), 0.1, (3, 3)
    )
    assert np.isnan(values).all() and not grid.any()


def test_image_stats_stacks_classes_and_handles_none() -> None:
    cam, mask, valid = blob()
    stats, maps = image_stats(np.stack([cam, cam]), np.stack([mask, ~mask]), valid, 0.05, (4, 8))
    assert stats.shape == (2, 5) and maps.shape == (2, 4, 8)
    assert stats[1, 0] == pytest.approx(1 - stats[0, 0])
    empty, grids = image_stats(
        np.zeros((0, 20, 40)), np.zeros((0, 20, 40), bool), valid, 0.05, (4, 8)
    )
    assert empty.shape == (0, 5) and grids.shape == (0, 4, 8)


def _reference(
    cam: np.ndarray, mask: np.ndarray, valid: np.ndarray, ring: float, grid: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The statistics by their definitions, one class on the full image: float64 throughout,
    the ring from SciPy's exact Euclidean distance transform."""
    from scipy.ndimage import distance_transform_edt

    rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    top, left = rows[0], cols[0]
    height, width = rows[-1] + 1 - top, cols[-1] + 1 - left
    a = np.where(valid, cam.astype(np.float32).astype(np.float64), 0.0)
    total = a.sum()
    box = a[top : top + height, left : left + width].astype(np.float32)
    small = cv2.resize(box, grid[::-1], interpolation=cv2.INTER_AREA).astype(np.float64)
    small = np.clip(small, 0.0, None)
    grid_map = small / small.sum() if small.sum() > 0 else np.zeros(grid)
    if not total > 0:
        return np.full(5, np.nan), grid_map
    m = mask & valid
    near = ~m & valid & (distance_transform_edt(~m) <= ring * height) if m.any() else m
    ys, xs = np.mgrid[: cam.shape[0], : cam.shape[1]]
    q = grid_map[grid_map > 0]
    values = [
        a[m].sum() / total,
        a[near].sum() / total,
        (a * (xs - left + 0.5) / width).sum() / total,
        (a * (ys - top + 0.5) / height).sum() / total,
        -(q * np.log(q)).sum() / np.log(grid_map.size),
    ]
    return np.array(values), grid_map


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_image_stats_equal_the_definitions_class_by_class(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = 48, 80
    valid = np.zeros((h, w), bool)
    valid[5 + seed : 41, 3 : 77 - 2 * seed] = True  # letterboxed and pillarboxed
    cams = rng.gamma(0.5, size=(7, h, w)).astype(np.float32)
    cams[:, ~valid] = 9.0  # padding carries large values that must be ignored
    masks = np.zeros((7, h, w), bool)
    for k in range(4):  # blobs of random size and place, some cut by the valid box
        r, c = rng.integers(0, h - 4), rng.integers(0, w - 4)
        masks[k, r : r + rng.integers(1, 20), c : c + rng.integers(1, 30)] = True
    masks[4] = rng.random((h, w)) < 0.2  # scattered pixels
    masks[5] = valid  # the whole image: no ring
    cams[6] = np.where(valid, 0.0, cams[6])  # no mass on valid pixels; empty mask
    stats, maps = image_stats(cams, masks, valid, ring=0.08, grid=(6, 10))
    for k in range(len(cams)):
        want, want_map = _reference(cams[k], masks[k], valid, 0.08, (6, 10))
        np.testing.assert_allclose(stats[k], want, rtol=1e-9, atol=1e-12, err_msg=f"class {k}")
        np.testing.assert_allclose(maps[k], want_map, rtol=1e-9, atol=1e-12)
    assert np.isnan(stats[6]).all() and np.isfinite(stats[:6]).all()
    assert stats[5, 1] == 0.0 and stats[5, 0] == pytest.approx(1.0)
