"""The class table against cityscapesscripts, id by id."""

from __future__ import annotations

import numpy as np
import pytest
from cityscapesscripts.helpers.labels import id2label, trainId2label

from domain_gap import labels


def test_id_to_train_id_matches_cityscapesscripts_for_every_id() -> None:
    for label_id in range(34):
        expected = id2label[label_id].trainId
        if expected < 0 or expected >= 255:
            expected = 255
        got = labels.id_to_train_id(np.array([[label_id]], dtype=np.uint8))[0, 0]
        assert got == expected, id2label[label_id].name


def test_train_classes_names_and_colours() -> None:
    assert labels.NUM_CLASSES == 19 and labels.IGNORE_INDEX == 255
    for train_id in range(19):
        assert labels.CLASS_NAMES[train_id] == trainId2label[train_id].name
        assert tuple(labels.CLASS_COLORS[train_id]) == trainId2label[train_id].color
    assert "traffic light" in labels.CLASS_NAMES and labels.CLASS_NAMES.index("traffic light") == 6


def test_void_is_never_a_class() -> None:
    void_ids = [i for i in range(34) if id2label[i].ignoreInEval]
    mapped = labels.id_to_train_id(np.array(void_ids, dtype=np.uint8))
    assert np.all(mapped == labels.IGNORE_INDEX)


@pytest.mark.parametrize("bad", [34, 99, 255])
def test_unknown_label_id_names_the_source(bad: int) -> None:
    with pytest.raises(labels.UnknownLabelIdError, match=rf"frame\.png: .*\[{bad}\]"):
        labels.id_to_train_id(np.array([[7, bad]], dtype=np.uint8), source="frame.png")


def test_round_trip_through_label_ids() -> None:
    train = np.arange(19, dtype=np.uint8)
    np.testing.assert_array_equal(labels.id_to_train_id(labels.train_id_to_id(train)), train)
