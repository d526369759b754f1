"""The one class table: Cityscapes labels (ids, trainIds, names, colours).

Everything here is derived from ``cityscapesscripts.helpers.labels`` so that nothing is
retyped. Encoders, metrics, metadata and visualizers all read these constants.
"""

from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS

IGNORE_INDEX = 255
"""trainId of void / ignored pixels (Cityscapes convention)."""

LABELS = tuple(label for label in _CS_LABELS if label.id >= 0)
"""The 34 labels that can appear in a labelIds PNG (license plate, id -1, never does)."""

TRAIN_LABELS = tuple(
    sorted(
        (label for label in _CS_LABELS if 0 <= label.trainId < IGNORE_INDEX),
        key=lambda label: label.trainId,
    )
)
NUM_CLASSES = len(TRAIN_LABELS)
CLASS_NAMES: tuple[str, ...] = tuple(label.name for label in TRAIN_LABELS)
CLASS_COLORS = np.array([label.color for label in TRAIN_LABELS], dtype=np.uint8)
"""(19, 3) RGB colour per trainId."""
VOID_COLOR = np.zeros(3, dtype=np.uint8)

VALID_LABEL_IDS = frozenset(label.id for label in LABELS)

_ID_TO_TRAIN = np.full(256, IGNORE_INDEX, dtype=np.uint8)
for _label in LABELS:
    if 0 <= _label.trainId < IGNORE_INDEX:
        _ID_TO_TRAIN[_label.id] = _label.trainId
_VALID_ID = np.zeros(256, dtype=bool)
_VALID_ID[list(VALID_LABEL_IDS)] = True

NAME_TO_ID = {label.name: label.id for label in LABELS}
NAME_TO_TRAIN_ID = {name: i for i, name in enumerate(CLASS_NAMES)}


class UnknownLabelIdError(ValueError):
    """A labelIds image holds a value that is not a Cityscapes label id."""


def id_to_train_id(label_ids: np.ndarray, source: str = "label") -> np.ndarray:
    """Map a Cityscapes labelIds array to trainIds (void = 255).

    Raises :class:`UnknownLabelIdError` naming ``source`` when a value is not a label id.
    """
    ids = np.asarray(label_ids)
    if ids.dtype != np.uint8:
        if ids.size and (ids.min() < 0 or ids.max() > 255):
            raise UnknownLabelIdError(
                f"{source}: label ids must be in 0..33, found range {ids.min()}..{ids.max()}"
            )
        ids = ids.astype(np.uint8)
    bad = ~_VALID_ID[ids]
    if bad.any():
        unknown = sorted(int(v) for v in np.unique(ids[bad]))
        raise UnknownLabelIdError(
            f"{source}: unknown Cityscapes label id(s) {unknown}; expected ids in "
            f"{min(VALID_LABEL_IDS)}..{max(VALID_LABEL_IDS)}"
        )
    return _ID_TO_TRAIN[ids]


def train_id_to_id(train_ids: np.ndarray) -> np.ndarray:
    """Map trainIds back to Cityscapes label ids (void → 0, 'unlabeled')."""
    lut = np.zeros(256, dtype=np.uint8)
    for label in TRAIN_LABELS:
        lut[label.trainId] = label.id
    return lut[np.asarray(train_ids, dtype=np.uint8)]


def check_train_ids(
    labels: np.ndarray, name: str = "labels", num_classes: int = NUM_CLASSES, min_ndim: int = 2
) -> np.ndarray:
    """Return ``labels`` as an integer array of trainIds, raising ValueError (naming ``name``)
    on a non-integer dtype, fewer than ``min_ndim`` axes, or a value that is neither a trainId
    below ``num_classes`` nor void."""
    y = np.asarray(labels)
    if y.ndim < min_ndim or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"{name}: expected integer trainIds with at least {min_ndim} axes, "
            f"got {y.dtype} {y.shape}"
        )
    bad = (y != IGNORE_INDEX) & ((y < 0) | (y >= num_classes))
    if bad.any():
        values = sorted(int(v) for v in np.unique(y[bad]))[:10]
        raise ValueError(
            f"{name}: values {values} are neither a trainId in 0..{num_classes - 1} "
            f"nor void ({IGNORE_INDEX})"
        )
    return y
