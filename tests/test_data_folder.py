"""The generic ``folder`` kind: globbed images, templated labels in three formats, groups,
stable ids and the seeded split; the GTA5 and BDD100K example configs on miniature layouts."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from domain_gap.config import ConfigError, load_config, parse_config
from domain_gap.data.dataset import DomainDataset
from domain_gap.data.errors import DataError
from domain_gap.data.folder import glob_regex, label_path
from domain_gap.data.splits import seeded_subset
from domain_gap.labels import IGNORE_INDEX, train_id_to_color, train_id_to_id

ROOT = Path(__file__).resolve().parent.parent
H, W = 12, 20


def _train_ids(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 19, size=(H, W)).astype(np.uint8)
    y[:2] = IGNORE_INDEX
    return y


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), array)


def _encode(y: np.ndarray, label_format: str) -> np.ndarray:
    """trainIds written through the label table in each format."""
    if label_format == "labelIds":
        return train_id_to_id(y)
    return train_id_to_color(y) if label_format == "color" else y


def _config(root: Path, **folder: object):
    domains = [
        {"name": "src", "kind": "kitti", "root": str(root), "splits": ["testing"]},
        {"name": "mine", "kind": "folder", "root": str(root), **folder},
    ]
    return parse_config({"domains": domains}, source="test", base_dir=root)


@pytest.mark.parametrize("label_format", ["labelIds", "trainIds", "color"])
def test_each_label_format_reads_back_the_train_ids(tmp_path: Path, label_format: str) -> None:
    rng = np.random.default_rng(0)
    for i, cam in enumerate(["cam_a", "cam_a", "cam_b"]):
        _write(tmp_path / "frames" / cam / f"f{i}.png", rng.integers(0, 255, (H, W, 3), np.uint8))
        _write(tmp_path / "gt" / cam / f"f{i}_gt.png", _encode(_train_ids(i), label_format))
    _write(tmp_path / "frames" / "cam_b" / "nolabel.png", np.zeros((H, W, 3), np.uint8))
    config = _config(
        tmp_path,
        images="frames/**/*.png",
        labels="gt/{parts[1]}/{stem}_gt.png",
        label_format=label_format,
        groups=1,
    )
    dataset = DomainDataset(config, domains=["mine"])
    by_id = {r.sample_id: r for r in dataset.records}
    assert sorted(by_id) == [
        "mine/frames/cam_a/f0.png",
        "mine/frames/cam_a/f1.png",
        "mine/frames/cam_b/f2.png",
        "mine/frames/cam_b/nolabel.png",
    ]
    assert by_id["mine/frames/cam_b/nolabel.png"].subset == "unlabeled"
    for i, cam in enumerate(["cam_a", "cam_a", "cam_b"]):
        r = by_id[f"mine/frames/{cam}/f{i}.png"]
        assert r.group == cam and r.subset == seeded_subset(0, r.sample_id, 0.5)
        np.testing.assert_array_equal(dataset.load(r).label, _train_ids(i))


def test_a_bad_label_value_names_the_file(tmp_path: Path) -> None:
    _write(tmp_path / "img" / "a.png", np.zeros((H, W, 3), np.uint8))
    _write(tmp_path / "lab" / "a.png", np.full((H, W), 40, np.uint8))
    for fmt in ("labelIds", "trainIds"):
        config = _config(tmp_path, images="img/*.png", labels="lab/{name}", label_format=fmt)
        dataset = DomainDataset(config, domains=["mine"])
        with pytest.raises(DataError, match=r"lab/a\.png: .*40"):
            dataset.load(dataset.records[0])


def test_no_match_and_a_template_naming_nothing_are_one_line(tmp_path: Path) -> None:
    _write(tmp_path / "img" / "a.png", np.zeros((H, W, 3), np.uint8))
    with pytest.raises(DataError, match=r"no images match 'pics/\*\.png'"):
        DomainDataset(_config(tmp_path, images="pics/*.png"), domains=["mine"])
    with pytest.raises(DataError, match=r"no label file found.*'lab/\{stem\}\.png'"):
        DomainDataset(_config(tmp_path, images="img/*.png", labels="lab/{stem}.png"), ["mine"])
    with pytest.raises(ConfigError, match=r"domains\[1\].*needs 'images'"):
        _config(tmp_path)
    with pytest.raises(ConfigError, match=r"domains\[0\].*'folder' settings"):
        parse_config(
            {
                "domains": [
                    {
                        "name": "k",
                        "kind": "kitti",
                        "root": ".",
                        "splits": ["training"],
                        "images": "*.png",
                    }
                ]
            }
        )


def test_glob_and_template_helpers() -> None:
    assert glob_regex("a/**/*.png").match("a/x.png") and glob_regex("a/**/*.png").match("a/b/c.png")
    assert not glob_regex("a/*.png").match("a/b/c.png")
    assert label_path("{dir}/{stem}_labelIds.png", "c/d/x.png") == "c/d/x_labelIds.png"
    with pytest.raises(DataError, match="parts"):
        label_path("{parts[5]}/{name}", "c/x.png")


def _example(name: str, root: Path):
    """The shipped example config with its folder domain's root moved to ``root``."""
    config = load_config(ROOT / "configs" / f"{name}.yaml")
    domains = [d.model_copy(update={"root": str(root)}) for d in config.domains]
    return config.model_copy(update={"domains": domains})


