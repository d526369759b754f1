"""Read-only access to a dataset root: a local folder or ``gs://bucket/prefix``.

Both kinds answer the same four questions with paths relative to the root (``/``-separated):
``list(prefix)``, ``read_bytes(rel)``, ``exists(rel)`` and ``describe(rel)`` (the full local path
or ``gs://`` URI, for messages). Google Cloud Storage objects are cached on disk, written
atomically, so that a second read never reaches the server. Credentials come from the
environment (Application Default Credentials / ``GOOGLE_APPLICATION_CREDENTIALS``) and are
never logged or put in messages; with ``STORAGE_EMULATOR_HOST`` set, an anonymous client talks to
the emulator.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path, PurePosixPath

from domain_gap.atomic import write_atomic
from domain_gap.data.errors import DataError

CACHE_ENV = "DOMAIN_GAP_CACHE"
DEFAULT_CACHE = Path("~/.cache/domain-gap/gcs")
EMULATOR_PROJECT = "domain-gap-emulator"
DEFAULT_TIMEOUT_S = 30.0
"""Default bound on one gs:// request, retries included (config ``gcs_timeout_s``)."""
CREDENTIALS_ENV = "GOOGLE_APPLICATION_CREDENTIALS"


def _clean_rel(rel: str) -> str:
    """Normalise a relative path and refuse ones that escape the root."""
    parts = [p for p in PurePosixPath(rel.replace("\\", "/")).parts if p not in ("", ".")]
    if any(p == ".." for p in parts) or rel.startswith("/"):
        raise DataError(f"{rel}: expected a path relative to the dataset root, without '..'")
    return "/".join(parts)


class Storage(ABC):
    """A dataset root; every path argument is relative to it."""

    location: str
    """The root as given: a local folder path or ``gs://bucket/prefix``."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Every file below ``prefix`` (relative paths, sorted); [] when there is none."""

    @abstractmethod
    def read_bytes(self, rel: str) -> bytes:
        """The file's bytes; DataError naming :meth:`describe` when missing or unreadable."""

    @abstractmethod
    def exists(self, rel: str) -> bool:
        """Whether the file exists."""

    def describe(self, rel: str) -> str:
        """Full location of ``rel`` (local path or ``gs://`` URI) for messages and records."""
        rel = _clean_rel(rel)
        return f"{self.location.rstrip('/')}/{rel}" if rel else self.location


def _guard_loops(dirpath: str, dirs: list[str], seen: dict[tuple[int, int], str]) -> None:
    """Refuse a folder (by device and inode) that the walk reached before."""
    if not seen:  # the walk's top folder
        st = os.stat(dirpath)
        seen[(st.st_dev, st.st_ino)] = dirpath
    for name in dirs:
        path = os.path.join(dirpath, name)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise DataError(f"{path}: cannot read folder ({exc.strerror or exc})") from None
        key = (st.st_dev, st.st_ino)
        if key in seen:
            raise DataError(
                f"{path}: symlink to a folder already read as {seen[key]} (a loop, or the same "
                "folder linked twice); expected every folder once"
            )
        seen[key] = path


class LocalStorage(Storage):
    """A folder on the local disk."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self.location = str(self.root)

    def describe(self, rel: str) -> str:
        return str(self.root / _clean_rel(rel))

    def list(self, prefix: str = "") -> list[str]:
        """Every file below ``prefix``, following folder symlinks (datasets spread over disks);
        DataError on a symlink loop or a folder reached twice (its frames would count twice)."""
        base = self.root / _clean_rel(prefix)
        if base.is_file():
            return [_clean_rel(prefix)]
        out = []
        seen: dict[tuple[int, int], str] = {}
        for dirpath, dirs, files in os.walk(base, followlinks=True):
            _guard_loops(dirpath, dirs, seen)
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in files:
                if not name.startswith("."):  # temp files of an atomic write, OS litter
                    out.append(name if rel_dir == "." else f"{rel_dir}/{name}")
        return sorted(out)

    def read_bytes(self, rel: str) -> bytes:
        path = self.root / _clean_rel(rel)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise DataError(f"{path}: file not found") from None
        except OSError as exc:
            raise DataError(f"{path}: cannot read file ({exc.strerror or exc})") from None

    def exists(self, rel: str) -> bool:
        return (self.root / _clean_rel(rel)).is_file()


def _gcs_client():
    """A google-cloud-storage client from the environment (never echoing credentials)."""
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=EMULATOR_PROJECT, credentials=AnonymousCredentials())
    try:
        return storage.Client()
    except DefaultCredentialsError:
        named = os.environ.get(CREDENTIALS_ENV)
        if named and Path(named).is_file():
            raise DataError(
                f"{named}: the credential file named by {CREDENTIALS_ENV} cannot be parsed; "
                "expected a service-account or authorized-user JSON key"
            ) from None
        if named:
            raise DataError(
                f"{named}: the credential file named by {CREDENTIALS_ENV} does not exist"
            ) from None
        raise DataError(
            "gs://: no Google Cloud credentials found; expected Application Default Credentials "
            f"(`gcloud auth application-default login`) or {CREDENTIALS_ENV}"
        ) from None


def _network_reason(exc: BaseException | None) -> str | None:
    """'timeout' or 'host unreachable' when ``exc`` (or what caused it) is a network failure."""
    import requests

    while exc is not None:
        if isinstance(exc, requests.Timeout | TimeoutError):
            return "timeout"
        if isinstance(exc, requests.ConnectionError | ConnectionError):
            return "host unreachable"
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return None


def _failures() -> tuple[type[BaseException], ...]:
    """What a gs:// call can raise: API, auth and network errors (each becomes
    :meth:`GCSStorage._fail`'s one line)."""
    import requests
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError

    return (GoogleAPIError, GoogleAuthError, requests.RequestException, ConnectionError)


