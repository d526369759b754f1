"""The user's own metadata: a per-domain CSV joined by sample id or file name, through drift,
samples.csv, the report and the binder; and the issue's end-to-end case (an unlabeled
``folder`` target with a metadata CSV, default settings)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from domain_gap.analysis.drift import metadata_drift
from domain_gap.config import parse_config
from domain_gap.data.errors import DataError
from domain_gap.data.records import SampleRecord
from domain_gap.data.user_metadata import join_tables, parse_metadata_csv, typed_columns


def _record(domain: str, rel: str) -> SampleRecord:
    name = rel.rsplit("/", 1)[-1]
    return SampleRecord(
        f"{domain}/{rel}", domain, "folder", "unlabeled", rel, None, None, "g", name
    )


def test_numeric_and_categorical_columns_with_a_missing_row() -> None:
    text = b"file_name,isp,exposure_ms,note\na.png,v1,10,x\nb.png,v2,12.5,\nc.png,v1,,y\n"
    table = parse_metadata_csv(text, "m.csv", ["isp", "exposure_ms"])
    records = [_record("d", f"cam/{n}") for n in ("a.png", "b.png", "c.png", "zz.png")]
    cells, missing = join_tables({"d": table}, records)
    fields = typed_columns(cells)
    assert missing == {"d": 1}
    np.testing.assert_array_equal(fields["user_exposure_ms"], [10.0, 12.5, np.nan, np.nan])
    assert fields["user_isp"].tolist() == ["v1", "v2", "v1", ""]


def test_a_file_name_shared_by_two_frames_is_an_error() -> None:
    table = parse_metadata_csv(b"file_name,isp\na.png,v1\n", "m.csv", None)
    with pytest.raises(DataError, match=r"m\.csv: file_name 'a.png' names both"):
        join_tables({"d": table}, [_record("d", "x/a.png"), _record("d", "y/a.png")])


def test_join_by_sample_id_full_or_relative() -> None:
    text = b"sample_id,camera\nd/cam/a.png,front\ncam/b.png,rear\n"
    table = parse_metadata_csv(text, "m.csv", None)
    cells, missing = join_tables(
        {"d": table}, [_record("d", "cam/a.png"), _record("d", "cam/b.png")]
    )
    assert cells["camera"] == ["front", "rear"] and missing == {"d": 0}


@pytest.mark.parametrize(
    ("text", "columns", "match"),
    [
        (
            b"file_name,isp\na.png,v1\n",
            ["isp", "weather"],
            r"m\.csv: column\(s\) \['weather'\] not in",
        ),
        (
            b"file_name,isp\na.png,v1\na.png,v2\n",
            None,
            r"m\.csv: line 3: file_name 'a.png' is repeated",
        ),
        (b"name,isp\na.png,v1\n", None, r"m\.csv: no key column"),
    ],
)
def test_bad_csv_is_one_line_naming_the_file(text: bytes, columns: Any, match: str) -> None:
    with pytest.raises(DataError, match=match) as err:
        parse_metadata_csv(text, "m.csv", columns)
    assert "\n" not in str(err.value)


def test_categorical_missing_values_are_counted_not_a_category() -> None:
    rng = np.random.default_rng(0)
    src = np.array(["A"] * 30 + [""] * 2)
    tgt = np.array(["B"] * 20 + ["C"] * 20 + [""] * 3)
    loss = np.concatenate([rng.normal(1, 0.1, 20), rng.normal(3, 0.1, 20), [np.nan] * 3])
    drift = metadata_drift({"user_cam": src}, {"user_cam": tgt}, loss)
    row = drift.categorical[0]
    assert row.categories == ("A", "B", "C") and (row.n_missing_source, row.n_missing_target) == (
        2,
        3,
    )
    assert row.significant and drift.category_drivers[0].field == "user_cam"
    assert drift.category_drivers[0].association_significant


def _end_to_end_config(root: Path, ckpt: Path, cache: Path, csvs: dict[str, Path]) -> Any:
    domains = [
        {"name": "cityscapes", "kind": "cityscapes", "root": str(root / "cityscapes"),
         "splits": ["train", "val"], "metadata_csv": str(csvs["cityscapes"])},
        {"name": "fleet", "kind": "folder", "root": str(root / "kitti"),
         "images": "*/image_2/*.png", "metadata_csv": str(csvs["fleet"]),
         "metadata_columns": ["exposure_ms", "camera"]},
    ]  # fmt: skip
    data = {
        "image": {"height": 128, "width": 256},
        "domains": domains,
        "model": {"checkpoint": str(ckpt), "batch_size": 4, "device": "cpu", "onnx": None},
        "cache_dir": str(cache),
    }
    return parse_config(data, source="end to end", base_dir=root)


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    return path


@pytest.fixture(scope="module")
def end_to_end(tiny_sample: Path, tiny_ckpt: Path, tmp_path_factory: Any) -> dict[str, Any]:
    """Run once to learn each target frame's entropy, then again with an exposure column that
    rises with it (and a camera column, one row missing): the fields must come out as drivers."""
    from domain_gap.pipeline import run_analysis

    tmp = tmp_path_factory.mktemp("user_meta")
    csvs = {
        "cityscapes": _write_csv(tmp / "cs.csv", ["sample_id", "exposure_ms", "camera"], []),
        "fleet": _write_csv(tmp / "fleet.csv", ["sample_id", "exposure_ms", "camera"], []),
    }
    config = _end_to_end_config(tiny_sample, tiny_ckpt, tmp / "cache", csvs)
    first = run_analysis(config, tmp / "out1", progress=False)
    with first["samples"].open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    source = [r for r in rows if r["domain"] == "cityscapes"]
    target = sorted((r for r in rows if r["domain"] == "fleet"), key=lambda r: float(r["entropy"]))
    _write_csv(csvs["cityscapes"], ["sample_id", "exposure_ms", "camera"],
               [[r["sample_id"], i + 1, "front"] for i, r in enumerate(source)])  # fmt: skip
    fleet = [
        [r["sample_id"].split("/", 1)[1], 100 + i, "rear" if i % 2 else "side"]
        for i, r in enumerate(target[1:])  # the lowest-entropy frame has no row
    ]
    _write_csv(csvs["fleet"], ["sample_id", "exposure_ms", "camera", "unused"], fleet)
    out = run_analysis(config, tmp / "out2", progress=False)
    return {"config": config, "out": out, "n_target": len(target), "csv": csvs["fleet"]}


def test_end_to_end_user_fields_among_the_drivers(end_to_end: dict[str, Any]) -> None:
    out = end_to_end["out"]
    summary = json.loads(out["summary"].read_text())
    assert summary["domains"]["fleet"]["subset"] == "unlabeled"
    drift = summary["metadata_drift"]["fleet"]
    assert drift["score"] == "predictive entropy"
    assert "user_exposure_ms" in [d["field"] for d in drift["drivers"]]
    assert "user_camera" in [r["field"] for r in drift["categorical"]]
    info = {u["domain"]: u for u in summary["user_metadata"]}
    assert info["fleet"]["n_missing"] == 1 and info["fleet"]["n_samples"] == end_to_end["n_target"]
    assert info["cityscapes"]["n_missing"] == 0 and info["fleet"]["key"] == "sample_id"
    with out["samples"].open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sum(r["user_exposure_ms"] == "" for r in rows if r["domain"] == "fleet") == 1
    report = out["report"].read_text()
    assert "user_exposure_ms" in report and "Your own fields" in report


def test_schema_accepts_user_metadata(end_to_end: dict[str, Any], validate_summary: Any) -> None:
    validate_summary(json.loads(end_to_end["out"]["summary"].read_text()))


def test_binder_user_fields_have_the_same_keys_for_every_sample(
    end_to_end: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from domain_gap import source

    config = end_to_end["config"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    monkeypatch.setenv("DOMAIN_GAP_CONFIG", str(path))
    ids = [r.sample_id for r in source.active_dataset().records]
    fields = [source.user_fields(i) for i in ids]
    assert all(set(f) == {"exposure_ms", "camera"} for f in fields)
    assert any(isinstance(f["exposure_ms"], float) and np.isnan(f["exposure_ms"]) for f in fields)


@pytest.mark.slow
def test_platform_check_registers_the_user_group(tiny_sample: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    import torch

    from models import build_model, save_checkpoint
    from models.export import export_onnx

    torch.manual_seed(0)
    model = build_model("deeplabv3plus_mobilenet", output_stride=16, head_channels=32).eval()
    save_checkpoint(model, tmp_path / "model.pt")
    export_onnx(model, tmp_path / "model.onnx", 128, 256)
    rows = [
        ["training/image_2/000000_10.png", 12.5, "rear"],
        ["testing/image_2/000000_10.png", 3, "side"],
    ]
    meta = _write_csv(tmp_path / "kitti.csv", ["sample_id", "exposure_ms", "camera"], rows)
    config = {
        "image": {"height": 128, "width": 256},
        "domains": [
            {"name": "cityscapes", "kind": "cityscapes", "root": str(tiny_sample / "cityscapes"),
             "splits": ["train", "val"]},
            {"name": "kitti", "kind": "kitti", "root": str(tiny_sample / "kitti"),
             "splits": ["training", "testing"], "metadata_csv": str(meta)},
        ],
        "model": {"checkpoint": "model.pt", "onnx": "model.onnx", "embedding_dim": 32,
                  "arch": "deeplabv3plus_mobilenet", "device": "cpu"},
        "cache_dir": "cache",
    }  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "DOMAIN_GAP_CONFIG": str(path), "TL_DISABLE_ANALYTICS": "true"}
    code = "import json, leap_test; print('@@' + json.dumps(leap_test.run_platform_check()))"
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    report = json.loads(lines[-1][2:])
    assert report["is_valid"] and any(m.startswith("user") for m in report["metadata"]), report
