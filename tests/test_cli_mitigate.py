"""``domain-gap mitigate``: bad selections fail in one line before any work; ``--only`` keeps
exactly the named fixes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from domain_gap.cli import app

FIXES = [{"kind": "rgb_normalize"}, {"kind": "histogram_match", "name": "hist"}]


def _write_config(
    config_for: Any, root: Path, tmp: Path, ckpt: Path, fixes: list, cache: Path | None = None
) -> Path:
    config = config_for(
        root,
        top={
            "cache_dir": str(cache or tmp / "cache"),
            "model": {"checkpoint": str(ckpt), "batch_size": 4, "device": "cpu"},
            "analysis": {
                "clusters": 3,
                "permutations": 19,
                "bootstrap": 20,
                "mitigations": fixes,
                "mitigation_fit": {"max_images": 4},
            },
        },
    )
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return path


def _invoke(config: Path, out: Path, *extra: str) -> Any:
    return CliRunner().invoke(app, ["mitigate", "--config", str(config), "--out", str(out), *extra])


def _one_error_line(result: Any) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    return lines[0]


def test_unknown_name_fails_in_one_line_and_writes_nothing(
    tiny_sample: Path, tmp_path: Path, config_for: Any
) -> None:
    config = _write_config(config_for, tiny_sample, tmp_path, tmp_path / "no.pt", FIXES)
    out = tmp_path / "out"
    line = _one_error_line(_invoke(config, out, "--only", "hist,no_such_fix"))
    assert "no_such_fix" in line and "analysis.mitigations" in line
    assert "hist" in line.split("has", 1)[1]  # lists the configured names
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_no_mitigations_configured_fails_in_one_line(
    tiny_sample: Path, tmp_path: Path, config_for: Any
) -> None:
    config = _write_config(config_for, tiny_sample, tmp_path, tmp_path / "no.pt", [])
    out = tmp_path / "out"
    line = _one_error_line(_invoke(config, out))
    assert "analysis.mitigations" in line and "empty" in line
    assert not out.exists()


@pytest.mark.slow
def test_only_runs_exactly_the_named_fix(
    tiny_sample: Path, tiny_ckpt: Path, tmp_path: Path, config_for: Any, whatif_cache: Path
) -> None:
    config = _write_config(config_for, tiny_sample, tmp_path, tiny_ckpt, FIXES, whatif_cache)
    out = tmp_path / "out"
    result = _invoke(config, out, "--only", "rgb_normalize")
    assert result.exit_code == 0, result.output
    assert "mitigations: rgb_normalize" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    fixes = summary["mitigations"]["kitti"]["mitigations"]
    assert [m["name"] for m in fixes] == ["rgb_normalize"]
    assert (out / "report.html").is_file()
