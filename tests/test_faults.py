"""The fault catalogue: every bad input and fault is one clear line, a non-zero exit, and leaves
nothing partial.

Each row of :data:`CASES` damages a private copy of the tiny sample (or the config, the output
folder, the environment), runs ``domain-gap analyze`` in-process and asserts three things: the
exit code; exactly one ``error:`` line on stderr, no traceback, naming the file or the setting;
and nothing partial: the previous run's outputs in ``--out`` are byte for byte what they were,
no staging folder is left beside them and no temporary file in the cache.

The same cases as unit tests live in ``test_data_errors.py``, ``test_config.py``,
``test_storage_gcs.py`` and ``test_pipeline.py``; here they are driven through the command line.
Real signals (SIGINT in a subprocess, SIGKILL) are in ``test_kill.py``.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import os
import re
import shutil
import signal
import socket
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from conftest import standalone_config_dict
from typer.testing import CliRunner

from domain_gap.cli import app
from domain_gap.data import DomainDataset

OUTPUTS = ("report.html", "samples.csv", "summary.json")


@dataclass
class Ctx:
    """What a case may change: the sample copy, the config mapping, --out, the environment."""

    root: Path
    cfg: dict[str, Any]
    out: Path
    cache: Path
    mp: pytest.MonkeyPatch
    val: dict[str, list[str]]
    """Domain → its analysed (val) frames' image paths relative to ``root``, first first."""
    config_text: str | None = None
    """Raw config text instead of ``cfg`` (YAML faults)."""
    config_path: Path | None = None
    args: list[str] = field(default_factory=list)

    def domain(self, name: str) -> dict[str, Any]:
        return next(d for d in self.cfg["domains"] if d["name"] == name)

    def first(self, name: str) -> None:
        """Analyse ``name`` first, so that a fault in its frames is met without extracting
        another domain."""
        self.cfg["domains"].sort(key=lambda d: d["name"] != name)

    def label_of(self, image_rel: str) -> Path:
        if image_rel.startswith("kitti/"):
            return self.root / image_rel.replace("/image_2/", "/semantic/")
        return self.root / image_rel.replace("leftImg8bit/", "gtFine/", 1).replace(
            "_leftImg8bit.png", "_gtFine_labelIds.png"
        )


# ----------------------------------------------------------------------------- helpers


def _png_header(width: int, height: int) -> bytes:
    """A small, complete PNG whose header declares ``width`` x ``height`` (a bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _edit_label(path: Path, edit: Callable[[np.ndarray], np.ndarray]) -> None:
    ids = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert cv2.imwrite(str(path), edit(ids))


def _to_train_ids(ids: np.ndarray) -> np.ndarray:
    from domain_gap.labels import id_to_train_id

    return id_to_train_id(ids)


def _serve(handler: type[BaseHTTPRequestHandler]) -> str:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_port}"


class _TokenRefused(BaseHTTPRequestHandler):
    """An OAuth token endpoint that refuses every grant (a revoked or forged key)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"error": "invalid_grant", "error_description": "bad key"}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _service_account(path: Path, token_uri: str) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "p",
        "private_key_id": "k",
        "private_key": pem,
        "client_email": "fault@p.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }
    path.write_text(json.dumps(info))


def _gs_roots(ctx: Ctx) -> None:
    for d in ctx.cfg["domains"]:
        d["root"] = f"gs://dg-fault/sample/{d['name']}"
    ctx.cfg["gcs_timeout_s"] = 1


