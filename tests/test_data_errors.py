"""Every bad input gives one DataError naming the file and what was expected, and leaves
no file behind."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from domain_gap.data import DataError, DomainDataset
from domain_gap.data.storage import open_storage, write_atomic

IMAGE = "kitti/training/image_2/000001_10.png"
LABEL = "kitti/training/semantic/000001_10.png"


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _record(ds: DomainDataset, rel: str):
    (record,) = [r for r in ds.records if r.sample_id == rel]
    return record


def _load_error(root: Path, config_for, rel: str = IMAGE) -> str:
    before = _files(root)
    ds = DomainDataset(config_for(root))
    with pytest.raises(DataError) as info:
        ds.load(_record(ds, rel))
    assert _files(root) == before  # nothing written, nothing left half-done
    return str(info.value)


def test_corrupt_png(sample_copy: Path, config_for) -> None:
    path = sample_copy / IMAGE
    data = bytearray(path.read_bytes())
    data[40:200] = bytes(160)  # header intact, image data destroyed
    path.write_bytes(bytes(data))
    message = _load_error(sample_copy, config_for)
    assert str(path) in message and "corrupt" in message


def test_truncated_png(sample_copy: Path, config_for) -> None:
    path = sample_copy / IMAGE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = _load_error(sample_copy, config_for)
    assert str(path) in message and "truncated" in message


def test_not_an_image(sample_copy: Path, config_for) -> None:
    path = sample_copy / IMAGE
    path.write_text("hello")
    message = _load_error(sample_copy, config_for)
    assert str(path) in message and "PNG or JPEG" in message


def test_truncated_label(sample_copy: Path, config_for) -> None:
    path = sample_copy / LABEL
    path.write_bytes(path.read_bytes()[:-30])
    message = _load_error(sample_copy, config_for)
    assert str(path) in message and "truncated" in message


def test_missing_label_fails_at_indexing(sample_copy: Path, config_for) -> None:
    (sample_copy / LABEL).unlink()
    with pytest.raises(DataError) as info:
        DomainDataset(config_for(sample_copy))
    message = str(info.value)
    assert str(sample_copy / IMAGE) in message and str(sample_copy / LABEL) in message
    assert "missing label" in message


def test_missing_cityscapes_label(sample_copy: Path, config_for) -> None:
    label = next((sample_copy / "cityscapes" / "gtFine" / "val").rglob("*.png"))
    label.unlink()
    with pytest.raises(DataError, match=re.escape(str(label))):
        DomainDataset(config_for(sample_copy))


def test_label_size_differs_from_image(sample_copy: Path, config_for) -> None:
    path = sample_copy / LABEL
    ids = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(path), ids[:-4, :-2])
    message = _load_error(sample_copy, config_for)
    assert str(path) in message and "same size" in message


def test_unknown_label_id(sample_copy: Path, config_for) -> None:
    path = sample_copy / LABEL
    ids = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    ids[5:9, 5:9] = 77
    cv2.imwrite(str(path), ids)
    message = _load_error(sample_copy, config_for)
    assert str(path) in message and "77" in message


def test_colour_label_is_refused(sample_copy: Path, config_for) -> None:
    path = sample_copy / LABEL
    ids = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(path), np.dstack([ids] * 3))
    message = _load_error(sample_copy, config_for)
    assert str(path) in message and "single-channel" in message


def test_broken_vehicle_json(sample_copy: Path, config_for) -> None:
    vehicle = next((sample_copy / "cityscapes" / "vehicle" / "train").rglob("*.json"))
    vehicle.write_text('{"speed": "fast"}')
    ds = DomainDataset(config_for(sample_copy))
    (record,) = [r for r in ds.records if r.vehicle_path == str(vehicle)]
    with pytest.raises(DataError, match=re.escape(str(vehicle)) + ".*speed"):
        ds.load(record)
    vehicle.write_text("{not json")
    with pytest.raises(DataError, match=re.escape(str(vehicle)) + ".*JSON"):
        ds.load(record)


def test_empty_domain_names_root_and_pattern(tmp_path: Path, config_for) -> None:
    (tmp_path / "cityscapes" / "leftImg8bit" / "train").mkdir(parents=True)
    (tmp_path / "kitti").mkdir()
    with pytest.raises(DataError) as info:
        DomainDataset(config_for(tmp_path), domains=["cityscapes"])
    message = str(info.value)
    assert str(tmp_path / "cityscapes" / "leftImg8bit" / "train") in message
    assert "leftImg8bit/train/<city>/<city>_<seq>_<frame>_leftImg8bit.png" in message
    with pytest.raises(DataError) as info:
        DomainDataset(config_for(tmp_path), domains=["kitti"])
    message = str(info.value)
    assert str(tmp_path / "kitti" / "training" / "image_2") in message
    assert "training/image_2/<NNNNNN>_10.png" in message
    assert _files(tmp_path) == set()


def test_missing_root(tmp_path: Path, config_for) -> None:
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "cityscapes")) + ".*not found"):
        DomainDataset(config_for(tmp_path))


def test_local_storage_refuses_escaping_paths(tiny_sample: Path) -> None:
    storage = open_storage(tiny_sample / "kitti")
    with pytest.raises(DataError, match="relative"):
        storage.read_bytes("../cityscapes/README.md")
    with pytest.raises(DataError, match=re.escape(str(tiny_sample / "kitti" / "nope.png"))):
        storage.read_bytes("nope.png")


def test_write_atomic_leaves_nothing_when_interrupted(tmp_path: Path) -> None:
    target = tmp_path / "out" / "file.png"
    write_atomic(target, b"old")

    def failing_replace(*_args) -> None:  # the rename step fails (full disk, killed run)
        raise OSError("disk full")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("os.replace", failing_replace)
        with pytest.raises(OSError, match="disk full"):
            write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert _files(tmp_path) == {"out/file.png"}
