"""The batched metadata (domain_gap.metadata.image_metadata_batch, label_metadata_batch)
equals the per-image implementation it replaced (tests/metadata_reference.py) on real
prepared sample images (Cityscapes full frames, KITTI letterboxed) and on edge cases."""

from __future__ import annotations

import math

import metadata_reference as ref
import numpy as np
import pytest

from domain_gap import metadata as md
from domain_gap.labels import IGNORE_INDEX

EXACT = {
    "mean_r",
    "mean_g",
    "mean_b",
    "pad_fraction",
    "entropy",
    "dark_fraction",
    "bright_fraction",
}
"""Fields that are bit for bit the reference's (the rest: within 1e-12 relative)."""


def _assert_same(new: dict, old: dict) -> None:
    assert list(new) == list(old)
    for key, value in old.items():
        got = new[key]
        if math.isnan(value):
            assert math.isnan(got), key
        elif key in EXACT:
            assert got == value, key
        else:
            assert got == pytest.approx(value, rel=1e-12, abs=1e-12), key


@pytest.fixture(scope="module")
def prepared(tiny_config) -> list:
    from domain_gap.data.dataset import DomainDataset

    ds = DomainDataset(tiny_config)
    out = []
    for d in tiny_config.domains:
        out += [ds.prepare(r) for r in ds.select(domain=d.name)]
    return out


def test_batched_image_metadata_equals_the_reference_on_sample_images(prepared) -> None:
    assert any(not p.valid.all() for p in prepared) and any(p.valid.all() for p in prepared)
    for shape in {p.image.shape for p in prepared}:
        group = [p for p in prepared if p.image.shape == shape]
        images = np.stack([p.image for p in group])
        valid = np.stack([p.valid for p in group])
        for p, got in zip(group, md.image_metadata_batch(images, valid), strict=True):
            _assert_same(got, ref.image_metadata(p.image, p.valid))


def test_batched_label_metadata_equals_the_reference_on_sample_labels(prepared) -> None:
    group = [p for p in prepared if p.label is not None]
    assert group
    labels = [p.label for p in group] + [None]
    valid = [p.valid for p in group] + [group[0].valid]
    got = md.label_metadata_batch(labels, valid)
    for g, lab, v in zip(got, labels, valid, strict=True):
        _assert_same(g, ref.label_metadata(lab, v))
        if lab is not None:
            assert g == ref.label_metadata(lab, v)  # counts over n: bit for bit


def _edge_images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (7, 20, 30, 3)).astype(np.uint8)
    valid = np.ones((7, 20, 30), bool)
    valid[1, :4] = valid[1, -3:] = False  # letterbox bands
    valid[2] = rng.random((20, 30)) > 0.3  # ragged
    valid[3] = False  # no valid pixel
    images[4] = 77  # constant
    valid[5, :, :28] = False  # a 2-pixel-wide valid column: no sharpness
    images[6] = rng.integers(0, 2, (20, 30, 3)) * 255  # only 0 and 255: luma ties
    valid[6, 19:] = False
    return images, valid


def test_batched_image_metadata_equals_the_reference_on_edge_cases() -> None:
    images, valid = _edge_images()
    for i, got in enumerate(md.image_metadata_batch(images, valid)):
        _assert_same(got, ref.image_metadata(images[i], valid[i]))
    assert md.image_metadata(images[4])["contrast_rms"] == 0.0
    assert md.image_metadata(images[4])["std_r"] == 0.0


def test_luma_ties_round_as_the_per_pixel_formula() -> None:
    # every RGB value whose exact luma ends in .5 or sits on the dark/bright thresholds
    rgb = np.array(np.meshgrid(*[np.arange(256)] * 3, indexing="ij")).reshape(3, -1).T
    exact = rgb @ np.array([299, 587, 114])
    hits = rgb[(exact % 1000 == 500) | (exact == 20000) | (exact == 235000)]
    img = hits[: 64 * 64].astype(np.uint8).reshape(1, 64, 64, 3)
    _assert_same(md.image_metadata_batch(img)[0], ref.image_metadata(img[0]))


def test_batched_label_metadata_names_bad_values() -> None:
    lab = np.zeros((4, 5), np.uint8)
    lab[0, 0] = 40
    with pytest.raises(ValueError, match=r"values \[40\]"):
        md.label_metadata_batch([lab], [np.ones((4, 5), bool)])
    lab[0, 0] = IGNORE_INDEX
    none = np.zeros((4, 5), bool)
    _assert_same(md.label_metadata_batch([lab], [none])[0], ref.label_metadata(lab, none))