def _silent_port(ctx: Ctx) -> int:
    """A port that accepts connections and never answers (the server hangs)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    ctx.mp.setattr(Ctx, "_keep", sock, raising=False)  # closed with the monkeypatch
    return sock.getsockname()[1]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _enospc(*args: Any, **kwargs: Any) -> Any:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# ----------------------------------------------------------------------------- the cases
# Each setup damages ``ctx`` and returns the strings the error line must contain.


def corrupt_png(ctx: Ctx) -> list[str]:
    ctx.first("kitti")
    path = ctx.root / ctx.val["kitti"][0]
    data = bytearray(path.read_bytes())
    data[60:400] = bytes(340)
    path.write_bytes(bytes(data))
    return [str(path)]


def truncated_png(ctx: Ctx) -> list[str]:
    ctx.first("kitti")
    path = ctx.root / ctx.val["kitti"][0]
    path.write_bytes(path.read_bytes()[:-200])
    return [str(path), "truncated"]


def not_an_image(ctx: Ctx) -> list[str]:
    ctx.first("kitti")
    path = ctx.root / ctx.val["kitti"][0]
    path.write_text("this is not a PNG")
    return [str(path), "not a PNG or JPEG"]


def truncated_label(ctx: Ctx) -> list[str]:
    ctx.first("kitti")
    path = ctx.label_of(ctx.val["kitti"][0])
    path.write_bytes(path.read_bytes()[:-100])
    return [str(path), "truncated"]


def missing_label(ctx: Ctx) -> list[str]:
    path = ctx.label_of(ctx.val["kitti"][0])
    path.unlink()
    return [str(path), "missing label"]


def missing_cityscapes_label(ctx: Ctx) -> list[str]:
    path = ctx.label_of(ctx.val["cityscapes"][0])
    path.unlink()
    return [str(path), "missing label"]


def label_size_differs(ctx: Ctx) -> list[str]:
    ctx.first("kitti")
    path = ctx.label_of(ctx.val["kitti"][0])
    _edit_label(path, lambda ids: ids[:-4, :-2])
    return [str(path), "same size"]


def unknown_label_id(ctx: Ctx) -> list[str]:
    ctx.first("kitti")
    path = ctx.label_of(ctx.val["kitti"][0])

    def poke(ids: np.ndarray) -> np.ndarray:
        ids[5:9, 5:9] = 77
        return ids

    _edit_label(path, poke)
    return [str(path), "77"]


def colour_label(ctx: Ctx) -> list[str]:
    ctx.first("kitti")
    path = ctx.label_of(ctx.val["kitti"][0])
    _edit_label(path, lambda ids: np.dstack([ids] * 3))
    return [str(path), "single-channel"]


def broken_vehicle_json(ctx: Ctx) -> list[str]:
    rel = ctx.val["cityscapes"][0].replace("leftImg8bit/", "vehicle/", 1)
    path = ctx.root / rel.replace("_leftImg8bit.png", "_vehicle.json")
    path.write_text("{not json")
    return [str(path), "JSON"]


def vehicle_not_a_number(ctx: Ctx) -> list[str]:
    rel = ctx.val["cityscapes"][0].replace("leftImg8bit/", "vehicle/", 1)
    path = ctx.root / rel.replace("_leftImg8bit.png", "_vehicle.json")
    path.write_text('{"speed": "fast"}')
    return [str(path), "speed"]


def train_ids_as_label_ids_cityscapes(ctx: Ctx) -> list[str]:
    for image in ctx.val["cityscapes"]:
        _edit_label(ctx.label_of(image), _to_train_ids)
    return [str(ctx.label_of(ctx.val["cityscapes"][0])), "trainIds", "label_format"]


def train_ids_as_label_ids_kitti(ctx: Ctx) -> list[str]:
    ctx.first("kitti")
    for image in ctx.val["kitti"]:
        _edit_label(ctx.label_of(image), _to_train_ids)
    return [str(ctx.label_of(ctx.val["kitti"][0])), "label_format: trainIds"]


def label_ids_declared_train_ids(ctx: Ctx) -> list[str]:
    ctx.first("kitti")
    ctx.domain("kitti")["label_format"] = "trainIds"
    return [str(ctx.label_of(ctx.val["kitti"][0])), "trainId"]


def sixteen_bit_holding_8_bit(ctx: Ctx) -> list[str]:
    ctx.first("kitti")
    path = ctx.root / ctx.val["kitti"][0]
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert cv2.imwrite(str(path), image.astype(np.uint16))
    return [str(path), "16-bit", "0..255"]


def decompression_bomb(ctx: Ctx) -> list[str]:
    ctx.first("kitti")
    path = ctx.root / ctx.val["kitti"][0]
    path.write_bytes(_png_header(80_000, 40_000))
    return [str(path), "80000x40000", "image.max_pixels"]


def max_pixels_setting(ctx: Ctx) -> list[str]:
    ctx.first("kitti")
    ctx.cfg["image"]["max_pixels"] = 1000
    return [str(ctx.root / ctx.val["kitti"][0]), "image.max_pixels = 1,000"]


def symlink_loop(ctx: Ctx) -> list[str]:
    city = (ctx.root / ctx.val["cityscapes"][0]).parent
    (city / "again").symlink_to(city.parent)
    return [str(city / "again"), "symlink"]


def folder_linked_twice(ctx: Ctx) -> list[str]:
    city = (ctx.root / ctx.val["cityscapes"][0]).parent
    (city.parent / "twin").symlink_to(city)
    return ["twin", "linked twice"]


def empty_domain(ctx: Ctx) -> list[str]:
    shutil.rmtree(ctx.root / "kitti" / "training" / "image_2")
    return [str(ctx.root / "kitti" / "training" / "image_2"), "no images found"]


def missing_root(ctx: Ctx) -> list[str]:
    ctx.domain("kitti")["root"] = str(ctx.root / "nowhere")
    return [str(ctx.root / "nowhere"), "dataset root not found"]


def unknown_split(ctx: Ctx) -> list[str]:
    ctx.domain("cityscapes")["splits"] = ["validation"]
    return ["validation", "unknown Cityscapes split"]


def missing_split_file(ctx: Ctx) -> list[str]:
    ctx.domain("kitti")["split_files"] = {"val": str(ctx.root / "val.txt")}
    return [str(ctx.root / "val.txt"), "split file not found"]


def missing_metadata_csv(ctx: Ctx) -> list[str]:
    ctx.domain("kitti")["metadata_csv"] = str(ctx.root / "meta.csv")
    return [str(ctx.root / "meta.csv"), "metadata_csv"]


def missing_checkpoint(ctx: Ctx) -> list[str]:
    ctx.cfg["model"]["checkpoint"] = str(ctx.root / "no" / "model.pt")
    return ["model.pt", "checkpoint"]


def num_classes_differs_from_checkpoint(ctx: Ctx) -> list[str]:
    ctx.cfg["model"]["num_classes"] = 5
    return [ctx.cfg["model"]["checkpoint"], "model.num_classes = 5", "19 classes"]


def onnx_not_a_model(ctx: Ctx) -> list[str]:
    path = ctx.root / "model.onnx"
    path.write_text("not an onnx file")
    ctx.cfg["model"]["onnx"] = str(path)
    return [str(path), "not a readable ONNX model", "model.onnx"]


def embedding_dim_differs_from_onnx(ctx: Ctx) -> list[str]:
    onnx = Path(__file__).resolve().parent.parent / "models" / "demo" / "deeplabv3plus_demo.onnx"
    ctx.cfg["model"].update(onnx=str(onnx), embedding_dim=7, num_classes=19)
    return [str(onnx), "model.embedding_dim = 7"]


def config_missing(ctx: Ctx) -> list[str]:
    ctx.config_path = ctx.root / "missing.yaml"
    return ["missing.yaml", "cannot read config"]


def config_not_yaml(ctx: Ctx) -> list[str]:
    ctx.config_text = "domains: [\n  - {name: a"
    return ["config.yaml", "not valid YAML"]


def config_not_a_mapping(ctx: Ctx) -> list[str]:
    ctx.config_text = "- just\n- a list\n"
    return ["config.yaml", "expected a mapping"]


def config_unknown_key(ctx: Ctx) -> list[str]:
    ctx.cfg["model"]["batchsize"] = 4
    return ["config.yaml", "model.batchsize", "unknown key"]


def bool_batch_size(ctx: Ctx) -> list[str]:
    ctx.cfg["model"]["batch_size"] = True
    return ["model.batch_size", "not a boolean"]


def bool_seed(ctx: Ctx) -> list[str]:
    ctx.cfg["seed"] = False
    return ["seed", "not a boolean"]


def bool_in_mean(ctx: Ctx) -> list[str]:
    ctx.cfg["image"]["mean"] = [True, 0.5, 0.5]
    return ["image.mean", "not a boolean"]


def bool_permutations(ctx: Ctx) -> list[str]:
    ctx.cfg["analysis"]["permutations"] = True
    return ["analysis.permutations", "not a boolean"]


def bool_max_samples(ctx: Ctx) -> list[str]:
    ctx.domain("kitti")["max_samples"] = True
    return ["domains[1].max_samples", "not a boolean"]


def huge_input_size(ctx: Ctx) -> list[str]:
    ctx.cfg["image"].update(height=40_000, width=80_000)
    return ["image.height", "8192"]


def zero_std(ctx: Ctx) -> list[str]:
    ctx.cfg["image"]["std"] = [0.2, 0.0, 0.2]
    return ["image.std", "std must be > 0"]


def duplicate_domains(ctx: Ctx) -> list[str]:
    ctx.domain("kitti")["name"] = "cityscapes"
    return ["config.yaml", "unique"]


def one_domain(ctx: Ctx) -> list[str]:
    ctx.cfg["domains"] = ctx.cfg["domains"][:1]
    return ["domains", "at least two domains"]


def unknown_source(ctx: Ctx) -> list[str]:
    ctx.cfg["analysis"]["source"] = "gta5"
    return ["analysis.source", "gta5"]


def color_labels_for_cityscapes(ctx: Ctx) -> list[str]:
    ctx.domain("cityscapes")["label_format"] = "color"
    return ["domains[0]", "label_format"]


def splits_missing(ctx: Ctx) -> list[str]:
    del ctx.domain("kitti")["splits"]
    return ["domains[1]", "splits"]


def mitigation_unknown_option(ctx: Ctx) -> list[str]:
    ctx.cfg["analysis"]["mitigations"] = [{"kind": "fourier_amplitude", "options": {"bta": 1}}]
    return ["analysis.mitigations[0]", "bta"]


def gcs_timeout_zero(ctx: Ctx) -> list[str]:
    ctx.cfg["gcs_timeout_s"] = 0
    return ["gcs_timeout_s", "greater than 0"]


def out_is_a_file(ctx: Ctx) -> list[str]:
    shutil.rmtree(ctx.out)
    ctx.out.write_text("keep me")
    return [str(ctx.out), "--out is a file"]


def out_holds_other_files(ctx: Ctx) -> list[str]:
    (ctx.out / "notes.txt").write_text("mine")
    return [str(ctx.out), "notes.txt"]


def out_read_only(ctx: Ctx) -> list[str]:
    import tempfile

    real = tempfile.mkstemp

    def mkstemp(*args: Any, dir: Any = None, **kwargs: Any) -> Any:
        if dir is not None and Path(dir) in (ctx.out, ctx.out.parent):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*args, dir=dir, **kwargs)

    ctx.mp.setattr(tempfile, "mkstemp", mkstemp)
    return [str(ctx.out), "cannot be written", "Read-only file system"]


def cache_dir_is_a_file(ctx: Ctx) -> list[str]:
    path = ctx.root / "cache-file"
    path.write_text("x")
    ctx.cfg["cache_dir"] = str(path)
    return [str(path), "cache_dir is a file"]


def disk_full_at_output(ctx: Ctx) -> list[str]:
    import domain_gap.outputs as outputs

    real_open = open

    def full_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "w" in mode and ".staging-" in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(path, mode, *args, **kwargs)

    ctx.mp.setattr(outputs, "open", full_open, raising=False)
    return [str(ctx.out / "samples.csv"), "no space left", "MB free", "needs"]


def disk_full_in_cache(ctx: Ctx) -> list[str]:
    import domain_gap.atomic as atomic

    ctx.mp.setattr(atomic.os, "replace", _enospc)
    return [str(ctx.cache), "no space left", "MB free"]


def interrupted_in_figures(ctx: Ctx) -> list[str]:
    import domain_gap.report.assets as assets

    def interrupt(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    ctx.mp.setattr(assets, "build_assets", interrupt)
    return ["interrupted"]


def interrupt_swallowed_in_figures(ctx: Ctx) -> list[str]:
    """A library that catches KeyboardInterrupt must not turn Ctrl-C into exit 0."""
    import domain_gap.report.assets as assets

    real = assets.build_assets

    def swallowing(*args: Any, **kwargs: Any) -> Any:
        with contextlib.suppress(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
        return real(*args, **kwargs)

    ctx.mp.setattr(assets, "build_assets", swallowing)
    return ["interrupted"]


def gs_unreachable(ctx: Ctx) -> list[str]:
    _gs_roots(ctx)
    ctx.mp.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{_closed_port()}")
    return ["gs://dg-fault/sample/cityscapes", "host unreachable", "1 s"]


def gs_timeout(ctx: Ctx) -> list[str]:
    _gs_roots(ctx)
    ctx.mp.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{_silent_port(ctx)}")
    return ["gs://dg-fault/sample/cityscapes", "timeout", "gcs_timeout_s"]


def gs_credentials_unparseable(ctx: Ctx) -> list[str]:
    _gs_roots(ctx)
    path = ctx.root / "key.json"
    path.write_text("{this is not json")
    ctx.mp.delenv("STORAGE_EMULATOR_HOST", raising=False)
    ctx.mp.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    return [str(path), "cannot be parsed"]


def gs_auth_failed(ctx: Ctx) -> list[str]:
    _gs_roots(ctx)
    path = ctx.root / "key.json"
    _service_account(path, _serve(_TokenRefused) + "/token")
    ctx.mp.delenv("STORAGE_EMULATOR_HOST", raising=False)
    ctx.mp.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    return ["gs://dg-fault/sample/cityscapes", "authentication failed"]


BAD_INPUT, IO_FAILURE, INTERRUPTED = 2, 1, 130
CASES: list[tuple[Callable[[Ctx], list[str]], int]] = [
    (corrupt_png, BAD_INPUT),
    (truncated_png, BAD_INPUT),
    (not_an_image, BAD_INPUT),
    (truncated_label, BAD_INPUT),
    (missing_label, BAD_INPUT),
    (missing_cityscapes_label, BAD_INPUT),
    (label_size_differs, BAD_INPUT),
    (unknown_label_id, BAD_INPUT),
    (colour_label, BAD_INPUT),
    (broken_vehicle_json, BAD_INPUT),
    (vehicle_not_a_number, BAD_INPUT),
    (train_ids_as_label_ids_cityscapes, BAD_INPUT),
    (train_ids_as_label_ids_kitti, BAD_INPUT),
    (label_ids_declared_train_ids, BAD_INPUT),
    (sixteen_bit_holding_8_bit, BAD_INPUT),
    (decompression_bomb, BAD_INPUT),
    (max_pixels_setting, BAD_INPUT),
    (symlink_loop, BAD_INPUT),
    (folder_linked_twice, BAD_INPUT),
    (empty_domain, BAD_INPUT),
    (missing_root, BAD_INPUT),
    (unknown_split, BAD_INPUT),
    (missing_split_file, BAD_INPUT),
    (missing_metadata_csv, BAD_INPUT),
    (missing_checkpoint, BAD_INPUT),
    (num_classes_differs_from_checkpoint, BAD_INPUT),
    (onnx_not_a_model, BAD_INPUT),
    (embedding_dim_differs_from_onnx, BAD_INPUT),
    (config_missing, BAD_INPUT),
    (config_not_yaml, BAD_INPUT),
    (config_not_a_mapping, BAD_INPUT),
    (config_unknown_key, BAD_INPUT),
    (bool_batch_size, BAD_INPUT),
    (bool_seed, BAD_INPUT),
    (bool_in_mean, BAD_INPUT),
    (bool_permutations, BAD_INPUT),
    (bool_max_samples, BAD_INPUT),
    (huge_input_size, BAD_INPUT),
    (zero_std, BAD_INPUT),
    (duplicate_domains, BAD_INPUT),
    (one_domain, BAD_INPUT),
    (unknown_source, BAD_INPUT),
    (color_labels_for_cityscapes, BAD_INPUT),
    (splits_missing, BAD_INPUT),
    (mitigation_unknown_option, BAD_INPUT),
    (gcs_timeout_zero, BAD_INPUT),
    (out_is_a_file, BAD_INPUT),
    (out_holds_other_files, BAD_INPUT),
    (out_read_only, BAD_INPUT),
    (cache_dir_is_a_file, BAD_INPUT),
    (disk_full_at_output, IO_FAILURE),
    (disk_full_in_cache, IO_FAILURE),
    (interrupted_in_figures, INTERRUPTED),
    (interrupt_swallowed_in_figures, INTERRUPTED),
    (gs_unreachable, BAD_INPUT),
    (gs_timeout, BAD_INPUT),
    (gs_credentials_unparseable, BAD_INPUT),
    (gs_auth_failed, BAD_INPUT),
]


# ----------------------------------------------------------------------------- the runner


def _config(root: Path, ckpt: Path, cache: Path) -> dict[str, Any]:
    return standalone_config_dict(root, ckpt, cache, batch_size=4)


def _analyze(config: Path, out: Path) -> Any:
    return CliRunner().invoke(app, ["analyze", "--config", str(config), "--out", str(out)])


def _snapshot(folder: Path) -> dict[str, bytes]:
    if not folder.is_dir():
        return {"<file>": folder.read_bytes()} if folder.exists() else {}
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def good(
    tiny_sample: Path, tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """One good run: its outputs (to put in every case's --out) and the val frames."""
    base = tmp_path_factory.mktemp("faults")
    cfg = _config(tiny_sample, tiny_ckpt, base / "cache")
    path = base / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = _analyze(path, base / "out")
    assert result.exit_code == 0, result.stderr
    dataset = DomainDataset(_parse(cfg, path))
    val = {
        name: [
            Path(r.image_path).relative_to(tiny_sample).as_posix()
            for r in dataset.select(name, "val")
        ]
        for name in ("cityscapes", "kitti")
    }
    yield {"out": base / "out", "cfg": cfg, "val": val, "counts": dataset.counts()}


def _parse(cfg: dict[str, Any], path: Path) -> Any:
    from domain_gap.config import parse_config

    return parse_config(copy.deepcopy(cfg), source=str(path), base_dir=path.parent)


def test_the_catalogue_has_at_least_40_distinct_cases() -> None:
    names = [fn.__name__ for fn, _ in CASES]
    assert len(names) >= 40 and len(set(names)) == len(names)


@pytest.mark.parametrize(("setup", "code"), CASES, ids=[fn.__name__ for fn, _ in CASES])
def test_fault(
    setup: Callable[[Ctx], list[str]],
    code: int,
    good: dict[str, Any],
    tiny_sample: Path,
    tiny_ckpt: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "sample"
    shutil.copytree(tiny_sample, root, symlinks=True)
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    shutil.copytree(good["out"], out)
    ctx = Ctx(root, _config(root, tiny_ckpt, cache), out, cache, monkeypatch, good["val"])
    expected = setup(ctx)
    before = _snapshot(out)
    config = ctx.config_path or tmp_path / "config.yaml"
    if ctx.config_path is None:
        config.write_text(ctx.config_text or yaml.safe_dump(ctx.cfg))
    result = _analyze(config, out)
    monkeypatch.undo()

    assert result.exit_code == code, result.stderr
    assert "Traceback" not in result.stderr
    assert isinstance(result.exception, SystemExit), result.exception
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for text in expected:
        assert text in errors[0], (text, errors[0])
    # nothing partial: the old outputs as they were, no staging folder, no temporary file
    assert _snapshot(out) == before
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]
    assert not [p for p in cache.rglob("*") if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- what used to be
# silently wrong, now right


def test_a_symlinked_city_folder_is_indexed(sample_copy: Path, tmp_path: Path, config_for) -> None:
    before = DomainDataset(config_for(sample_copy)).counts()
    val = sample_copy / "cityscapes" / "leftImg8bit" / "val"
    city = sorted(val.iterdir())[0]
    moved = tmp_path / "other-disk" / city.name
    moved.parent.mkdir()
    shutil.move(str(city), moved)
    city.symlink_to(moved)
    assert DomainDataset(config_for(sample_copy)).counts() == before


def test_train_ids_labels_read_with_label_format_train_ids(sample_copy: Path, config_for) -> None:
    dataset = DomainDataset(config_for(sample_copy))
    record = dataset.select("kitti", "val")[0]
    expected = dataset.load(record).label
    for label in (sample_copy / "kitti" / "training" / "semantic").iterdir():
        _edit_label(label, _to_train_ids)
    config = config_for(sample_copy, kitti={"label_format": "trainIds"})
    dataset = DomainDataset(config)
    np.testing.assert_array_equal(dataset.load(dataset.select("kitti", "val")[0]).label, expected)


def test_cityscapes_label_train_ids_files_are_preferred(sample_copy: Path, config_for) -> None:
    gt = sample_copy / "cityscapes" / "gtFine"
    for label in list(gt.rglob("*_gtFine_labelIds.png")):
        ids = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
        target = label.with_name(label.name.replace("_labelIds", "_labelTrainIds"))
        assert cv2.imwrite(str(target), _to_train_ids(ids))
    plain = DomainDataset(config_for(sample_copy))
    config = config_for(sample_copy, cityscapes={"label_format": "trainIds"})
    train = DomainDataset(config)
    a, b = plain.select("cityscapes", "val")[0], train.select("cityscapes", "val")[0]
    assert b.label_path.endswith("_gtFine_labelTrainIds.png")
    np.testing.assert_array_equal(plain.load(a).label, train.load(b).label)


def test_a_16_bit_image_is_read_by_its_range() -> None:
    from domain_gap.data.decode import decode_image, header_size

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)
    ok, png16 = cv2.imencode(".png", rgb[..., ::-1].astype(np.uint16) * 257)
    assert ok
    np.testing.assert_array_equal(decode_image(png16.tobytes(), "x.png"), rgb)
    ok, jpeg = cv2.imencode(".jpg", rgb)
    assert ok and header_size(jpeg.tobytes()) == (10, 6)
    with pytest.warns(UserWarning, match="constant image"):
        ok, black = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))
        decode_image(black.tobytes(), "black.png")


