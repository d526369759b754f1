"""``DomainDataset``: every configured domain indexed, loaded and resized the same way.

The index is built once from the config (native layouts, seeded or file-given splits, extra
unlabeled frames, per-subset caps). ``load`` gives a frame at its original resolution with
trainIds; ``prepare`` gives it at the model's input size under the configured resize policy.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from domain_gap.config import Config, DomainConfig
from domain_gap.data.cityscapes import index_cityscapes
from domain_gap.data.decode import decode_image, decode_label, decode_vehicle
from domain_gap.data.errors import DataError
from domain_gap.data.folder import index_folder
from domain_gap.data.kitti import index_kitti
from domain_gap.data.records import SampleRecord
from domain_gap.data.splits import (
    apply_split_files,
    cap_per_subset,
    index_unlabeled,
    read_split_file,
)
from domain_gap.data.storage import DEFAULT_TIMEOUT_S, Storage, open_storage
from domain_gap.data.transforms import resize_pair
from domain_gap.data.user_metadata import UserTable, join_tables, parse_metadata_csv, typed_columns

INDEXERS: dict[str, Callable[[Storage, DomainConfig, int], list[SampleRecord]]] = {
    "cityscapes": index_cityscapes,
    "kitti": index_kitti,
    "folder": index_folder,
}


@dataclass(frozen=True, eq=False)
class LoadedSample:
    """A frame at its original resolution: RGB uint8, trainIds uint8 (or None), vehicle data."""

    record: SampleRecord
    image: np.ndarray
    label: np.ndarray | None
    vehicle: dict[str, float]


@dataclass(frozen=True, eq=False)
class PreparedSample:
    """A frame at the model's input size; ``valid`` is False on padding."""

    record: SampleRecord
    image: np.ndarray
    label: np.ndarray | None
    valid: np.ndarray
    orig_hw: tuple[int, int]
    vehicle: dict[str, float]


def _open_parent(
    location: str, cache_dir: str | None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> tuple[Storage, str]:
    """Storage of the folder holding ``location`` and the file's name in it."""
    if location.startswith("gs://"):
        parent, _, name = location.rstrip("/").rpartition("/")
        return open_storage(parent, cache_dir, timeout_s), name
    path = Path(location)
    if not path.is_file():
        raise DataError(f"{path}: split file not found; expected one image path per line")
    return open_storage(path.parent, cache_dir), path.name


class DomainDataset:
    """All frames of all configured domains (or of ``domains`` only)."""

    def __init__(self, config: Config, domains: list[str] | None = None) -> None:
        self.config = config
        self.cache_dir = str(Path(config.resolve(config.cache_dir) or ".") / "gcs")
        self._storages: list[Storage] = []
        self.user_tables: dict[str, UserTable] = {}
        """Domain → its ``metadata_csv`` (domains with one only)."""
        records: list[SampleRecord] = []
        for cfg in config.domains:
            if domains is None or cfg.name in domains:
                records.extend(self._index_domain(cfg))
                if cfg.metadata_csv:
                    self.user_tables[cfg.name] = self._read_table(cfg)
        seen: dict[str, SampleRecord] = {}
        for r in records:
            if r.sample_id in seen:
                raise DataError(
                    f"{r.image_path}: sample id {r.sample_id!r} also used by "
                    f"{seen[r.sample_id].image_path}; expected unique paths per domain"
                )
            seen[r.sample_id] = r
        self.records: tuple[SampleRecord, ...] = tuple(sorted(records, key=lambda r: r.sample_id))

    def _open(self, root: str) -> Storage:
        location = self.config.resolve(root) or root
        storage = open_storage(location, self.cache_dir, self.config.gcs_timeout_s)
        self._storages.append(storage)
        return storage

    def _index_domain(self, cfg: DomainConfig) -> list[SampleRecord]:
        storage = self._open(cfg.root)
        records = INDEXERS[cfg.kind](storage, cfg, self.config.seed)
        if cfg.split_files:
            lists, sources = {}, {}
            for subset, location in cfg.split_files.items():
                parent, name = _open_parent(
                    self.config.resolve(location) or location,
                    self.cache_dir,
                    self.config.gcs_timeout_s,
                )
                lists[subset] = read_split_file(parent, name)
                sources[subset] = parent.describe(name)
            records = apply_split_files(records, lists, storage.location, sources)
        if cfg.unlabeled_root:
            records += index_unlabeled(self._open(cfg.unlabeled_root), cfg.name, cfg.kind)
        return cap_per_subset(records, cfg.max_samples, self.config.seed)

    def _read_table(self, cfg: DomainConfig) -> UserTable:
        location = self.config.resolve(cfg.metadata_csv) or str(cfg.metadata_csv)
        if not location.startswith("gs://") and not Path(location).is_file():
            raise DataError(
                f"{location}: metadata_csv of domain {cfg.name!r} not found; expected a CSV file"
            )
        parent, name = _open_parent(location, self.cache_dir, self.config.gcs_timeout_s)
        return parse_metadata_csv(parent.read_bytes(name), location, cfg.metadata_columns)

    def user_metadata(
        self, records: list[SampleRecord]
    ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """``user_<column>`` fields of ``records`` (typed over all of them) and, per domain
        with a CSV, how many of them have no row in it."""
        cells, missing = join_tables(self.user_tables, records)
        return typed_columns(cells), missing

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[SampleRecord]:
        return iter(self.records)

    def select(self, domain: str | None = None, subset: str | None = None) -> list[SampleRecord]:
        """Records of one domain and/or subset (``None`` = any), in sample-id order."""
        return [
            r
            for r in self.records
            if (domain is None or r.domain == domain) and (subset is None or r.subset == subset)
        ]

    def without(self, sample_ids: Collection[str]) -> DomainDataset:
        """The same dataset (storages, user tables) with the frames ``sample_ids`` left out."""
        drop = set(sample_ids)
        view = copy.copy(self)
        view.records = tuple(r for r in self.records if r.sample_id not in drop)
        return view

    def counts(self) -> dict[str, dict[str, int]]:
        """``{domain: {subset: number of frames}}``."""
        out: dict[str, dict[str, int]] = {}
        for r in self.records:
            out.setdefault(r.domain, {}).setdefault(r.subset, 0)
            out[r.domain][r.subset] += 1
        return out

    # ------------------------------------------------------------------ loading
    def _read(self, location: str) -> bytes:
        for storage in self._storages:
            root = storage.location.rstrip("/") + "/"
            if location.startswith(root):
                return storage.read_bytes(location[len(root) :])
        raise DataError(f"{location}: not under any configured domain root")

    def load(self, record: SampleRecord) -> LoadedSample:
        """The frame at its original resolution (RGB uint8, trainIds uint8 or None)."""
        bound = self.config.image.max_pixels
        image = decode_image(self._read(record.image_path), record.image_path, bound)
        label = None
        if record.label_path is not None:
            data = self._read(record.label_path)
            hw = image.shape[:2]
            label = decode_label(data, record.label_path, hw, record.label_format, bound)
        vehicle = {}
        if record.vehicle_path is not None:
            vehicle = decode_vehicle(self._read(record.vehicle_path), record.vehicle_path)
        return LoadedSample(record, image, label, vehicle)

    def prepare(self, record: SampleRecord) -> PreparedSample:
        """The frame at the config's input size and resize policy."""
        sample = self.load(record)
        geo = self.config.image
        image, label, valid = resize_pair(
            sample.image, sample.label, geo.height, geo.width, geo.resize
        )
        return PreparedSample(record, image, label, valid, sample.image.shape[:2], sample.vehicle)
