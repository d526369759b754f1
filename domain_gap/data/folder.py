"""Index a dataset in any layout: the ``folder`` kind.

``images`` is a glob under the root (``*`` and ``?`` within one folder, ``**`` for any number
of folders). ``labels``, when given, is a template that names each image's label file (see
:class:`~domain_gap.config.DomainConfig`); an image whose label file is absent is unlabeled.
Labelled frames are split train/val by the same seeded hash of the sample id as KITTI's (stable
when frames are added); sample ids are ``"{domain}/{image path under the root}"``.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from domain_gap.config import DomainConfig
from domain_gap.data.errors import DataError
from domain_gap.data.records import SampleRecord
from domain_gap.data.splits import IMAGE_SUFFIXES, seeded_subset
from domain_gap.data.storage import Storage

__all__ = ["glob_regex", "index_folder", "label_path"]


def glob_regex(pattern: str) -> re.Pattern[str]:
    """The regular expression of a path glob: ``**/`` any folders, ``*``/``?`` within one."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _literal_prefix(pattern: str) -> str:
    """The folders of ``pattern`` before its first wildcard (what to list)."""
    parts = pattern.split("/")
    fixed = []
    for part in parts[:-1]:
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    return "/".join(fixed)


def label_path(template: str, rel: str, source: str = "labels") -> str:
    """The label path the template names for the image at ``rel`` (relative to the root)."""
    path = PurePosixPath(rel)
    fields = {
        "stem": path.stem,
        "name": path.name,
        "suffix": path.suffix,
        "dir": str(path.parent) if str(path.parent) != "." else "",
        "parts": path.parts[:-1],
    }
    try:
        out = template.format(**fields)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise DataError(
            f"{source}: template {template!r} cannot name the label of {rel!r} ({exc!r}); "
            "expected fields {stem} {name} {suffix} {dir} {parts[i]}"
        ) from None
    return str(PurePosixPath(out.lstrip("/")))


def _group(rel: str, index: int | None) -> str:
    folders = PurePosixPath(rel).parts[:-1]
    if index is None:
        return folders[-1] if folders else "root"
    try:
        return folders[index]
    except IndexError:
        raise DataError(
            f"{rel}: groups = {index} but the image lies in {len(folders)} folder(s) under the "
            "root; expected a folder index that every image has"
        ) from None


def index_folder(storage: Storage, cfg: DomainConfig, seed: int = 0) -> list[SampleRecord]:
    """Every image matching ``cfg.images``, with its label when ``cfg.labels`` names one."""
    pattern = str(cfg.images)
    regex = glob_regex(pattern)
    listed = storage.list(_literal_prefix(pattern))
    images = [p for p in listed if regex.match(p) and p.lower().endswith(IMAGE_SUFFIXES)]
    if not images:
        raise DataError(
            f"{storage.describe(_literal_prefix(pattern))}: no images match {pattern!r} for "
            f"domain {cfg.name!r}; expected *.png or *.jpg files under the root"
        )
    where = f"domain {cfg.name!r} labels"
    labels = {label_path(cfg.labels, rel, where): rel for rel in images} if cfg.labels else {}
    # a label file that the glob matches too is a label, not an image
    labels = {lab: rel for lab, rel in labels.items() if rel not in labels}
    images = [rel for rel in images if rel not in labels]
    present = set(storage.list(_common_folder(list(labels)))) if labels else set()
    if labels and not present & set(labels):
        first = next(iter(labels))
        raise DataError(
            f"{storage.describe(first)}: no label file found for any image of domain "
            f"{cfg.name!r}; expected the template {cfg.labels!r} to name existing files"
        )
    by_image = {rel: lab for lab, rel in labels.items() if lab in present}
    records = []
    for rel in images:
        sample_id = f"{cfg.name}/{rel}"
        label = by_image.get(rel)
        records.append(
            SampleRecord(
                sample_id=sample_id,
                domain=cfg.name,
                kind="folder",
                subset="unlabeled"
                if label is None
                else seeded_subset(seed, sample_id, cfg.val_fraction),
                image_path=storage.describe(rel),
                label_path=None if label is None else storage.describe(label),
                vehicle_path=None,
                group=_group(rel, cfg.groups),
                file_name=PurePosixPath(rel).name,
                label_format=cfg.label_format,
            )
        )
    return sorted(records, key=lambda r: r.sample_id)


def _common_folder(paths: list[str]) -> str:
    """The deepest folder holding every path (what to list once for the labels)."""
    folders = [PurePosixPath(p).parts[:-1] for p in paths]
    common: list[str] = []
    for level in zip(*folders, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return "/".join(common)
