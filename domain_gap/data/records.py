"""One row of the index: where a frame and its label live, and how it is split."""

from __future__ import annotations

from dataclasses import dataclass

SUBSETS = ("train", "val", "unlabeled")


@dataclass(frozen=True)
class SampleRecord:
    """One image of one domain.

    ``image_path``/``label_path``/``vehicle_path`` are full locations (local path or ``gs://``
    URI); ``sample_id`` is ``"{domain}/{image path relative to the domain root}"``.
    ``subset`` is ``train``, ``val`` or ``unlabeled``; ``group`` is the city (Cityscapes), the
    frame number (KITTI) or the parent folder (extra unlabeled frames).
    """

    sample_id: str
    domain: str
    kind: str
    subset: str
    image_path: str
    label_path: str | None
    vehicle_path: str | None
    group: str
    file_name: str
    label_format: str = "labelIds"
    """How the label file encodes classes: ``labelIds``, ``trainIds`` or ``color``."""

    @property
    def labeled(self) -> bool:
        return self.label_path is not None
