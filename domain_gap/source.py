"""Per-sample access by sample id, for callers that ask one sample at a time (the binder).

Tensorleap calls every encoder, metadata and visualizer function separately for the same
sample id; a small LRU cache keeps that to one decode and resize per sample. The config comes
from ``$DOMAIN_GAP_CONFIG`` (a YAML path) or, when unset, the shipped sample config.
"""

from __future__ import annotations

import os
from functools import lru_cache

from domain_gap.config import Config, load_config
from domain_gap.data.dataset import DomainDataset, PreparedSample
from domain_gap.data.records import SampleRecord

CONFIG_ENV = "DOMAIN_GAP_CONFIG"


def _config_path() -> str | None:
    return os.environ.get(CONFIG_ENV) or None


@lru_cache(maxsize=4)
def _config(path: str | None) -> Config:
    return load_config(path)


@lru_cache(maxsize=4)
def _dataset(path: str | None) -> DomainDataset:
    return DomainDataset(_config(path))


@lru_cache(maxsize=4)
def _by_id(path: str | None) -> dict[str, SampleRecord]:
    return {r.sample_id: r for r in _dataset(path).records}


def active_config() -> Config:
    """The config named by ``$DOMAIN_GAP_CONFIG``, else ``configs/sample.yaml``."""
    return _config(_config_path())


def active_dataset() -> DomainDataset:
    """The indexed dataset of the active config (indexed once per process)."""
    return _dataset(_config_path())


def subset_records(subset: str) -> list[SampleRecord]:
    """Records of every configured domain in ``subset`` ('train', 'val' or 'unlabeled')."""
    return active_dataset().select(subset=subset)


def record(sample_id: str) -> SampleRecord:
    """The record of a sample id, with a clear error for an unknown one."""
    try:
        return _by_id(_config_path())[sample_id]
    except KeyError:
        raise KeyError(f"unknown sample id {sample_id!r} for the active config") from None


@lru_cache(maxsize=32)
def _prepared(path: str | None, sample_id: str) -> PreparedSample:
    return _dataset(path).prepare(record(sample_id))


def prepared(sample_id: str) -> PreparedSample:
    """The sample at model-input size (decoded and resized once, then cached)."""
    return _prepared(_config_path(), sample_id)
