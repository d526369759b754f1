"""gs:// roots against a local Cloud Storage emulator (gcp-storage-emulator, started here).

A small loopback proxy of our own sits between the client and the emulator: it counts the
requests (to prove cached reads never reach the server) and answers 403 for one object, since
the emulator has no IAM. Our code and google's client run unmodified.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

from domain_gap.data import DataError, DomainDataset
from domain_gap.data.storage import GCSStorage, open_storage

BUCKET = "dg-test"
PREFIX = "datasets/sample"
DENIED = f"{PREFIX}/kitti/training/image_2/000004_10.png"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proxy:
    """Forwards to the emulator, logs (method, decoded path), denies objects in ``deny``."""

    upstream: tuple[str, int]
    log: list[tuple[str, str]] = field(default_factory=list)
    deny: set[str] = field(default_factory=set)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                path = unquote(urlsplit(self.path).path)
                proxy.log.append((self.command, path))
                if any(path.endswith(f"/o/{name}") for name in proxy.deny):
                    error = {
                        "code": 403,
                        "message": "caller does not have storage.objects.get access",
                        "errors": [{"domain": "global", "reason": "forbidden", "message": "no"}],
                    }
                    payload = json.dumps({"error": error}).encode()
                    self._send(403, [("Content-Type", "application/json")], payload)
                    return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=10)
                skip = ("host", "connection", "transfer-encoding")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                self._send(resp.status, resp.getheaders(), resp.read())
                conn.close()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def media_gets(self) -> list[str]:
        return [p for m, p in self.log if m == "GET" and p.startswith("/download/")]


@pytest.fixture(scope="module")
def gcs(tiny_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """Emulator with the tiny sample uploaded under gs://dg-test/datasets/sample, behind a proxy."""
    from gcp_storage_emulator.server import create_server
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    emu_port, proxy_port = _free_port(), _free_port()
    server = create_server("127.0.0.1", emu_port, in_memory=True)
    server.start()
    proxy = Proxy(("127.0.0.1", emu_port))
    httpd = ThreadingHTTPServer(("127.0.0.1", proxy_port), proxy.handler())
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{emu_port}")
        client = storage.Client(project="test", credentials=AnonymousCredentials())
        bucket = client.create_bucket(BUCKET)
        for path in sorted(tiny_sample.rglob("*")):
            if path.is_file():
                rel = path.relative_to(tiny_sample).as_posix()
                bucket.blob(f"{PREFIX}/{rel}").upload_from_filename(str(path))
        mp.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{proxy_port}")
        mp.setenv("DOMAIN_GAP_CACHE", str(tmp_path_factory.mktemp("gcs_cache")))
        proxy.deny.add(DENIED)
        yield proxy
    httpd.shutdown()
    httpd.server_close()
    server.stop()


@pytest.fixture
def cache(gcs: Proxy) -> Path:
    return Path(os.environ["DOMAIN_GAP_CACHE"])


def _gs_config(config_for, tmp_path: Path):
    root = f"gs://{BUCKET}/{PREFIX}"
    return config_for(
        tmp_path,
        cityscapes={"root": f"{root}/cityscapes"},
        kitti={"root": f"{root}/kitti"},
    )


def test_index_and_load_through_gs(
    gcs: Proxy, cache: Path, tiny_config, config_for, tmp_path
) -> None:
    remote = DomainDataset(_gs_config(config_for, tmp_path))
    local = DomainDataset(tiny_config)
    strip = [
        (r.sample_id, r.subset, r.group, r.file_name, r.label_path is None) for r in local.records
    ]
    assert [
        (r.sample_id, r.subset, r.group, r.file_name, r.label_path is None) for r in remote.records
    ] == strip
    assert all(r.image_path.startswith(f"gs://{BUCKET}/{PREFIX}/") for r in remote.records)
    for sample_id in (
        "cityscapes/leftImg8bit/val/lindau/lindau_000001_000019_leftImg8bit.png",
        "kitti/training/image_2/000002_10.png",
    ):
        (r_remote,) = [r for r in remote.records if r.sample_id == sample_id]
        (r_local,) = [r for r in local.records if r.sample_id == sample_id]
        a, b = remote.prepare(r_remote), local.prepare(r_local)
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.label, b.label)
        assert a.vehicle == b.vehicle and a.orig_hw == b.orig_hw


def test_objects_are_cached_and_second_read_stays_local(
    gcs: Proxy, cache: Path, tiny_sample: Path
) -> None:
    storage = open_storage(f"gs://{BUCKET}/{PREFIX}/kitti")
    rel = "training/semantic/000006_10.png"
    storage.list("training")
    before = len(gcs.media_gets())
    first = storage.read_bytes(rel)
    assert len(gcs.media_gets()) == before + 1
    cached = cache / BUCKET / PREFIX / "kitti" / rel
    assert cached.read_bytes() == first == (tiny_sample / "kitti" / rel).read_bytes()
    n_requests = len(gcs.log)
    assert storage.read_bytes(rel) == first
    fresh = open_storage(f"gs://{BUCKET}/{PREFIX}/kitti")  # a new process would do the same
    assert fresh.read_bytes(rel) == first
    assert len(gcs.log) == n_requests  # neither read reached the server
    assert not list(cache.rglob(".*.tmp"))


def test_missing_object_names_the_uri(gcs: Proxy, cache: Path) -> None:
    storage = open_storage(f"gs://{BUCKET}/{PREFIX}/kitti")
    uri = f"gs://{BUCKET}/{PREFIX}/kitti/training/image_2/999999_10.png"
    with pytest.raises(DataError, match=re.escape(uri) + ".*not found"):
        storage.read_bytes("training/image_2/999999_10.png")
    assert not [p for p in cache.rglob("*999999*")]


def test_denied_object_names_the_uri_and_caches_nothing(
    gcs: Proxy, cache: Path, config_for, tmp_path: Path
) -> None:
    ds = DomainDataset(_gs_config(config_for, tmp_path), domains=["kitti"])
    (record,) = [r for r in ds.records if r.image_path == f"gs://{BUCKET}/{DENIED}"]
    with pytest.raises(DataError) as info:
        ds.load(record)
    message = str(info.value)
    assert f"gs://{BUCKET}/{DENIED}" in message and "denied (403)" in message
    assert not (cache / BUCKET / DENIED).exists()
    assert not [p for p in cache.rglob("*000004_10*")]


def test_missing_bucket_and_empty_prefix(
    gcs: Proxy, cache: Path, config_for, tmp_path: Path
) -> None:
    with pytest.raises(DataError, match=re.escape("gs://no-such-bucket/x/")):
        open_storage("gs://no-such-bucket/x").list("")
    cfg = config_for(tmp_path, kitti={"root": f"gs://{BUCKET}/nothing/here"})
    with pytest.raises(DataError, match=re.escape(f"gs://{BUCKET}/nothing/here/training/image_2")):
        DomainDataset(cfg, domains=["kitti"])


def test_bad_gs_uris() -> None:
    with pytest.raises(DataError, match="bucket"):
        GCSStorage("gs://", "/tmp")
    with pytest.raises(DataError, match="relative"):
        GCSStorage(f"gs://{BUCKET}/a", "/tmp").read_bytes("../b")


def test_missing_credentials_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("STORAGE_EMULATOR_HOST", raising=False)
        mp.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
        with pytest.raises(DataError, match="credentials"):
            open_storage(f"gs://{BUCKET}/x", tmp_path).list("")
