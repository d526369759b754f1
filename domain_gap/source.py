"""Per-sample access by sample id, for callers that ask one sample at a time (the binder).

Tensorleap calls every encoder, metadata and visualizer function separately for the same
sample id; a small LRU cache keeps that to one decode and resize per sample. The config comes
from ``$DOMAIN_GAP_CONFIG`` (a YAML path) or, when unset, the shipped sample config (whose
built-in sample is written on first use, so a fresh clone works). With
``tensorleap.mitigation`` set, :func:`model_input` of a target-domain sample is that fix's
output, fitted once per target on first use (:mod:`domain_gap.binder_mitigation`).
"""

from __future__ import annotations

import os
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

from domain_gap import binder_mitigation
from domain_gap.config import Config, load_config
from domain_gap.data.dataset import DomainDataset, PreparedSample
from domain_gap.data.errors import DataError
from domain_gap.data.records import SampleRecord
from domain_gap.mitigations import Fitted

CONFIG_ENV = "DOMAIN_GAP_CONFIG"


def _config_path() -> str | None:
    return os.environ.get(CONFIG_ENV) or None


@lru_cache(maxsize=4)
def _config(path: str | None) -> Config:
    return load_config(path)


def ensure_roots(config: Config, path: str | None) -> None:
    """The default config (``path`` None) writes the built-in sample when it is missing, as
    ``leap_test`` does; a user config with a missing local root is one line naming
    ``$DOMAIN_GAP_CONFIG`` and the root."""
    if path is None:
        from domain_gap.demo import ensure_demo_inputs

        ensure_demo_inputs(config, progress=False)
        return
    for d in config.domains:
        for key, root in (("root", d.root), ("unlabeled_root", d.unlabeled_root)):
            where = config.resolve(root)
            if where is not None and not where.startswith("gs://") and not Path(where).is_dir():
                raise DataError(
                    f"{CONFIG_ENV}={path}: domain {d.name!r} {key} {where} not found; "
                    "expected an existing folder"
                )


@lru_cache(maxsize=4)
def _dataset(path: str | None) -> DomainDataset:
    config = _config(path)
    ensure_roots(config, path)
    return DomainDataset(config)


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


@lru_cache(maxsize=4)
def _user_fields(path: str | None) -> dict[str, dict[str, float | str]]:
    dataset = _dataset(path)
    columns, _ = dataset.user_metadata(list(dataset.records))
    ids = [r.sample_id for r in dataset.records]
    out: dict[str, dict[str, float | str]] = {i: {} for i in ids}
    for name, values in columns.items():
        for i, value in zip(ids, values.tolist(), strict=True):
            out[i][name.removeprefix("user_")] = value
    return out


def user_fields(sample_id: str) -> dict[str, float | str]:
    """The sample's ``metadata_csv`` fields (same keys for every sample; NaN / "" missing)."""
    record(sample_id)  # a clear error for an unknown id
    return _user_fields(_config_path())[sample_id]


@lru_cache(maxsize=32)
def _prepared(path: str | None, sample_id: str) -> PreparedSample:
    return _dataset(path).prepare(record(sample_id))


def prepared(sample_id: str) -> PreparedSample:
    """The sample at model-input size (decoded and resized once, then cached)."""
    return _prepared(_config_path(), sample_id)


@cache
def _fitted(path: str | None, domain: str) -> Fitted | None:
    config = _config(path)
    spec = binder_mitigation.platform_mitigation(config)
    if spec is None or domain == config.source_domain:
        return None
    return binder_mitigation.fit_for_target(config, _dataset(path), spec, domain)


def mitigation(sample_id: str) -> Fitted | None:
    """The fitted ``tensorleap.mitigation`` applied to this sample (None: source or unset)."""
    return _fitted(_config_path(), record(sample_id).domain)


def mitigation_label(sample_id: str) -> str:
    """The name of the mitigation in this sample's model input, or ``"none"``."""
    if mitigation(sample_id) is None:
        return binder_mitigation.NO_MITIGATION
    return str(active_config().tensorleap.mitigation)


def model_input(sample_id: str) -> np.ndarray:
    """The normalised model input (3, H, W) float32, mitigated for target-domain samples."""
    s = prepared(sample_id)
    return binder_mitigation.mitigated_input(
        s.image, s.valid, active_config(), mitigation(sample_id)
    )
