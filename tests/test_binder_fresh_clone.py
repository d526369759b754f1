"""The binder on a fresh clone: the default config writes the built-in sample when it is
missing; a user config with a missing root is one line naming $DOMAIN_GAP_CONFIG."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from domain_gap import source
from domain_gap.config import load_config
from domain_gap.data.errors import DataError

ROOT = Path(__file__).resolve().parent.parent
CLONE = ("leap_binder.py", "leap_test.py", "leap.yaml", "domain_gap", "models", "configs")
"""What check_dataset reads of a checkout (data/ and caches are not in a clone)."""


def test_user_config_with_a_missing_root_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    domains = [
        {"name": "a", "kind": "cityscapes", "root": "nowhere/a", "splits": ["val"]},
        {"name": "b", "kind": "kitti", "root": str(tmp_path), "splits": ["testing"]},
    ]
    path.write_text(yaml.safe_dump({"domains": domains}))
    with pytest.raises(DataError) as err:
        source.ensure_roots(load_config(path), str(path))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"DOMAIN_GAP_CONFIG={path}: domain 'a' root ")
    assert str(tmp_path / "nowhere" / "a") in msg


@pytest.mark.slow
def test_check_dataset_is_valid_on_a_clean_clone(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    clone.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in CLONE:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, clone / name, ignore=ignore)
        else:
            shutil.copy2(src, clone / name)
    assert not (clone / "data").exists()
    env = {
        **os.environ,
        "IS_TENSORLEAP_PLATFORM": "true",
        "TL_DISABLE_ANALYTICS": "true",
        "DOMAIN_GAP_CONFIG": "",
    }
    # the demo-size sample is 650 frames: the test writes the small one under the same name
    code = (
        "import json, domain_gap.data.sample as s; s.SIZES['demo'] = s.SIZES['test']; "
        "import leap_test; print('@@' + json.dumps(leap_test.platform_check()))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=clone, env=env, capture_output=True, text=True
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    report = json.loads(lines[-1][2:])
    assert report["is_valid"], report["general_error"] or report["failed"]
    assert (clone / "data" / "sample" / "cityscapes").is_dir()
