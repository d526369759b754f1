"""Subset assignment shared by both layouts: seeded hash split, explicit split files, caps,
and the extra unlabeled frames of ``unlabeled_root``."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import PurePosixPath

from domain_gap.data.errors import DataError
from domain_gap.data.records import SampleRecord
from domain_gap.data.storage import Storage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def unit_hash(seed: int, key: str) -> float:
    """A number in [0, 1) fixed by ``(seed, key)``: stable across runs, machines and additions."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def seeded_subset(seed: int, sample_id: str, val_fraction: float) -> str:
    """``"val"`` for a ``val_fraction`` share of ids (by hash), else ``"train"``."""
    return "val" if unit_hash(seed, sample_id) < val_fraction else "train"


def read_split_file(storage: Storage, rel: str) -> list[str]:
    """Image paths (relative to the domain root) listed one per line; blank/# lines skipped."""
    text = storage.read_bytes(rel).decode("utf-8", errors="replace")
    lines = [line.strip() for line in text.splitlines()]
    return [
        line[2:] if line.startswith("./") else line
        for line in lines
        if line and not line.startswith("#")
    ]


def apply_split_files(
    records: list[SampleRecord], lists: dict[str, list[str]], root: str, sources: dict[str, str]
) -> list[SampleRecord]:
    """Reassign labelled records to the subsets named in ``lists`` ({subset: [rel paths]}).

    Labelled frames in no list go to the subset without a file when only one file is given,
    and are dropped when both are. Unknown paths or a path in both lists raise DataError.
    """
    prefix = root.rstrip("/") + "/"
    by_rel = {r.image_path[len(prefix) :]: r for r in records if r.image_path.startswith(prefix)}
    wanted: dict[str, str] = {}
    for subset, paths in lists.items():
        for rel in paths:
            if rel not in by_rel:
                raise DataError(
                    f"{sources[subset]}: lists {rel!r}, which is not an image under {root} "
                    "(expected paths relative to the domain root, one per line)"
                )
            if by_rel[rel].label_path is None:
                raise DataError(f"{sources[subset]}: lists {rel!r}, which has no label")
            if wanted.get(rel, subset) != subset:
                raise DataError(f"{sources[subset]}: {rel!r} is listed for both train and val")
            wanted[rel] = subset
    rest = None if len(lists) == 2 else ({"train", "val"} - set(lists)).pop()
    out = []
    for r in records:
        rel = r.image_path[len(prefix) :]
        if r.label_path is None:
            out.append(r)
        elif rel in wanted:
            out.append(replace(r, subset=wanted[rel]))
        elif rest is not None:
            out.append(replace(r, subset=rest))
    return out


def cap_per_subset(
    records: list[SampleRecord], max_samples: int | None, seed: int
) -> list[SampleRecord]:
    """Keep at most ``max_samples`` per subset: a seeded, stable choice (lowest hashes)."""
    if max_samples is None:
        return records
    kept: list[SampleRecord] = []
    for subset in sorted({r.subset for r in records}):
        group = [r for r in records if r.subset == subset]
        group.sort(key=lambda r: unit_hash(seed, r.sample_id))
        kept.extend(group[:max_samples])
    return sorted(kept, key=lambda r: r.sample_id)


def index_unlabeled(storage: Storage, domain: str, kind: str) -> list[SampleRecord]:
    """Every ``*.png``/``*.jpg`` below ``storage`` as an unlabeled frame."""
    records = []
    for rel in storage.list(""):
        if not rel.lower().endswith(IMAGE_SUFFIXES):
            continue
        path = PurePosixPath(rel)
        records.append(
            SampleRecord(
                sample_id=f"{domain}/{rel}",
                domain=domain,
                kind=kind,
                subset="unlabeled",
                image_path=storage.describe(rel),
                label_path=None,
                vehicle_path=None,
                group=path.parent.name or "unlabeled",
                file_name=path.name,
            )
        )
    if not records:
        raise DataError(
            f"{storage.location}: unlabeled_root holds no images; "
            "expected *.png or *.jpg files below it"
        )
    return records
