"""The built-in synthetic sample: layout, determinism, README, and the domain gap it encodes."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from dataclasses import fields
from pathlib import Path

import cv2
import numpy as np
import pytest

from domain_gap.data.errors import DataError
from domain_gap.data.sample import (
    KITTI_SIZES,
    SIZES,
    STAMP,
    URBAN_KITTI_SHARE,
    sample_identity,
    urban_indices,
    urban_kitti_frames,
    write_sample,
)
from domain_gap.data.scene import CITY, ISP_FIELDS, RURAL, URBAN_KITTI, Style
from domain_gap.labels import NAME_TO_ID, NUM_CLASSES, VALID_LABEL_IDS, id_to_train_id

TEST_COUNTS = {"cityscapes": {"train": 6, "val": 4}, "kitti": {"training": 8, "testing": 3}}
VEHICLE_KEYS = {
    "gpsHeading",
    "gpsLatitude",
    "gpsLongitude",
    "gpsAltitude",
    "speed",
    "outsideTemperature",
    "yawRate",
}
CITYSCAPES_TEST_DIGEST = "60625233311561440326cfb7e79fcf6b5a6fc294b185296a55af29757319d09f"
"""sha256 of the decoded pixels of every Cityscapes-like image and label and of the vehicle
JSON of the seed-0 ``test`` sample, as written by generator v2 (the one the committed demo
model was trained with). Later generator versions must leave this domain untouched."""
CS_IMAGE = re.compile(r"^leftImg8bit/(train|val)/([a-z]+)/\2_(\d{6})_(\d{6})_leftImg8bit\.png$")
KITTI_IMAGE = re.compile(r"^(training|testing)/image_2/(\d{6})_10\.png$")


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _rel(root: Path, pattern: str) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.glob(pattern))


@pytest.fixture(scope="module")
def seed0_again(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seed0")
    write_sample(root, seed=0, size="test", progress=False)
    return root


@pytest.fixture(scope="module")
def seed1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seed1")
    write_sample(root, seed=1, size="test", progress=False)
    return root


def test_counts_match_files(tiny_sample: Path) -> None:
    cs, kitti = tiny_sample / "cityscapes", tiny_sample / "kitti"
    found = {
        "cityscapes": {s: len(_rel(cs, f"leftImg8bit/{s}/*/*.png")) for s in ("train", "val")},
        "kitti": {s: len(_rel(kitti, f"{s}/image_2/*.png")) for s in ("training", "testing")},
    }
    assert found == TEST_COUNTS
    assert write_sample(tiny_sample, seed=0, size="test") == TEST_COUNTS


def test_cityscapes_layout_matches_real_patterns(tiny_sample: Path) -> None:
    root = tiny_sample / "cityscapes"
    images = _rel(root, "leftImg8bit/*/*/*")
    assert images and all(CS_IMAGE.match(p) for p in images)
    cities = {CS_IMAGE.match(p).group(1, 2) for p in images}
    assert {c for s, c in cities if s == "train"}.isdisjoint({c for s, c in cities if s == "val"})
    expected_labels, expected_vehicle = [], []
    for p in images:
        stem = p.removeprefix("leftImg8bit/").removesuffix("_leftImg8bit.png")
        expected_labels.append(f"gtFine/{stem}_gtFine_labelIds.png")
        expected_vehicle.append(f"vehicle/{stem}_vehicle.json")
    assert _rel(root, "gtFine/*/*/*") == sorted(expected_labels)
    assert _rel(root, "vehicle/*/*/*") == sorted(expected_vehicle)
    for p in images:
        img = cv2.imread(str(root / p), cv2.IMREAD_UNCHANGED)
        assert img.shape == (256, 512, 3) and img.dtype == np.uint8
    for p in expected_labels:
        ids = cv2.imread(str(root / p), cv2.IMREAD_UNCHANGED)
        assert ids.shape == (256, 512) and ids.dtype == np.uint8
        assert set(np.unique(ids).tolist()) <= VALID_LABEL_IDS


def test_vehicle_json_has_real_keys_and_plausible_values(tiny_sample: Path) -> None:
    files = sorted((tiny_sample / "cityscapes" / "vehicle").rglob("*_vehicle.json"))
    values = [json.loads(f.read_text()) for f in files]
    for v in values:
        assert set(v) == VEHICLE_KEYS
        assert all(isinstance(x, float) for x in v.values())
        assert 0 <= v["gpsHeading"] < 360 and 45 < v["gpsLatitude"] < 56
        assert 5 < v["gpsLongitude"] < 11 and 0 <= v["speed"] <= 20 and abs(v["yawRate"]) < 1
    assert len({v["gpsHeading"] for v in values}) == len(values)  # random per frame


def test_kitti_layout_sizes_and_no_test_labels(tiny_sample: Path) -> None:
    root = tiny_sample / "kitti"
    images = _rel(root, "*/image_2/*")
    assert images and all(KITTI_IMAGE.match(p) for p in images)
    training = [p for p in images if p.startswith("training/")]
    assert _rel(root, "training/semantic/*") == [p.replace("image_2", "semantic") for p in training]
    assert not (root / "testing" / "semantic").exists()
    sizes = set()
    for p in images:
        img = cv2.imread(str(root / p), cv2.IMREAD_UNCHANGED)
        assert img.ndim == 3 and img.shape[:2] in KITTI_SIZES
        sizes.add(img.shape[:2])
        if p in training:
            ids = cv2.imread(str(root / p.replace("image_2", "semantic")), cv2.IMREAD_UNCHANGED)
            assert ids.shape == img.shape[:2] and ids.dtype == np.uint8
            assert set(np.unique(ids).tolist()) <= VALID_LABEL_IDS
    assert len(sizes) >= 2  # frame sizes jitter like real KITTI
    assert all(3.2 < w / h < 3.4 for h, w in sizes)


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_other_images(
    tiny_sample: Path, seed0_again: Path, seed1: Path
) -> None:
    a, b, c = _files(tiny_sample), _files(seed0_again), _files(seed1)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    pngs = [k for k in a if k.endswith(".png")]
    assert pngs and all(a[k] != c[k] for k in pngs)


def test_readme_says_synthetic_with_seed(tiny_sample: Path, seed1: Path) -> None:
    text = (tiny_sample / "README.md").read_text()
    assert "SYNTHETIC" in text and "seed 0" in text and "domain-gap" in text
    assert "vegetation" in text and "terrain" in text  # states what differs
    assert "seed 1" in (seed1 / "README.md").read_text()


def _label_fraction(paths: list[Path], names: tuple[str, ...]) -> float:
    ids = [NAME_TO_ID[n] for n in names]
    return float(
        np.mean([np.isin(cv2.imread(str(p), cv2.IMREAD_UNCHANGED), ids).mean() for p in paths])
    )


def _kitti_labels(root: Path, urban: bool) -> list[Path]:
    """The KITTI-like training labels of the urban (or the rural) frames."""
    listed = set(urban_kitti_frames(root))
    paths = sorted((root / "kitti" / "training" / "semantic").glob("*.png"))
    image = "kitti/training/image_2/{}"
    return [p for p in paths if (image.format(p.name) in listed) == urban]


def _class_mix(paths: list[Path]) -> np.ndarray:
    """Mean share of each of the 19 train classes (void left out, renormalised)."""
    mix = np.zeros(NUM_CLASSES)
    for p in paths:
        ids = id_to_train_id(cv2.imread(str(p), cv2.IMREAD_UNCHANGED), str(p)).ravel()
        mix += np.bincount(ids[ids < NUM_CLASSES], minlength=NUM_CLASSES) / ids.size
    return mix / mix.sum()


def test_rural_kitti_frames_have_more_nature_and_fewer_buildings(tiny_sample: Path) -> None:
    cs_labels = sorted((tiny_sample / "cityscapes" / "gtFine").rglob("*.png"))
    rural = _kitti_labels(tiny_sample, urban=False)
    nature = ("vegetation", "terrain")
    assert _label_fraction(rural, nature) > 2 * _label_fraction(cs_labels, nature)
    assert _label_fraction(rural, ("building",)) < 0.5 * _label_fraction(cs_labels, ("building",))
    kitti_labels = sorted((tiny_sample / "kitti" / "training" / "semantic").glob("*.png"))
    for name in ("road", "sky", "car", "pole", "vegetation", "terrain", "building"):
        assert (
            _label_fraction(kitti_labels, (name,)) > 0 and _label_fraction(cs_labels, (name,)) > 0
        )


def test_urban_share_is_as_stated_and_seeded(tiny_sample: Path, seed1: Path) -> None:
    assert 0 < URBAN_KITTI_SHARE < 1
    listed = urban_kitti_frames(tiny_sample)
    for split, n in TEST_COUNTS["kitti"].items():
        in_split = [p for p in listed if p.startswith(f"kitti/{split}/image_2/")]
        assert len(in_split) == round(URBAN_KITTI_SHARE * n) >= 1
        assert all((tiny_sample / p).is_file() for p in in_split)
    for split, n in SIZES["demo"]["kitti"].items():  # the demo's share, without writing it
        assert len(urban_indices(0, split, n)) == round(URBAN_KITTI_SHARE * n)
    assert urban_indices(0, "training", 200) == urban_indices(0, "training", 200)
    assert urban_indices(0, "training", 200) != urban_indices(1, "training", 200)
    assert json.loads((tiny_sample / STAMP).read_text())["urban_kitti_share"] == URBAN_KITTI_SHARE
    assert len(urban_kitti_frames(seed1)) == len(listed)
    assert f"{round(100 * URBAN_KITTI_SHARE)}%" in (tiny_sample / "README.md").read_text()


def test_urban_style_is_the_city_through_the_kitti_colour_pipeline() -> None:
    for f in fields(Style):
        expected = RURAL if f.name in ISP_FIELDS else CITY
        if f.name not in ("name", "ego_hood"):
            assert getattr(URBAN_KITTI, f.name) == getattr(expected, f.name), f.name
    assert CITY.ego_hood and not URBAN_KITTI.ego_hood
    assert any(getattr(CITY, f) != getattr(RURAL, f) for f in ISP_FIELDS)


def test_urban_kitti_frames_have_the_cityscapes_class_mix(tiny_sample: Path) -> None:
    cs = _class_mix(sorted((tiny_sample / "cityscapes" / "gtFine").rglob("*.png")))
    urban_paths = _kitti_labels(tiny_sample, urban=True)
    urban, rural = _class_mix(urban_paths), _class_mix(_kitti_labels(tiny_sample, urban=False))
    assert np.abs(urban - cs).sum() < 0.35  # L1 between class shares (at most 2)
    assert np.abs(rural - cs).sum() > 0.8 and np.abs(urban - rural).sum() > 0.8
    ego = NAME_TO_ID["ego vehicle"]
    assert not any((cv2.imread(str(p), cv2.IMREAD_UNCHANGED) == ego).any() for p in urban_paths)


def test_every_kitti_frame_carries_the_colour_shift(tiny_sample: Path) -> None:
    def warmth(path: Path) -> float:
        rgb = cv2.imread(str(path))[..., ::-1].reshape(-1, 3).astype(float).mean(0)
        return float(rgb[0] - rgb[2])  # red minus blue: the yellow cast

    cs = [warmth(p) for p in sorted((tiny_sample / "cityscapes" / "leftImg8bit").rglob("*.png"))]
    listed = set(urban_kitti_frames(tiny_sample))
    kitti = {
        p.relative_to(tiny_sample).as_posix(): warmth(p)
        for p in sorted((tiny_sample / "kitti").rglob("image_2/*.png"))
    }
    urban = [v for k, v in kitti.items() if k in listed]
    rural = [v for k, v in kitti.items() if k not in listed]
    assert urban and rural
    assert min(kitti.values()) > max(cs) + 15
    assert np.mean(urban) - np.mean(cs) > 30 and np.mean(rural) - np.mean(cs) > 30


def _decoded_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for p in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(p.relative_to(root.parent).as_posix().encode())
        if p.suffix == ".png":
            digest.update(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).tobytes())
        else:
            digest.update(p.read_bytes())
    return digest.hexdigest()


def test_cityscapes_like_domain_is_unchanged(tiny_sample: Path) -> None:
    assert _decoded_digest(tiny_sample / "cityscapes") == CITYSCAPES_TEST_DIGEST


def test_sample_identity_names_the_generator(tiny_sample: Path, tmp_path: Path) -> None:
    identity = sample_identity(str(tiny_sample / "kitti"))
    assert identity is not None and "seed 0" in identity and "size test" in identity
    assert sample_identity(str(tmp_path / "kitti")) is None
    assert sample_identity("gs://bucket/kitti") is None


def test_thin_classes_are_never_one_pixel_wide(tiny_sample: Path) -> None:
    runs = []
    for path in sorted(tiny_sample.rglob("*_labelIds.png")) + sorted(
        (tiny_sample / "kitti" / "training" / "semantic").glob("*.png")
    ):
        ids = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        for name in ("pole", "traffic sign", "traffic light"):
            mask = np.pad(ids == NAME_TO_ID[name], ((0, 0), (1, 1))).astype(np.int8)
            d = np.diff(mask, axis=1)
            runs.extend((np.nonzero(d == -1)[1] - np.nonzero(d == 1)[1]).tolist())
    runs = np.asarray(runs)
    assert len(runs) > 100
    assert np.median(runs) >= 3 and (runs <= 1).mean() < 0.1  # 1-px runs only at shape tips


def test_rerun_over_complete_sample_is_fast_and_touches_nothing(tiny_sample: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in tiny_sample.rglob("*") if p.is_file()}
    t0 = time.perf_counter()
    write_sample(tiny_sample, seed=0, size="test", progress=False)
    assert time.perf_counter() - t0 < 0.5
    assert {p: p.stat().st_mtime_ns for p in tiny_sample.rglob("*") if p.is_file()} == before


def test_interrupted_run_resumes_to_identical_files(tiny_sample: Path, tmp_path: Path) -> None:
    root = tmp_path / "sample"
    shutil.copytree(tiny_sample, root)
    stamp = json.loads((root / STAMP).read_text())
    (root / STAMP).write_text(json.dumps({**stamp, "complete": False}))
    victim = "kitti/training/image_2/000003_10.png"
    (root / victim).unlink()
    (root / victim.replace("image_2", "semantic")).unlink()
    (root / "README.md").unlink()
    write_sample(root, seed=0, size="test", progress=False)
    assert _files(root) == _files(tiny_sample)
    assert not [p for p in root.rglob(".*") if p.name != STAMP]  # no temp files left


@pytest.mark.slow
def test_other_settings_replace_our_own_sample(
    tiny_sample: Path, seed1: Path, tmp_path: Path
) -> None:
    root = tmp_path / "sample"
    shutil.copytree(tiny_sample, root)
    write_sample(root, seed=1, size="test", progress=False)
    assert _files(root) == _files(seed1)


def test_refuses_folders_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "cityscapes").mkdir()
    (tmp_path / "cityscapes" / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match=re.escape(str(tmp_path))):
        write_sample(tmp_path, seed=0, size="test", progress=False)
    assert (tmp_path / "cityscapes" / "mine.txt").read_text() == "keep me"


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="size"):
        write_sample(tmp_path, seed=0, size="huge")
    with pytest.raises(DataError, match="seed"):
        write_sample(tmp_path, seed=-1, size="test")
    assert not any(tmp_path.iterdir())
