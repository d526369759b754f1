"""Killing ``analyze`` loses nothing: SIGKILL during extraction, statistics and the output
write, then a rerun that resumes and writes the uninterrupted run's bytes; SIGINT (Ctrl-C) in
every stage exits 130 and leaves the previous outputs as they were.

The CLI runs as a subprocess on the tiny sample; each signal is sent when a progress marker
appears on its stderr (never after a sleep). The three result files are compared byte for
byte; ``timings.json``, this run's seconds per stage, is the one file that differs by design.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import standalone_config_dict

OUTPUTS = ("report.html", "samples.csv", "summary.json")
TIMINGS = "timings.json"
ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 120


def _config(tmp: Path, sample: Path, ckpt: Path, cache: Path) -> Path:
    data = standalone_config_dict(sample, ckpt, cache, batch_size=2)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run(config: Path, out: Path, marker: str | None = None, sig: int = signal.SIGKILL) -> Any:
    """Run ``analyze``; with ``marker``, send ``sig`` as soon as it appears on stderr.

    Returns (exit code, stderr text); fails the test if the marker never appears."""
    env = {**os.environ, "TL_DISABLE_ANALYTICS": "true", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "domain_gap.cli", "analyze", "--config", str(config)]
    proc = subprocess.Popen(
        [*cmd, "--out", str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + TIMEOUT_S
    sent = False
    while time.monotonic() < deadline:
        chunk = os.read(proc.stderr.fileno(), 65536)
        if not chunk:
            break
        seen += chunk
        if marker and not sent and marker.encode() in seen:
            proc.send_signal(sig)
            sent = True
    code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    text = seen.decode(errors="replace")
    if marker:
        assert sent, f"marker {marker!r} never appeared:\n{text}"
    return code, text


def _outputs(out: Path) -> dict[str, bytes]:
    """The three result files, exactly, after checking that the timings file sits beside them
    with the same run id."""
    assert sorted(p.name for p in out.iterdir()) == sorted([*OUTPUTS, TIMINGS])
    files = {name: (out / name).read_bytes() for name in OUTPUTS}
    run_id = json.loads(files["summary.json"])["run_id"]
    assert json.loads((out / TIMINGS).read_text())["run_id"] == run_id
    return files


def _staging(out: Path) -> list[Path]:
    return [p for p in out.parent.iterdir() if ".staging-" in p.name or ".old-" in p.name]


@pytest.fixture(scope="module")
def setup(tiny_sample: Path, tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A config on the tiny sample and the outputs of one uninterrupted run from a cold cache
    (the cache is then removed, so the killed runs start cold too)."""
    tmp = tmp_path_factory.mktemp("kill")
    cache = tmp / "cache"
    config = _config(tmp, tiny_sample, tiny_ckpt, cache)
    code, text = _run(config, tmp / "reference")
    assert code == 0, text
    shutil.rmtree(cache)
    return config, cache, _outputs(tmp / "reference"), tmp


def test_sigkill_during_extraction_statistics_and_write_then_resume(setup: Any) -> None:
    config, cache, reference, tmp = setup
    out = tmp / "out"

    # extraction: cityscapes done, kitti under way
    code, text = _run(config, out, marker="extract kitti")
    assert code == -signal.SIGKILL, text
    assert not out.exists() and not _staging(out)  # nothing partial
    assert any(cache.rglob("*.npz"))  # whole shards kept
    code, text = _run(config, out)
    assert code == 0, text
    assert "extract cityscapes" not in text and "extract kitti" in text  # resumed, not redone
    first = _outputs(out)
    assert first == reference

    # statistics
    code, text = _run(config, out, marker="[domain-gap] latent gap")
    assert code == -signal.SIGKILL, text
    assert _outputs(out) == reference and not _staging(out)  # the old outputs, untouched
    code, text = _run(config, out)
    assert code == 0, text
    assert "extract cityscapes" not in text and "extract kitti" not in text  # all cached
    assert _outputs(out) == reference

    # the output write
    code, text = _run(config, out, marker="[domain-gap] write outputs")
    assert code == -signal.SIGKILL, text
    assert _outputs(out) == reference  # the three of one run: old or new, never a mix
    code, text = _run(config, out)
    assert code == 0, text
    assert _outputs(out) == reference and not _staging(out)  # a killed staging is cleared


@pytest.mark.parametrize(
    "marker",
    ["extract cityscapes", "[domain-gap] latent gap", "[domain-gap] figures and thumbnails"],
)
def test_ctrl_c_in_any_stage_exits_130_and_keeps_the_outputs(
    setup: Any, marker: str, tmp_path: Path
) -> None:
    config, _cache, _reference, tmp = setup
    out = tmp / f"ctrl-c-{marker.split()[-1]}"
    shutil.copytree(tmp / "reference", out)  # a previous run's outputs, to be kept
    before = {name: (out / name).read_bytes() for name in OUTPUTS}
    if marker.startswith("extract"):  # a cold cache, so that the signal meets the extraction
        data = yaml.safe_load(config.read_text())
        config = tmp_path / "cold.yaml"
        config.write_text(yaml.safe_dump({**data, "cache_dir": str(tmp_path / "cold-cache")}))
    code, text = _run(config, out, marker=marker, sig=signal.SIGINT)
    assert code == 130, text
    assert "Traceback" not in text
    assert [line for line in text.splitlines() if line.startswith("error:")] == [
        "error: interrupted (Ctrl-C); no output was replaced"
    ], text
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == before
    assert not _staging(out)
