"""Index a dataset in the Cityscapes layout.

``leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png`` with its label
``gtFine/{split}/{city}/{stem}_gtFine_labelIds.png`` and, when present, the vehicle metadata
``vehicle/{split}/{city}/{stem}_vehicle.json``. ``train``/``val`` are labelled subsets; ``test``
(whose public ground truth is a dummy) and ``train_extra`` (coarse labels only) are unlabeled.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from domain_gap.config import DomainConfig
from domain_gap.data.errors import DataError
from domain_gap.data.records import SampleRecord
from domain_gap.data.storage import Storage

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
TRAIN_ID_SUFFIX = "_gtFine_labelTrainIds.png"
"""With ``label_format: trainIds``: cityscapesscripts' trainId files, read when a split has
them (else the ``*_labelIds.png`` names are taken to hold trainIds)."""
VEHICLE_SUFFIX = "_vehicle.json"
VEHICLE_KEYS = (
    "gpsHeading",
    "gpsLatitude",
    "gpsLongitude",
    "gpsAltitude",
    "speed",
    "outsideTemperature",
    "yawRate",
)
"""The fields of a Cityscapes ``*_vehicle.json`` file."""
LABELED_SPLITS = ("train", "val")
UNLABELED_SPLITS = ("test", "train_extra")
PATTERN = "leftImg8bit/{split}/<city>/<city>_<seq>_<frame>" + IMAGE_SUFFIX


def index_cityscapes(storage: Storage, cfg: DomainConfig, seed: int = 0) -> list[SampleRecord]:
    """All frames of the configured splits, sorted by sample id (``seed`` is unused here:
    Cityscapes has official train/val splits)."""
    del seed
    records = []
    for split in cfg.splits:
        if split not in LABELED_SPLITS + UNLABELED_SPLITS:
            raise DataError(
                f"{storage.location}: domain {cfg.name!r}: unknown Cityscapes split {split!r}; "
                f"expected one of {list(LABELED_SPLITS + UNLABELED_SPLITS)}"
            )
        labeled = split in LABELED_SPLITS
        images = [p for p in storage.list(f"leftImg8bit/{split}") if p.endswith(IMAGE_SUFFIX)]
        if not images:
            raise DataError(
                f"{storage.describe(f'leftImg8bit/{split}')}: no images found for domain "
                f"{cfg.name!r} split {split!r}; expected files like {PATTERN.format(split=split)}"
            )
        labels = set(storage.list(f"gtFine/{split}")) if labeled else set()
        suffix = LABEL_SUFFIX
        if cfg.label_format == "trainIds" and any(p.endswith(TRAIN_ID_SUFFIX) for p in labels):
            suffix = TRAIN_ID_SUFFIX
        vehicles = set(storage.list(f"vehicle/{split}"))
        for rel in images:
            path = PurePosixPath(rel)
            if len(path.parts) != 4:
                raise DataError(
                    f"{storage.describe(rel)}: not in the Cityscapes layout; expected "
                    f"{PATTERN.format(split=split)}"
                )
            city = path.parts[2]
            stem = path.name[: -len(IMAGE_SUFFIX)]
            label_rel = f"gtFine/{split}/{city}/{stem}{suffix}"
            vehicle_rel = f"vehicle/{split}/{city}/{stem}{VEHICLE_SUFFIX}"
            if labeled and label_rel not in labels:
                raise DataError(
                    f"{storage.describe(rel)}: missing label; "
                    f"expected {storage.describe(label_rel)}"
                )
            records.append(
                SampleRecord(
                    sample_id=f"{cfg.name}/{rel}",
                    domain=cfg.name,
                    kind="cityscapes",
                    subset=split if labeled else "unlabeled",
                    image_path=storage.describe(rel),
                    label_path=storage.describe(label_rel) if labeled else None,
                    vehicle_path=storage.describe(vehicle_rel) if vehicle_rel in vehicles else None,
                    group=city,
                    file_name=path.name,
                    label_format=cfg.label_format,
                )
            )
    return sorted(records, key=lambda r: r.sample_id)
