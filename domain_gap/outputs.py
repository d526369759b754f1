"""The output stage: ``samples.csv``, ``report.html`` and ``summary.json`` replaced as one.

Before any work starts, :func:`check_out` and :func:`check_cache_dir` make sure the folders can
be written (one line naming the path otherwise). At the end, :func:`write_outputs` writes the
three files into a staging folder beside the output and swaps it in as one step
(:func:`domain_gap.atomic.replace_folder`), so that the output folder always holds three files
of one run. Every file repeats the run's :func:`run_id`, a hash of what determines the result
(settings, data as measured, model, code and schema version) and of nothing else: no timings,
no folders of this machine, so that a rerun writes the same bytes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from domain_gap import __version__, interrupt
from domain_gap.atomic import disk_full, replace_folder

RESULT_NAMES = ("report.html", "samples.csv", "summary.json")
"""The results: the same bytes from every run with the same settings, model and data."""
TIMINGS = "timings.json"
"""Seconds per stage: a fact of this run on this machine, kept apart from the results."""
OUTPUT_NAMES = (*RESULT_NAMES, TIMINGS)
STAGING = ".{name}.staging-"
"""Prefix of the staging folder beside the output (left-overs of a killed run are removed)."""
PATH_KEYS = frozenset(
    {"root", "unlabeled_root", "metadata_csv", "split_files", "checkpoint", "onnx", "cache_dir"}
    | {"base_dir", "execution"}
)
"""Config keys that say where things are (or how the run was executed), not what the result is:
left out of the run id (the data and the model enter it by their content)."""
RUN_ID_LEN = 16


class OutputError(ValueError):
    """The output or cache folder cannot be used (one line naming it)."""


def _probe(folder: Path, what: str) -> None:
    """Create and remove a file in ``folder``: the only sure test of 'writable'."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".domain-gap-probe-", dir=folder)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OutputError(f"{folder}: {what} cannot be written ({reason})") from None
    os.close(fd)
    os.unlink(probe)


def _nearest_folder(path: Path, what: str) -> Path:
    """``path`` or its nearest existing ancestor, which must be a folder."""
    probe = path
    while not probe.exists():
        if probe == probe.parent:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{probe}: {what} is inside a file; expected a folder")
    return probe


def check_cache_dir(path: str | Path) -> None:
    """``cache_dir`` is a folder (or can be made) that can be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: cache_dir is a file; expected a folder (or a new path)")
    _probe(_nearest_folder(path, "cache_dir"), "cache_dir")


def check_out(out: str | Path) -> None:
    """``--out`` is a new folder, an empty one, or one a previous run wrote, and it (and the
    folder beside it, where the staging happens) can be written. Removes the staging folders
    a killed run left beside it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        names = ", ".join(OUTPUT_NAMES)
        raise OutputError(f"{out}: --out is a file; expected a folder for {names}")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in OUTPUT_NAMES)
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise OutputError(
                f"{out}: --out holds other files ({shown}); expected a new or empty folder, or "
                "one that a previous run wrote (it is replaced as a whole)"
            )
        _probe(out, "--out")
    parent = out.parent if out.parent != out else out
    _probe(_nearest_folder(parent, "--out"), "the folder of --out")
    if parent.is_dir():
        for stale in parent.glob(STAGING.format(name=out.name) + "*"):
            shutil.rmtree(stale, ignore_errors=True)


def config_identity(config_json: Mapping[str, Any]) -> Any:
    """The config's settings less :data:`PATH_KEYS` (recursively)."""

    def strip(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: strip(v) for k, v in value.items() if k not in PATH_KEYS}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(config_json)


def _digest_arrays(digest: Any, arrays: Mapping[str, np.ndarray]) -> None:
    for name in sorted(arrays):
        arr = np.asarray(arrays[name])
        digest.update(f"{name}:{arr.dtype.str}:{arr.shape}".encode())
        if arr.dtype.kind in "OUS":
            digest.update("\x00".join(str(v) for v in arr.ravel()).encode())
        else:
            digest.update(np.ascontiguousarray(arr).tobytes())


def run_id(
    config_json: Mapping[str, Any],
    model_sha256: str,
    arrays: Mapping[str, np.ndarray],
    schema_version: str,
) -> str:
    """A short hex hash of the settings (:func:`config_identity`), the model's sha256, the
    per-sample records the statistics read (``arrays``: sample ids, embeddings, losses ...: the
    data as measured) and the code and schema versions."""
    digest = hashlib.sha256()
    head = {
        "config": config_identity(config_json),
        "model": model_sha256,
        "code": __version__,
        "schema": schema_version,
    }
    digest.update(json.dumps(head, sort_keys=True).encode())
    _digest_arrays(digest, arrays)
    return digest.hexdigest()[:RUN_ID_LEN]


def write_outputs(out: str | Path, files: Mapping[str, bytes]) -> dict[str, Path]:
    """Write ``files`` (name → bytes) into a staging folder beside ``out``, then swap it in.

    A full disk is one line naming the file, the space needed and the space free; the old
    outputs are then untouched. A Ctrl-C that arrived earlier (even one some library
    swallowed) stops here, before the swap."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING.format(name=out.name), dir=out.parent))
    needed = sum(len(b) for b in files.values())
    try:
        for name, data in files.items():
            path = staging / name
            try:
                with open(path, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise disk_full(out / name, needed) from None
                raise
        os.chmod(staging, 0o777 & ~_umask())
        interrupt.check()
        replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {name: out / name for name in files}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
