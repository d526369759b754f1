"""On-disk, resumable cache of per-sample extraction records.

Layout: ``<cache_dir>/<model-hash>/<tap>-<prep-hash>/<domain>/<shard>.npz``, one ``.npz`` shard
per sample. The model hash is the sha256 of the checkpoint file; the prep hash covers everything
else that changes a record (input size, resize policy, mean/std, classes, output stride and the
record format version). A shard's name is a hash of the sample id and the domain's root, so
the same domain name pointed at another dataset never reuses stale records.

Shards are written atomically (temporary file in the same folder, then ``os.replace``), so an
interrupted run leaves only whole shards behind and the next run computes only what is missing.
A shard that cannot be read, lacks a field or belongs to another sample counts as missing: it is
reported with a warning and recomputed.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from domain_gap.atomic import write_atomic
from domain_gap.config import Config

CACHE_VERSION = 4
"""Bump when the content of a record changes; old shards are then ignored (4: prob_mean summed
in float64 per image row)."""

_HASH_LEN = 16
_ID = {"sample_id", "cache_version"}
_file_hashes: dict[tuple[str, int, int], str] = {}


class CacheError(ValueError):
    """The cache folder cannot be used (e.g. the checkpoint to hash is missing)."""


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file, memoised per (path, size, mtime) for this process."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise CacheError(f"{p}: cannot read file to hash it ({exc.strerror or exc})") from None
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _file_hashes:
        digest = hashlib.sha256()
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _file_hashes[key] = digest.hexdigest()
    return _file_hashes[key]


def prep_settings(config: Config) -> dict[str, object]:
    """Every setting besides the weights and the tap that changes an extracted record."""
    img = config.image
    return {
        "version": CACHE_VERSION,
        "height": img.height,
        "width": img.width,
        "resize": img.resize,
        "mean": [float(v) for v in img.mean],
        "std": [float(v) for v in img.std],
        "num_classes": config.model.num_classes,
        "output_stride": config.model.output_stride,
        "arch": config.model.arch,
    }


def prep_hash(config: Config) -> str:
    """Short stable hash of :func:`prep_settings`."""
    text = json.dumps(prep_settings(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_LEN]


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


class FeatureCache:
    """One folder of shards for one (model, tap, preprocessing) triple."""

    def __init__(self, cache_dir: str | Path, model_hash: str, tap: str, prep: str) -> None:
        self.model_hash = model_hash
        self.tap = tap
        self.prep = prep
        self.root = Path(cache_dir) / model_hash[:_HASH_LEN] / f"{_safe_name(tap)}-{prep}"

    def for_mitigation(self, label: str, key: str) -> FeatureCache:
        """The cache of one fitted mitigation's pass: a subfolder named by its fitted key."""
        sub = FeatureCache.__new__(FeatureCache)
        sub.model_hash, sub.tap, sub.prep = self.model_hash, self.tap, self.prep
        sub.root = self.root / "mitigated" / f"{_safe_name(label)}-{key[:_HASH_LEN]}"
        return sub

    @classmethod
    def for_config(cls, config: Config, tap: str | None = None) -> FeatureCache:
        """The cache a config selects: its cache_dir, checkpoint hash, tap and prep hash."""
        checkpoint = Path(config.resolve(config.model.checkpoint) or "")
        if not checkpoint.is_file():
            raise CacheError(f"{checkpoint}: model checkpoint not found (config model.checkpoint)")
        cache_dir = config.resolve(config.cache_dir) or "."
        return cls(cache_dir, file_sha256(checkpoint), tap or config.model.tap, prep_hash(config))

    def shard_path(self, domain: str, sample_id: str, source: str = "") -> Path:
        """Where the record of ``sample_id`` (of a domain stored at ``source``) lives."""
        key = hashlib.sha256(f"{source}\0{sample_id}".encode()).hexdigest()[:24]
        return self.root / _safe_name(domain) / f"{key}.npz"

    def load(
        self,
        domain: str,
        sample_id: str,
        source: str = "",
        required: tuple[str, ...] = (),
        only: tuple[str, ...] | None = None,
    ) -> dict[str, np.ndarray] | None:
        """The cached arrays of one sample, or None when missing or unusable (then warned).

        ``only``: read just these arrays (and the shard's identity), not the whole shard; each
        of them is then required too."""
        path = self.shard_path(domain, sample_id, source)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                wanted = npz.files if only is None else _ID | set(only)
                names = [name for name in npz.files if name in wanted]
                arrays = {name: npz[name] for name in names}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            warnings.warn(f"{path}: corrupt cache shard ({exc}); recomputing", stacklevel=2)
            return None
        problem = None
        if str(arrays.get("sample_id", "")) != sample_id:
            problem = f"holds {arrays.get('sample_id')!r}, expected {sample_id!r}"
        elif int(arrays.get("cache_version", -1)) != CACHE_VERSION:
            problem = "written by another cache version"
        else:
            missing = [name for name in (*required, *(only or ())) if name not in arrays]
            if missing:
                problem = f"lacks {missing}"
        if problem:
            warnings.warn(f"{path}: unusable cache shard ({problem}); recomputing", stacklevel=2)
            return None
        return arrays

    def save(
        self, domain: str, sample_id: str, arrays: Mapping[str, np.ndarray], source: str = ""
    ) -> Path:
        """Write one sample's arrays atomically (temp file + ``os.replace``).

        The archive is built in memory and written at once: the zip writer's many small writes
        and seeks on the file cost more than building it."""
        path = self.shard_path(domain, sample_id, source)
        payload = {
            **arrays,
            "sample_id": np.asarray(sample_id),
            "cache_version": np.asarray(CACHE_VERSION),
        }
        buffer = io.BytesIO()
        np.savez(buffer, **payload)
        write_atomic(path, buffer.getvalue())
        return path
