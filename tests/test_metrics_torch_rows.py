"""summarize_pixels on letterboxed batches: only the rows holding a valid or labelled pixel are
reduced, and the summary equals the numpy metrics over the whole frame all the same."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from domain_gap.labels import IGNORE_INDEX
from domain_gap.metrics import (
    calibration_bins,
    class_pixel_fractions,
    confusion_matrices,
    mean_entropy,
    mean_max_prob,
    predict,
    sample_loss,
    softmax,
)
from domain_gap.metrics_torch import summarize_pixels

C = 19


def _letterboxed(seed: int, top: int, bottom: int, h: int = 30, w: int = 24):
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(3, C, h, w)) * 3).astype(np.float32)
    labels = rng.integers(0, C, size=(3, h, w)).astype(np.uint8)
    valid = np.zeros((3, h, w), bool)
    valid[:, top : h - bottom] = True
    labels[~valid] = IGNORE_INDEX
    labels[1, top + 2 : top + 4] = IGNORE_INDEX  # void rows inside the frame
    labels[2] = IGNORE_INDEX  # no label at all
    return logits, labels, valid


@pytest.mark.parametrize(("top", "bottom"), [(5, 6), (1, 0), (0, 3), (6, 7), (3, 3)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_letterboxed_summary_equals_the_numpy_metrics(
    top: int, bottom: int, channels_last: bool
) -> None:
    logits, labels, valid = _letterboxed(top * 10 + bottom, top, bottom)
    x = torch.from_numpy(logits)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    s = summarize_pixels(x, labels, valid, n_bins=15, stride=4)
    np.testing.assert_allclose(s.loss, sample_loss(logits, labels), rtol=1e-5, atol=1e-7)
    pred = predict(logits)
    np.testing.assert_array_equal(s.confusion, confusion_matrices(pred, labels, C))
    probs = softmax(logits.astype(np.float64))
    expected = (probs * valid[:, None]).sum(axis=(2, 3)) / valid.sum(axis=(1, 2))[:, None]
    np.testing.assert_allclose(s.prob_mean, expected, rtol=1e-5, atol=1e-8)
    shown = np.where(valid, pred, IGNORE_INDEX)
    np.testing.assert_allclose(s.pred_frac, class_pixel_fractions(shown, C))
    np.testing.assert_array_equal(s.pred_small, shown[:, ::4, ::4])  # stride rows kept aligned
    bins = calibration_bins(logits, labels, valid, 15)
    np.testing.assert_array_equal(s.calibration[..., 0].sum(1), bins[..., 0].sum(1))
    assert np.abs(s.calibration - bins)[..., 0].sum() <= 2
    np.testing.assert_allclose(s.calibration[..., 2], bins[..., 2], atol=2)
    np.testing.assert_allclose(s.entropy, mean_entropy(logits, valid), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(s.max_prob, mean_max_prob(logits, valid), rtol=1e-5, atol=1e-7)


def test_labels_outside_the_valid_rows_still_count() -> None:
    logits, labels, valid = _letterboxed(3, 5, 6)
    labels[0, 1] = 7  # a labelled row in the padding: the loss and confusion still see it
    s = summarize_pixels(logits, labels, valid, n_bins=15, stride=4)
    np.testing.assert_allclose(s.loss, sample_loss(logits, labels), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(s.confusion, confusion_matrices(predict(logits), labels, C))


def test_a_batch_without_any_valid_or_labelled_pixel() -> None:
    logits, labels, valid = _letterboxed(4, 5, 6)
    labels[:] = IGNORE_INDEX
    valid[:] = False
    s = summarize_pixels(logits, labels, valid, n_bins=15, stride=4)
    assert (s.loss == 0).all() and (s.confusion == 0).all() and (s.calibration == 0).all()
    np.testing.assert_array_equal(s.pred_frac[:, -1], 1.0)
    assert (s.pred_small == IGNORE_INDEX).all()
    assert s.pred_small.shape == (3, 8, 6)
