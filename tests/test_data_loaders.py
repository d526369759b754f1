"""Indexing and loading both native layouts from the generated tiny sample."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from domain_gap.config import Config
from domain_gap.data import DataError, DomainDataset
from domain_gap.data.splits import seeded_subset
from domain_gap.labels import id_to_train_id


@pytest.fixture(scope="module")
def dataset(tiny_config: Config) -> DomainDataset:
    return DomainDataset(tiny_config)


def _rel_files(root: Path, pattern: str) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.glob(pattern))


def test_records_match_the_files_on_disk(dataset: DomainDataset, tiny_sample: Path) -> None:
    cs_root, kitti_root = tiny_sample / "cityscapes", tiny_sample / "kitti"
    expected = sorted(
        [f"cityscapes/{p}" for p in _rel_files(cs_root, "leftImg8bit/*/*/*.png")]
        + [f"kitti/{p}" for p in _rel_files(kitti_root, "*/image_2/*.png")]
    )
    ids = [r.sample_id for r in dataset.records]
    assert ids == expected  # sample_id = domain/relative path, sorted
    for r in dataset.records:
        root = cs_root if r.domain == "cityscapes" else kitti_root
        assert Path(r.image_path) == root / r.sample_id.split("/", 1)[1]
        assert r.file_name == Path(r.image_path).name
        assert r.kind == r.domain


def test_cityscapes_subsets_groups_labels_vehicle(
    dataset: DomainDataset, tiny_sample: Path
) -> None:
    records = dataset.select(domain="cityscapes")
    for r in records:
        split, city = r.sample_id.split("/")[2:4]
        assert r.subset == split and r.group == city
        stem = r.file_name.removesuffix("_leftImg8bit.png")
        assert r.label_path == str(
            tiny_sample / "cityscapes" / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"
        )
        assert r.vehicle_path == str(
            tiny_sample / "cityscapes" / "vehicle" / split / city / f"{stem}_vehicle.json"
        )
    assert dataset.counts()["cityscapes"] == {"train": 6, "val": 4}


def test_kitti_subsets_groups(dataset: DomainDataset) -> None:
    records = dataset.select(domain="kitti")
    labelled = [r for r in records if "/training/" in r.sample_id]
    testing = [r for r in records if "/testing/" in r.sample_id]
    assert len(labelled) == 8 and len(testing) == 3
    assert all(r.subset == "unlabeled" and r.label_path is None for r in testing)
    assert all(r.subset in ("train", "val") and r.label_path for r in labelled)
    assert all(r.vehicle_path is None for r in records)
    assert all(re.fullmatch(r"\d{6}", r.group) and r.file_name.startswith(r.group) for r in records)
    assert {r.subset for r in labelled} == {"train", "val"}  # val_fraction 0.5 of 8 frames


def test_select(dataset: DomainDataset) -> None:
    assert dataset.select() == list(dataset.records)
    val = dataset.select(subset="val")
    assert val and all(r.subset == "val" for r in val)
    assert {r.domain for r in val} == {"cityscapes", "kitti"}
    assert dataset.select(domain="kitti", subset="unlabeled") == [
        r for r in dataset.records if r.domain == "kitti" and r.subset == "unlabeled"
    ]
    assert dataset.select(domain="nope") == []


def test_kitti_split_is_seeded_and_stable(tiny_sample: Path, config_for, tmp_path: Path) -> None:
    def subsets(cfg: Config) -> dict[str, str]:
        return {r.sample_id: r.subset for r in DomainDataset(cfg, domains=["kitti"]).records}

    base = subsets(config_for(tiny_sample))
    assert base == subsets(config_for(tiny_sample))
    assert base != subsets(config_for(tiny_sample, top={"seed": 1}))
    # Adding frames leaves every existing frame in its subset.
    root = tmp_path / "grown"
    shutil.copytree(tiny_sample / "kitti", root / "kitti")
    for k in range(8, 20):
        for sub in ("image_2", "semantic"):
            src = root / "kitti" / "training" / sub / "000000_10.png"
            shutil.copy(src, src.with_name(f"{k:06d}_10.png"))
    grown = subsets(config_for(root))
    assert len(grown) == len(base) + 12
    assert all(grown[k] == v for k, v in base.items())


def test_val_fraction_extremes_and_rate(tiny_sample: Path, config_for) -> None:
    for fraction, subset in ((0.0, "train"), (1.0, "val")):
        cfg = config_for(tiny_sample, kitti={"val_fraction": fraction})
        labelled = DomainDataset(cfg, domains=["kitti"]).select(domain="kitti")
        assert {r.subset for r in labelled if r.label_path} == {subset}
    ids = [f"kitti/training/image_2/{i:06d}_10.png" for i in range(4000)]
    share = np.mean([seeded_subset(3, i, 0.3) == "val" for i in ids])
    assert abs(share - 0.3) < 0.03


def test_load_matches_independent_decoding(dataset: DomainDataset) -> None:
    for r in (dataset.select("cityscapes", "val")[0], dataset.select("kitti", "train")[0]):
        sample = dataset.load(r)
        reference = cv2.imread(r.image_path, cv2.IMREAD_COLOR)[..., ::-1]
        np.testing.assert_array_equal(sample.image, reference)  # RGB order
        ids = cv2.imread(r.label_path, cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(sample.label, id_to_train_id(ids))
        assert set(np.unique(sample.label).tolist()) <= set(range(19)) | {255}
        assert sample.image.dtype == np.uint8 and sample.label.dtype == np.uint8


def test_vehicle_fields(dataset: DomainDataset) -> None:
    r = dataset.select("cityscapes", "train")[0]
    vehicle = dataset.load(r).vehicle
    assert vehicle == json.loads(Path(r.vehicle_path).read_text())
    assert all(isinstance(v, float) for v in vehicle.values()) and "speed" in vehicle
    assert dataset.load(dataset.select("kitti", "unlabeled")[0]).vehicle == {}


def test_prepare_resizes_with_policy(dataset: DomainDataset) -> None:
    r = dataset.select("kitti", "unlabeled")[0]
    loaded = dataset.load(r)
    prepared = dataset.prepare(r)
    h, w = loaded.image.shape[:2]
    assert prepared.orig_hw == (h, w) and prepared.label is None
    assert prepared.image.shape == (128, 256, 3) and prepared.valid.shape == (128, 256)
    rows = prepared.valid.any(axis=1).sum()
    assert abs(rows - 256 * h / w) <= 1  # KITTI's 3.3:1 fills the width, padded above/below
    assert prepared.valid.any(axis=0).all() and (prepared.image[~prepared.valid] == 0).all()
    cs = dataset.prepare(dataset.select("cityscapes", "val")[0])
    assert cs.valid.all() and cs.label.shape == (128, 256)  # 2:1 into 2:1: no padding


def test_split_files_override_seeded_split(sample_copy: Path, config_for) -> None:
    lists = sample_copy / "lists"
    lists.mkdir()
    train = [f"training/image_2/{i:06d}_10.png" for i in (0, 1, 2)]
    (lists / "train.txt").write_text("# my split\n" + "\n".join(train) + "\n\n")
    (lists / "val.txt").write_text("./training/image_2/000005_10.png\n")
    cfg = config_for(
        sample_copy, kitti={"split_files": {"train": "lists/train.txt", "val": "lists/val.txt"}}
    )
    records = DomainDataset(cfg, domains=["kitti"]).records
    got = {r.sample_id.removeprefix("kitti/"): r.subset for r in records if r.label_path}
    assert got == {**dict.fromkeys(train, "train"), "training/image_2/000005_10.png": "val"}
    assert sum(r.subset == "unlabeled" for r in records) == 3
    # Only a train list: every other labelled frame is val.
    cfg = config_for(sample_copy, kitti={"split_files": {"train": "lists/train.txt"}})
    records = DomainDataset(cfg, domains=["kitti"]).records
    assert sum(r.subset == "val" for r in records) == 5


def test_split_file_errors_name_the_file(sample_copy: Path, config_for) -> None:
    lists = sample_copy / "lists"
    lists.mkdir()
    (lists / "bad.txt").write_text("training/image_2/999999_10.png\n")
    cfg = config_for(sample_copy, kitti={"split_files": {"train": "lists/bad.txt"}})
    with pytest.raises(DataError, match=re.escape(str(lists / "bad.txt")) + ".*999999_10"):
        DomainDataset(cfg)
    (lists / "a.txt").write_text("training/image_2/000001_10.png\n")
    cfg = config_for(
        sample_copy, kitti={"split_files": {"train": "lists/a.txt", "val": "lists/a.txt"}}
    )
    with pytest.raises(DataError, match="both train and val"):
        DomainDataset(cfg)
    cfg = config_for(sample_copy, kitti={"split_files": {"train": "lists/missing.txt"}})
    with pytest.raises(DataError, match=re.escape(str(lists / "missing.txt"))):
        DomainDataset(cfg)


def test_max_samples_caps_each_subset_deterministically(tiny_sample: Path, config_for) -> None:
    cfg = config_for(tiny_sample, kitti={"max_samples": 2}, cityscapes={"max_samples": 3})
    first = DomainDataset(cfg)
    assert first.records == DomainDataset(cfg).records
    full = DomainDataset(config_for(tiny_sample))
    assert set(first.records) <= set(full.records)
    counts, full_counts = first.counts(), full.counts()
    assert counts["cityscapes"] == {"train": 3, "val": 3}
    assert counts["kitti"] == {k: min(2, n) for k, n in full_counts["kitti"].items()}
    assert max(full_counts["kitti"].values()) > 2  # the cap really cut something


def test_unlabeled_root_adds_every_image(sample_copy: Path, config_for, tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    (extra / "drive_a").mkdir(parents=True)
    (extra / "drive_b" / "deep").mkdir(parents=True)
    src = sample_copy / "kitti" / "testing" / "image_2" / "000000_10.png"
    shutil.copy(src, extra / "drive_a" / "f1.png")
    cv2.imwrite(str(extra / "drive_b" / "deep" / "f2.jpg"), cv2.imread(str(src)))
    (extra / "drive_a" / "notes.txt").write_text("not an image")
    cfg = config_for(sample_copy, kitti={"unlabeled_root": str(extra)})
    ds = DomainDataset(cfg, domains=["kitti"])
    added = [r for r in ds.records if r.image_path.startswith(str(extra))]
    assert [r.sample_id for r in added] == ["kitti/drive_a/f1.png", "kitti/drive_b/deep/f2.jpg"]
    assert all(r.subset == "unlabeled" and r.label_path is None for r in added)
    assert [r.group for r in added] == ["drive_a", "deep"]
    assert ds.load(added[1]).image.shape[2] == 3


def test_cityscapes_test_split_is_unlabeled(sample_copy: Path, config_for) -> None:
    cs = sample_copy / "cityscapes"
    (cs / "leftImg8bit" / "val").rename(cs / "leftImg8bit" / "test")
    cfg = config_for(sample_copy, cityscapes={"splits": ["train", "test"]})
    records = DomainDataset(cfg, domains=["cityscapes"]).select(subset="unlabeled")
    assert len(records) == 4 and all(r.label_path is None for r in records)
    assert all(r.vehicle_path is None for r in records)  # vehicle/test does not exist here


def test_unknown_split_names_are_refused(tiny_sample: Path, config_for) -> None:
    with pytest.raises(DataError, match="unknown KITTI split 'train'"):
        DomainDataset(config_for(tiny_sample, kitti={"splits": ["train"]}))
    with pytest.raises(DataError, match="unknown Cityscapes split 'training'"):
        DomainDataset(config_for(tiny_sample, cityscapes={"splits": ["training"]}))
