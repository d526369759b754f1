"""The built-in synthetic sample: layout, determinism, README, and the domain gap it encodes."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from domain_gap.data.errors import DataError
from domain_gap.data.sample import KITTI_SIZES, STAMP, write_sample
from domain_gap.labels import NAME_TO_ID, VALID_LABEL_IDS

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


def test_kitti_like_domain_is_rural_and_warmer(tiny_sample: Path) -> None:
    cs_labels = sorted((tiny_sample / "cityscapes" / "gtFine").rglob("*.png"))
    kitti_labels = sorted((tiny_sample / "kitti" / "training" / "semantic").glob("*.png"))
    nature = ("vegetation", "terrain")
    assert _label_fraction(kitti_labels, nature) > 2 * _label_fraction(cs_labels, nature)
    assert _label_fraction(kitti_labels, ("building",)) < _label_fraction(cs_labels, ("building",))
    for name in ("road", "sky", "car", "pole", "vegetation", "terrain", "building"):
        assert (
            _label_fraction(kitti_labels, (name,)) > 0 and _label_fraction(cs_labels, (name,)) > 0
        )

    def mean_rgb(paths: list[Path]) -> np.ndarray:
        return np.mean([cv2.imread(str(p))[..., ::-1].reshape(-1, 3).mean(0) for p in paths], 0)

    cs = mean_rgb(sorted((tiny_sample / "cityscapes" / "leftImg8bit").rglob("*.png")))
    kitti = mean_rgb(sorted((tiny_sample / "kitti").rglob("image_2/*.png")))
    assert (kitti[0] - kitti[2]) - (cs[0] - cs[2]) > 20  # yellow/warm cast
    assert np.abs(kitti - cs).max() > 10


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
