"""Install and integration entry points: the lock, the pins, and ``poetry run test``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_poetry_lock_is_valid_for_the_default_source() -> None:
    poetry = shutil.which("poetry", path=str(Path(sys.executable).parent))
    assert poetry, "poetry is installed into .venv by scripts/setup.sh"
    proc = subprocess.run([poetry, "check", "--lock"], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lock = (ROOT / "poetry.lock").read_text()
    assert "[package.source]" not in lock and "\nurl = " not in lock


def test_torch_pins_are_exact() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.14.1" in deps and "torchvision==0.29.1" in deps


def test_test_only_deps_are_in_the_dev_group() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dev = " ".join(pyproject["dependency-groups"]["dev"])
    assert "jsonschema" in dev and "albumentations" in dev
    assert not any(d.startswith(("jsonschema", "albumentations"))
                   for d in pyproject["project"]["dependencies"])


def _lock_tools():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import lock_tools
    finally:
        sys.path.pop(0)
    return lock_tools


def test_ray_is_an_optional_extra_installed_only_when_asked() -> None:
    """``make demo`` installs no Ray; ``make test`` (DOMAIN_GAP_EXTRAS=ray) installs it and its
    own dependencies, and a package also needed by a locked group stays unconditional."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert not any(d.startswith("ray") for d in pyproject["project"]["dependencies"])
    extra = pyproject["project"]["optional-dependencies"]["ray"]
    assert any(d.startswith("ray[data]==") for d in extra)
    tools = _lock_tools()
    plain = tools.requirements(ROOT / "poetry.lock").splitlines()
    with_ray = tools.requirements(ROOT / "poetry.lock", frozenset({"ray"})).splitlines()
    names = lambda lines: {line.split("==")[0] for line in lines}  # noqa: E731
    assert "ray" not in names(plain) and "pyarrow" not in names(plain)
    assert {"ray", "pyarrow", "pandas"} <= names(with_ray)
    assert names(plain) < names(with_ray)
    # jsonschema: a dev dependency that Ray's extra also needs; it must not become extra-only
    assert any(line.startswith("jsonschema==") and ";" not in line for line in plain)
    assert not any("extra ==" in line for line in plain + with_ray)


def test_extra_markers_are_decided_or_refused() -> None:
    tools = _lock_tools()
    assert tools._extra_marker('extra == "ray"', frozenset({"ray"})) == ""
    assert tools._extra_marker('extra == "ray"', frozenset()) is None
    assert tools._extra_marker('python_version < "3.12"', frozenset()) == 'python_version < "3.12"'
    with pytest.raises(SystemExit, match="cannot decide"):
        tools._extra_marker('extra == "ray" and sys_platform == "linux"', frozenset())


def test_both_opencv_wheels_are_locked_at_one_version() -> None:
    """albumentations needs opencv-python-headless, the project opencv-python: both install the
    same ``cv2`` package, whose files are the last-installed wheel's. One version keeps ``cv2``
    whole whichever comes last (the headless build has no GUI, which nothing here uses)."""
    lock = tomllib.loads((ROOT / "poetry.lock").read_text())
    versions = {pkg["name"]: pkg["version"] for pkg in lock["package"]
                if pkg["name"] in {"opencv-python", "opencv-python-headless"}}
    assert len(versions) == 2 and len(set(versions.values())) == 1, versions
    import cv2
    import numpy as np

    assert cv2.__version__ == versions["opencv-python"].rsplit(".", 1)[0]
    img = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    assert cv2.resize(img, (3, 2)).shape == (2, 3, 3)
    assert (cv2.cvtColor(img, cv2.COLOR_BGR2RGB) == img[..., ::-1]).all()


def test_poetry_run_test_passes_on_the_demo() -> None:
    """``leap_test.main`` (the ``test`` script) on the built-in sample with the demo model."""
    env = {**os.environ, "TL_DISABLE_ANALYTICS": "true"}
    env.pop("DOMAIN_GAP_CONFIG", None)
    proc = subprocess.run([sys.executable, "leap_test.py"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "check_dataset (IS_TENSORLEAP_PLATFORM=true): valid" in proc.stdout
    assert "unlabeled" in proc.stdout and "validation" in proc.stdout


def test_poetry_run_test_fails_loudly(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "configs" / "sample.yaml").read_text())
    for domain in config["domains"]:
        domain["root"] = str((ROOT / "configs" / domain["root"]).resolve())
    config["model"]["onnx"] = str(tmp_path / "missing.onnx")
    config["cache_dir"] = str(tmp_path / "cache")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "TL_DISABLE_ANALYTICS": "true", "DOMAIN_GAP_CONFIG": str(path)}
    proc = subprocess.run([sys.executable, "leap_test.py"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert "FAILED" in proc.stderr and "missing.onnx" in proc.stderr


@pytest.mark.parametrize("path", ["leap_binder.py", "leap.yaml", "leap_test.py", "poetry.lock",
                                  "README.md", "models/demo/deeplabv3plus_demo.onnx"])
def test_layout(path: str) -> None:
    assert (ROOT / path).is_file()
