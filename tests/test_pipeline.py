"""End-to-end: run_analysis on the tiny sample with a tiny random model, and the CLI errors."""

from __future__ import annotations

import base64
import copy
import csv
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from domain_gap.cli import app

SIZE_BOUND = 3 * 1024 * 1024


@pytest.fixture(scope="module")
def analysis_config(tiny_sample: Path, tiny_ckpt: Path, config_for: Any, tmp_path_factory: Any):
    cache = tmp_path_factory.mktemp("pipeline_cache")
    return config_for(
        tiny_sample,
        top={
            "cache_dir": str(cache),
            "model": {"checkpoint": str(tiny_ckpt), "batch_size": 4, "device": "cpu"},
            "analysis": {"clusters": 3, "permutations": 19, "bootstrap": 10},
        },
    )


@pytest.fixture(scope="module")
def outputs(analysis_config: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from domain_gap.pipeline import run_analysis

    return run_analysis(analysis_config, tmp_path_factory.mktemp("out"), progress=False)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_summary_has_documented_keys_and_types(
    outputs: dict[str, Path], analysis_config: Any, tiny_ckpt: Path
) -> None:
    summary = json.loads(outputs["summary"].read_text())
    for key in (
        "domains",
        "sizes",
        "latent_gap",
        "metadata_drift",
        "clusters",
        "per_class",
        "model",
        "config",
        "synthetic",
    ):
        assert key in summary, key
    assert summary["synthetic"] is True  # the tiny sample is the built-in generator's
    assert summary["source"] == "cityscapes" and summary["targets"] == ["kitti"]
    assert summary["model"]["sha256"] == hashlib.sha256(tiny_ckpt.read_bytes()).hexdigest()
    assert summary["model"]["arch"] == "deeplabv3plus_mobilenet"
    assert summary["config"]["analysis"]["permutations"] == 19
    for name, dom in summary["domains"].items():
        assert summary["sizes"][name] == dom["n"] > 0
        assert isinstance(dom["loss_mean"], float) and dom["loss_mean"] > 0
        assert 0.0 <= dom["miou_dataset"] <= 1.0 and 0.0 <= dom["miou_mean"] <= 1.0
        assert len(dom["class_iou_dataset"]) == 19
    gap = summary["latent_gap"]["kitti"]
    assert gap["mmd"]["bandwidth"] == pytest.approx(summary["bandwidth"]["value"])
    assert 0 < gap["mmd"]["p_value"] <= 1
    assert {"frechet", "kid", "c2st", "bbsd", "verdict"} <= set(gap)
    assert "probs" not in gap["c2st"]  # per-sample probabilities live in samples.csv
    assert len(summary["per_class"]["kitti"]) == 19
    assert summary["clusters"]["k"] == 3
    table = summary["clusters"]["tables"]["kitti"]
    assert sum(r["n"] for r in table) == sum(summary["sizes"].values())
    drift = summary["metadata_drift"]["kitti"]
    fields = {r["field"] for r in drift["numeric"]}
    assert {"brightness", "aspect_ratio"} <= fields
    assert not {"domain", "group", "file_name"} & fields


@pytest.mark.slow
def test_summary_fits_the_schema_which_rejects_missing_and_unknown_fields(
    outputs: dict[str, Path], validate_summary: Any
) -> None:
    import jsonschema

    good = json.loads(outputs["summary"].read_text())
    validate_summary(good)
    missing = copy.deepcopy(good)
    del missing["latent_gap"]["kitti"]["mmd"]["p_floor"]
    with pytest.raises(jsonschema.ValidationError, match="p_floor"):
        validate_summary(missing)
    extra = copy.deepcopy(good)
    extra["latent_gap"]["kitti"]["mmd"]["p_value_text"] = "p < 0.05"
    with pytest.raises(jsonschema.ValidationError, match="p_value_text"):
        validate_summary(extra)
    wrong = copy.deepcopy(good)
    wrong["schema_version"] = "0.0.1"
    with pytest.raises(jsonschema.ValidationError):
        validate_summary(wrong)


@pytest.mark.slow
def test_samples_csv_one_row_per_sample(outputs: dict[str, Path], analysis_config: Any) -> None:
    from domain_gap.data.dataset import DomainDataset

    rows = _rows(outputs["samples"])
    dataset = DomainDataset(analysis_config)
    expected = sorted(r.sample_id for r in dataset.records if r.subset == "val")
    assert sorted(r["sample_id"] for r in rows) == expected
    summary = json.loads(outputs["summary"].read_text())
    for name, dom in summary["domains"].items():
        mine = [r for r in rows if r["domain"] == name]
        assert len(mine) == dom["n"]
        assert np.mean([float(r["loss"]) for r in mine]) == pytest.approx(dom["loss_mean"], 1e-4)
        assert np.mean([float(r["miou"]) for r in mine]) == pytest.approx(dom["miou_mean"], 1e-4)
    for r in rows:
        assert 0.0 <= float(r["domain_prob"]) <= 1.0
        assert 0 <= int(r["cluster"]) < 3
        float(r["map_x"]), float(r["map_y"]), float(r["brightness"])
    specific = summary["domain_specific"]["kitti"]["kitti"]
    probs = {r["sample_id"]: float(r["domain_prob"]) for r in rows}
    top = [item["p_target"] for item in specific]
    assert top == sorted(top, reverse=True)
    assert top[0] == pytest.approx(
        max(probs[r["sample_id"]] for r in rows if r["domain"] == "kitti"), abs=1e-5
    )


@pytest.mark.slow
def test_report_is_self_contained_and_small(outputs: dict[str, Path]) -> None:
    text = outputs["report"].read_text()
    assert outputs["report"].stat().st_size < SIZE_BOUND
    assert text.startswith("<!DOCTYPE html>")
    assert "SYNTHETIC DATA" in text
    assert "<script" not in text.lower() and "<link" not in text.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text, re.I)
    assert "url(" not in text  # no external CSS resources either
    sources = re.findall(r'<img src="([^"]+)"', text)
    assert len(sources) >= 4
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    out = outputs["report"].parent
    names = ["report.html", "samples.csv", "summary.json", "timings.json"]
    assert sorted(p.name for p in out.iterdir()) == names


@pytest.mark.slow
def test_rerun_needs_no_model(
    outputs: dict[str, Path], analysis_config: Any, tmp_path: Path
) -> None:
    from domain_gap.pipeline import run_analysis

    class NoModel:
        def __call__(self, x: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
            raise AssertionError("the model was called although every sample is cached")

    again = run_analysis(analysis_config, tmp_path, progress=False, runner=NoModel())
    first = json.loads(outputs["summary"].read_text())
    second = json.loads(again["summary"].read_text())
    assert second["latent_gap"] == first["latent_gap"]
    assert second["domains"] == first["domains"]


def test_cli_analyze_bad_config_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["analyze", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path)]
    )
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "missing.yaml" in lines[0]


def test_cli_analyze_missing_checkpoint_is_one_line(tiny_sample: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "domains:\n"
        f"  - {{name: cityscapes, kind: cityscapes, root: {tiny_sample / 'cityscapes'}, "
        "splits: [val]}\n"
        f"  - {{name: kitti, kind: kitti, root: {tiny_sample / 'kitti'}, splits: [training]}}\n"
        "model: {checkpoint: no/such/model.pt}\n"
        f"cache_dir: {tmp_path / 'cache'}\n"
    )
    result = CliRunner().invoke(
        app, ["analyze", "--config", str(config), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.pt" in lines[0] and "checkpoint" in lines[0]
    assert not (tmp_path / "out" / "report.html").exists()
