"""Config validation: unknown keys, wrong types and missing fields name the key and what was
expected; the shipped default points at the built-in sample."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from domain_gap.config import DEFAULT_CONFIG, ConfigError, load_config, parse_config

BASE = {
    "domains": [
        {"name": "cityscapes", "kind": "cityscapes", "root": "cs", "splits": ["train", "val"]},
        {"name": "kitti", "kind": "kitti", "root": "gs://bucket/kitti", "splits": ["training"]},
    ]
}


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_valid_config_resolves_paths_against_its_folder(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, BASE))
    assert cfg.resolve(cfg.domains[0].root) == str((tmp_path / "cs").resolve())
    assert cfg.resolve(cfg.domains[1].root) == "gs://bucket/kitti"
    assert cfg.source_domain == "cityscapes"
    assert cfg.image.resize == "pad"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.update(colour="red"), r"colour: unknown key"),
        (lambda d: d["domains"][0].update(rooot="x"), r"domains\[0\]\.rooot: unknown key"),
        (lambda d: d["domains"][1].pop("root"), r"domains\[1\]\.root: required key is missing"),
        (lambda d: d.update(image={"height": "tall"}), r"image\.height: .*integer.*'tall'"),
        (lambda d: d.update(image={"resize": "squash"}), r"image\.resize: .*'pad'.*'crop'"),
        (lambda d: d.update(image={"std": [0.2, 0.0, 0.2]}), r"image\.std: .*> 0"),
        (lambda d: d["domains"][0].update(kind="mapillary"), r"domains\[0\]\.kind: .*cityscapes"),
        (lambda d: d["domains"][0].update(splits="train"), r"domains\[0\]\.splits: .*list"),
        (lambda d: d["domains"][1].update(name="cityscapes"), r"domain names must be unique"),
        (lambda d: d.update(analysis={"source": "mars"}), r"analysis\.source 'mars'"),
        (lambda d: d.update(domains=[]), r"domains: .*at least 1"),
        (lambda d: d.update(model={"tap": "backbone"}), r"model\.tap: .*'aspp'"),
    ],
)
def test_config_errors_name_key_and_expectation(tmp_path: Path, change, expected) -> None:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    change(data)
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError, match=expected) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_missing_file_not_yaml_and_not_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("domains: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_config(["a", "b"], source="list.yaml")


def test_shipped_default_points_at_the_sample() -> None:
    cfg = load_config()
    assert Path(DEFAULT_CONFIG).name == "sample.yaml"
    roots = [Path(cfg.resolve(d.root)) for d in cfg.domains]
    assert [r.name for r in roots] == ["cityscapes", "kitti"]
    assert roots[0].parent == roots[1].parent
    assert "SYNTHETIC" in DEFAULT_CONFIG.read_text()
