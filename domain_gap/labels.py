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
_INVALID_ID = np.ones(256, dtype=bool)
_INVALID_ID[list(VALID_LABEL_IDS)] = False

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
    # np.take: six times faster than ``table[ids]``, which converts every index to intp first
    bad = np.take(_INVALID_ID, ids)
    if bad.any():
        unknown = sorted(int(v) for v in np.unique(ids[bad]))
        raise UnknownLabelIdError(
            f"{source}: unknown Cityscapes label id(s) {unknown}; expected ids in "
            f"{min(VALID_LABEL_IDS)}..{max(VALID_LABEL_IDS)}"
        )
    return np.take(_ID_TO_TRAIN, ids)


def _color_table() -> dict[int, int]:
    """Packed RGB → trainId for every label colour; a train class wins a shared colour
    (polegroup shares pole's), other labels' colours are void."""
    table: dict[int, int] = {}
    for label in sorted(LABELS, key=lambda lb: 0 <= lb.trainId < IGNORE_INDEX):
        r, g, b = label.color
        train = label.trainId if 0 <= label.trainId < IGNORE_INDEX else IGNORE_INDEX
        table[(r << 16) | (g << 8) | b] = train
    return table


_COLOR_TO_TRAIN = _color_table()


def color_to_train_id(rgb: np.ndarray, source: str = "label") -> np.ndarray:
    """Map a (H, W, 3) uint8 image in the Cityscapes label colours to trainIds (void = 255).

    Raises :class:`UnknownLabelIdError` naming ``source`` for a colour of no label.
    """
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[-1] != 3 or a.dtype != np.uint8:
        raise UnknownLabelIdError(f"{source}: expected an (H, W, 3) uint8 colour label image")
    packed = (a[..., 0].astype(np.int64) << 16) | (a[..., 1].astype(np.int64) << 8) | a[..., 2]
    colors, inverse = np.unique(packed, return_inverse=True)
    unknown = [int(c) for c in colors if int(c) not in _COLOR_TO_TRAIN]
    if unknown:
        shown = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in unknown[:5]]
        raise UnknownLabelIdError(
            f"{source}: colour(s) {shown} are no Cityscapes label colour; expected the "
            "Cityscapes palette (an exact PNG, not a JPEG)"
        )
    lut = np.array([_COLOR_TO_TRAIN[int(c)] for c in colors], dtype=np.uint8)
    return lut[inverse.reshape(packed.shape)]


def train_id_to_color(train_ids: np.ndarray) -> np.ndarray:
    """(H, W) trainIds → (H, W, 3) uint8 Cityscapes colours (void black)."""
    lut = np.vstack([CLASS_COLORS, np.zeros((256 - NUM_CLASSES, 3), np.uint8)])
    lut[IGNORE_INDEX] = VOID_COLOR
    return lut[np.asarray(train_ids, dtype=np.uint8)]


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