class GCSStorage(Storage):
    """``gs://bucket/prefix`` read through google-cloud-storage, with an on-disk cache."""

    def __init__(
        self,
        root: str,
        cache_dir: str | Path | None = None,
        client=None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if not root.startswith("gs://"):
            raise DataError(f"{root}: expected a gs://bucket/prefix URI")
        bucket, _, prefix = root[len("gs://") :].partition("/")
        if not bucket:
            raise DataError(f"{root}: expected a bucket name after gs://")
        self.bucket_name = bucket
        self.prefix = _clean_rel(prefix)
        self.location = f"gs://{bucket}/{self.prefix}" if self.prefix else f"gs://{bucket}"
        self.cache_root = Path(cache_dir).expanduser() / bucket
        self._client = client
        self._client_pid = os.getpid()
        self._sizes: dict[str, int] = {}  # object sizes seen while listing
        self.timeout_s = float(timeout_s)

    def _call(self) -> dict:
        """Keyword arguments that bound one request, its retries included, by ``timeout_s``."""
        from google.cloud.storage.retry import DEFAULT_RETRY

        return {"retry": DEFAULT_RETRY.with_deadline(self.timeout_s), "timeout": self.timeout_s}

    @property
    def client(self):
        # One client per process: HTTP sessions must not be shared across fork (data workers).
        if self._client is None or self._client_pid != os.getpid():
            self._client = _gcs_client()
            self._client_pid = os.getpid()
        return self._client

    def _object(self, rel: str) -> str:
        rel = _clean_rel(rel)
        return f"{self.prefix}/{rel}" if self.prefix and rel else (self.prefix or rel)

    def _cache_path(self, rel: str) -> Path:
        return self.cache_root / self._object(rel)

    def _fail(self, exc: Exception, uri: str) -> DataError:
        """A DataError for an API failure: names the URI and the status, no credentials."""
        from google.api_core import exceptions as gexc
        from google.auth import exceptions as aexc

        if isinstance(exc, aexc.RefreshError):
            return DataError(
                f"{uri}: authentication failed (the credentials were refused when exchanged for "
                "a token); expected valid credentials for this project"
            )
        reason = _network_reason(exc)
        if reason is not None:
            host = os.environ.get("STORAGE_EMULATOR_HOST") or "storage.googleapis.com"
            return DataError(
                f"{uri}: {reason} reaching {host} (gave up after {self.timeout_s:g} s, "
                "gcs_timeout_s); expected network access to Cloud Storage"
            )
        if isinstance(exc, gexc.NotFound):
            return DataError(f"{uri}: object or bucket not found (404)")
        if isinstance(exc, gexc.Forbidden | gexc.Unauthorized):
            code = getattr(exc, "code", 403)
            return DataError(
                f"{uri}: access denied ({code}); expected the credentials in use to have "
                "storage.objects.get/list on the bucket"
            )
        return DataError(f"{uri}: Google Cloud Storage request failed ({type(exc).__name__})")

    def list(self, prefix: str = "") -> list[str]:
        full = self._object(prefix)
        query = f"{full}/" if full and not full.endswith("/") else full
        uri = f"gs://{self.bucket_name}/{query}"
        strip = len(self.prefix) + 1 if self.prefix else 0
        out = []
        try:
            blobs = self.client.list_blobs(self.bucket_name, prefix=query, **self._call())
            for blob in blobs:
                if blob.name.endswith("/"):
                    continue  # "folder" placeholder objects
                rel = blob.name[strip:]
                self._sizes[rel] = int(blob.size) if blob.size is not None else -1
                out.append(rel)
        except _failures() as exc:
            raise self._fail(exc, uri) from None
        return sorted(out)

    def read_bytes(self, rel: str) -> bytes:
        rel = _clean_rel(rel)
        cached = self._cache_path(rel)
        known = self._sizes.get(rel)
        if cached.is_file() and (known is None or known < 0 or cached.stat().st_size == known):
            return cached.read_bytes()
        uri = self.describe(rel)
        try:
            blob = self.client.bucket(self.bucket_name).blob(self._object(rel))
            data = blob.download_as_bytes(**self._call())
        except _failures() as exc:
            raise self._fail(exc, uri) from None
        write_atomic(cached, data)
        return data

    def exists(self, rel: str) -> bool:
        rel = _clean_rel(rel)
        if rel in self._sizes or self._cache_path(rel).is_file():
            return True
        try:
            return bool(
                self.client.bucket(self.bucket_name).blob(self._object(rel)).exists(**self._call())
            )
        except _failures() as exc:
            raise self._fail(exc, self.describe(rel)) from None


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where gs:// objects are cached: $DOMAIN_GAP_CACHE, else ``cache_dir``, else ~/.cache."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path(cache_dir).expanduser() if cache_dir else DEFAULT_CACHE.expanduser()


def open_storage(
    root: str | Path, cache_dir: str | Path | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Storage:
    """Open a dataset root: ``gs://bucket/prefix`` or a local folder (which must exist)."""
    root = str(root)
    if root.startswith("gs://"):
        return GCSStorage(root, cache_root(cache_dir), timeout_s=timeout_s)
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"{path}: dataset root not found; expected an existing folder")
    return LocalStorage(path)
