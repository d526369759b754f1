"""Index a dataset in the KITTI semantic-segmentation layout.

``training/image_2/{NNNNNN}_10.png`` with Cityscapes labelIds (or, with ``label_format:
trainIds``, trainIds) in ``training/semantic/``, and
``testing/image_2/`` without labels. KITTI has no official val split, so labelled frames are
split by a seeded hash of their sample id (stable when frames are added); ``testing`` frames
are unlabeled. KITTI ships no vehicle metadata: ``vehicle_path`` is always None.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from domain_gap.config import DomainConfig
from domain_gap.data.errors import DataError
from domain_gap.data.records import SampleRecord
from domain_gap.data.splits import IMAGE_SUFFIXES, seeded_subset
from domain_gap.data.storage import Storage

SPLITS = ("training", "testing")


def index_kitti(storage: Storage, cfg: DomainConfig, seed: int = 0) -> list[SampleRecord]:
    """All frames of the configured splits, sorted by sample id."""
    records = []
    for split in cfg.splits:
        if split not in SPLITS:
            raise DataError(
                f"{storage.location}: domain {cfg.name!r}: unknown KITTI split {split!r}; "
                f"expected one of {list(SPLITS)}"
            )
        labeled = split == "training"
        images = [
            p
            for p in storage.list(f"{split}/image_2")
            if p.lower().endswith(IMAGE_SUFFIXES) and p.count("/") == 2
        ]
        if not images:
            raise DataError(
                f"{storage.describe(f'{split}/image_2')}: no images found for domain {cfg.name!r} "
                f"split {split!r}; expected files like {split}/image_2/<NNNNNN>_10.png"
            )
        labels = set(storage.list(f"{split}/semantic")) if labeled else set()
        for rel in images:
            name = PurePosixPath(rel).name
            label_rel = f"{split}/semantic/{name}"
            if labeled and label_rel not in labels:
                raise DataError(
                    f"{storage.describe(rel)}: missing label; "
                    f"expected {storage.describe(label_rel)}"
                )
            sample_id = f"{cfg.name}/{rel}"
            records.append(
                SampleRecord(
                    sample_id=sample_id,
                    domain=cfg.name,
                    kind="kitti",
                    subset=seeded_subset(seed, sample_id, cfg.val_fraction)
                    if labeled
                    else "unlabeled",
                    image_path=storage.describe(rel),
                    label_path=storage.describe(label_rel) if labeled else None,
                    vehicle_path=None,
                    group=name.split("_")[0].rsplit(".", 1)[0],
                    file_name=name,
                    label_format=cfg.label_format,
                )
            )
    return sorted(records, key=lambda r: r.sample_id)