def _write_palette(path: Path, ids: np.ndarray) -> None:
    """A palette PNG as GTA5 ships its labels: the indices are the label ids."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(ids, mode="P")
    im.putpalette(np.random.default_rng(0).integers(0, 255, 768).astype(np.uint8).tolist())
    im.save(path)


def test_gta5_example_layout_in_miniature(tmp_path: Path) -> None:
    for i in range(1, 5):
        _write(tmp_path / "images" / f"{i:05d}.png", np.full((H, W, 3), i * 20, np.uint8))
        _write_palette(tmp_path / "labels" / f"{i:05d}.png", train_id_to_id(_train_ids(i)))
    dataset = DomainDataset(_example("gta5", tmp_path), domains=["gta5"])
    assert [r.sample_id for r in dataset.records] == [
        f"gta5/images/{i:05d}.png" for i in range(1, 5)
    ]
    assert {r.subset for r in dataset.records} <= {"train", "val"}
    np.testing.assert_array_equal(dataset.load(dataset.records[0]).label, _train_ids(1))


def test_bdd100k_example_layout_in_miniature(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("val", 2), ("test", 2)):
        for i in range(n):
            name = f"{split[:2]}{i:04d}-0000"
            _write(
                tmp_path / "images" / "10k" / split / f"{name}.jpg",
                np.full((H, W, 3), 90, np.uint8),
            )
            if split != "test":
                mask = tmp_path / "labels" / "sem_seg" / "masks" / split / f"{name}.png"
                _write(mask, _train_ids(i))
    dataset = DomainDataset(_example("bdd100k", tmp_path), domains=["bdd100k"])
    counts = dataset.counts()["bdd100k"]
    assert counts["unlabeled"] == 2 and counts.get("train", 0) + counts.get("val", 0) == 5
    assert {r.group for r in dataset.records} == {"train", "val", "test"}
    labelled = [r for r in dataset.records if r.label_path]
    assert all("/labels/sem_seg/masks/" in r.label_path for r in labelled)
    np.testing.assert_array_equal(dataset.load(labelled[0]).label, _train_ids(0))


def test_colour_labels_map_shared_colours_to_the_train_class_and_reject_others() -> None:
    from domain_gap.labels import NAME_TO_TRAIN_ID, UnknownLabelIdError, color_to_train_id

    pole = np.array([[[153, 153, 153]]], np.uint8)  # pole and polegroup share this colour
    assert color_to_train_id(pole)[0, 0] == NAME_TO_TRAIN_ID["pole"]
    assert color_to_train_id(np.array([[[81, 0, 81]]], np.uint8))[0, 0] == IGNORE_INDEX  # ground
    with pytest.raises(UnknownLabelIdError, match=r"lab\.png: colour\(s\) \[\(1, 2, 3\)\]"):
        color_to_train_id(np.array([[[1, 2, 3]]], np.uint8), "lab.png")