def test_the_run_id_ties_the_three_outputs_and_ignores_paths(good: dict[str, Any]) -> None:
    import csv
    import io

    from domain_gap.outputs import run_id

    out = good["out"]
    summary = json.loads((out / "summary.json").read_text())
    rid = summary["run_id"]
    assert re.fullmatch(r"[0-9a-f]{16}", rid)
    rows = list(csv.DictReader(io.StringIO((out / "samples.csv").read_text())))
    assert rows and {r["run_id"] for r in rows} == {rid}
    html = (out / "report.html").read_text()
    assert f'<meta name="domain-gap-run-id" content="{rid}">' in html
    assert summary["frames"] == good["counts"]  # as the index counts them
    assert sum(summary["frames"]["cityscapes"].values()) == len(
        list((Path(good["cfg"]["domains"][0]["root"]) / "leftImg8bit").rglob("*.png"))
    )
    cfg = {"seed": 0, "cache_dir": "/a", "domains": [{"name": "k", "root": "/x"}]}
    moved = {"seed": 0, "cache_dir": "/b", "domains": [{"name": "k", "root": "/y"}]}
    arrays = {"loss": np.arange(3.0)}
    assert run_id(cfg, "m", arrays, "1") == run_id(moved, "m", arrays, "1")
    assert run_id(cfg, "m", arrays, "1") != run_id({**cfg, "seed": 1}, "m", arrays, "1")
    assert run_id(cfg, "m", arrays, "1") != run_id(cfg, "m", {"loss": np.arange(4.0)}, "1")
    assert run_id(cfg, "m", arrays, "1") != run_id(cfg, "other", arrays, "1")
