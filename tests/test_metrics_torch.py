"""The torch batch reduction equals the numpy metrics it replaces in the extraction pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from domain_gap.labels import IGNORE_INDEX
from domain_gap.metrics import (
    calibration_bins,
    class_pixel_fractions,
    confusion_matrices,
    ece_from_bins,
    mean_entropy,
    mean_max_prob,
    predict,
    sample_loss,
    softmax,
)
from domain_gap.metrics_torch import summarize_pixels

C = 19


def _batch(seed: int, b: int = 3, h: int = 24, w: int = 40, scale: float = 3.0):
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(b, C, h, w)) * scale).astype(np.float32)
    labels = rng.integers(0, C, size=(b, h, w)).astype(np.uint8)
    labels[:, :3] = IGNORE_INDEX  # void rows
    valid = np.ones((b, h, w), bool)
    valid[:, :, -7:] = False  # padding on the right
    labels[~valid] = IGNORE_INDEX
    labels[-1] = IGNORE_INDEX  # one image without any label
    return logits, labels, valid


def _assert_matches_numpy(s, logits, labels, valid) -> None:
    """The summary against the numpy metrics it replaces (every field but the label-free)."""
    np.testing.assert_allclose(s.loss, sample_loss(logits, labels), rtol=1e-5, atol=1e-7)
    pred = predict(logits)
    np.testing.assert_array_equal(s.confusion, confusion_matrices(pred, labels, C))
    probs = softmax(logits.astype(np.float64))
    expected_mean = (probs * valid[:, None]).sum(axis=(2, 3)) / valid.sum(axis=(1, 2))[:, None]
    np.testing.assert_allclose(s.prob_mean, expected_mean, rtol=1e-5, atol=1e-8)
    shown = np.where(valid, pred, IGNORE_INDEX)
    np.testing.assert_allclose(s.pred_frac, class_pixel_fractions(shown, C))
    np.testing.assert_array_equal(s.pred_small, shown[:, ::4, ::4])  # stride rows kept aligned
    bins = calibration_bins(logits, labels, valid, 15)
    # float32 vs float64 confidence may move a pixel sitting on a bin edge; totals agree.
    np.testing.assert_allclose(s.calibration[..., 0].sum(1), bins[..., 0].sum(1))
    assert np.abs(s.calibration - bins)[..., 0].sum() <= 2


@pytest.mark.parametrize("channels_last", [False, True])
def test_summary_equals_the_numpy_metrics(channels_last: bool) -> None:
    logits, labels, valid = _batch(0)
    x = torch.from_numpy(logits)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    s = summarize_pixels(x, labels, valid, n_bins=15, stride=4)

    _assert_matches_numpy(s, logits, labels, valid)
    assert s.loss[-1] == 0.0  # no labelled pixel: 0.0, as sample_loss
    assert s.pred_small.dtype == np.uint8
    bins = calibration_bins(logits, labels, valid, 15)
    for i in range(len(bins) - 1):
        assert ece_from_bins(s.calibration[i]) == pytest.approx(ece_from_bins(bins[i]), abs=1e-5)


# Letterboxed batches: only the rows holding a valid or labelled pixel are reduced, and the
# summary equals the numpy metrics over the whole frame all the same.


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
    _assert_matches_numpy(s, logits, labels, valid)
    bins = calibration_bins(logits, labels, valid, 15)
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


@pytest.mark.parametrize("scale", [0.01, 3.0, 300.0])
def test_label_free_scores_equal_the_numpy_ones(scale: float) -> None:
    logits, labels, valid = _batch(2, scale=scale)
    s = summarize_pixels(logits, labels, valid, n_bins=15, stride=4)
    np.testing.assert_allclose(s.entropy, mean_entropy(logits, valid), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(s.max_prob, mean_max_prob(logits, valid), rtol=1e-5, atol=1e-7)
    assert (s.entropy >= 0).all() and (s.entropy <= np.log(C) + 1e-5).all()
    # the last image has no label: the scores are defined all the same
    assert np.isfinite(s.entropy[-1]) and 1 / C <= s.max_prob[-1] <= 1


def test_ties_take_the_first_class_as_numpy() -> None:
    logits = np.zeros((1, C, 2, 2), np.float32)
    logits[0, [4, 9]] = 1.0
    labels = np.full((1, 2, 2), 9, np.uint8)
    s = summarize_pixels(logits, labels, np.ones((1, 2, 2), bool), n_bins=5, stride=1)
    assert (s.pred_small == 4).all() and (predict(logits) == 4).all()
    assert s.confusion[0, 9, 4] == 4


def test_sharp_logits_stay_finite() -> None:
    logits, labels, valid = _batch(1, scale=300.0)
    s = summarize_pixels(logits, labels, valid, n_bins=15, stride=4)
    assert np.isfinite(s.loss).all() and np.isfinite(s.prob_mean).all()
    np.testing.assert_allclose(s.loss, sample_loss(logits, labels), rtol=1e-5)


@pytest.mark.parametrize(
    ("labels_fn", "match"),
    [
        (lambda y: np.where(y == 0, 19, y).astype(np.uint8), "trainIds"),
        (lambda y: y[:, :-1], "expected"),
    ],
)
def test_bad_labels_are_named(labels_fn, match: str) -> None:
    logits, labels, valid = _batch(2)
    labels[:, 5:, :5] = 0
    with pytest.raises(ValueError, match=match):
        summarize_pixels(logits, labels_fn(labels), valid, n_bins=15, stride=4)


def test_integer_logits_are_rejected() -> None:
    with pytest.raises(ValueError, match="logits"):
        summarize_pixels(
            np.zeros((1, C, 2, 2), np.int64),
            np.zeros((1, 2, 2), np.uint8),
            np.ones((1, 2, 2), bool),
            15,
            1,
        )


def test_mean_probabilities_are_float64_accurate_at_full_size() -> None:
    # 256 x 512 pixels: one float32 sum over every pixel was off by up to ~6e-5 relative
    rng = np.random.default_rng(7)
    logits = (rng.normal(size=(1, C, 256, 512)) * 3).astype(np.float32)
    labels = np.full((1, 256, 512), IGNORE_INDEX, np.uint8)
    valid = np.ones((1, 256, 512), bool)
    valid[:, :, -40:] = False
    x = torch.from_numpy(logits).contiguous(memory_format=torch.channels_last)
    s = summarize_pixels(x, labels, valid, n_bins=15, stride=4)
    probs = softmax(logits.astype(np.float64))
    expected = (probs * valid[:, None]).sum(axis=(2, 3)) / valid.sum()
    np.testing.assert_allclose(s.prob_mean, expected, rtol=1e-6)


def test_scratch_buffer_reuses_one_buffer_and_gives_the_same_summary() -> None:
    from domain_gap import metrics_torch

    logits, labels, valid = _batch(3)
    plain = summarize_pixels(logits, labels, valid, n_bins=15, stride=4)
    with metrics_torch.scratch_buffer():
        first = metrics_torch._scratch(torch.from_numpy(logits).permute(0, 2, 3, 1))
        again = summarize_pixels(logits, labels, valid, n_bins=15, stride=4)
        held = metrics_torch._scratch(torch.from_numpy(logits).permute(0, 2, 3, 1))
        assert held.data_ptr() == first.data_ptr()  # the same block, not a fresh one
    assert getattr(metrics_torch._local, "buffers", None) is None  # released after the pass
    for name in ("loss", "confusion", "prob_mean", "calibration", "entropy", "max_prob"):
        np.testing.assert_array_equal(getattr(plain, name), getattr(again, name))


def test_chunked_summary_equals_the_whole_batch_and_the_numpy_metrics(monkeypatch) -> None:
    """One image per chunk (each trimmed to its own used rows) gives the batch's summary."""
    from domain_gap import metrics_torch

    rng = np.random.default_rng(11)
    h, w = 30, 24
    logits = (rng.normal(size=(4, C, h, w)) * 3).astype(np.float32)
    labels = rng.integers(0, C, size=(4, h, w)).astype(np.uint8)
    valid = np.zeros((4, h, w), bool)
    for i, (top, bottom) in enumerate([(5, 6), (0, 0), (9, 1), (2, 12)]):
        valid[i, top : h - bottom] = True
    labels[~valid] = IGNORE_INDEX
    labels[3] = IGNORE_INDEX
    x = torch.from_numpy(logits).contiguous(memory_format=torch.channels_last)
    whole = summarize_pixels(x, labels, valid, n_bins=15, stride=4)
    monkeypatch.setattr(metrics_torch, "CHUNK_ELEMENTS", 1)
    with metrics_torch.scratch_buffer():
        chunked = summarize_pixels(x, labels, valid, n_bins=15, stride=4)
    _assert_matches_numpy(chunked, logits, labels, valid)
    for name in ("loss", "confusion", "prob_mean", "pred_frac", "calibration", "entropy"):
        np.testing.assert_allclose(getattr(chunked, name), getattr(whole, name), rtol=1e-6)
    np.testing.assert_array_equal(chunked.pred_small, whole.pred_small)
    np.testing.assert_allclose(chunked.max_prob, mean_max_prob(logits, valid), rtol=1e-5)


def test_scratch_block_is_reused_for_smaller_chunks_and_grown_for_larger() -> None:
    from domain_gap import metrics_torch

    with metrics_torch.scratch_buffer():
        big = metrics_torch._scratch(torch.empty(2, 5, 7, C))
        small = metrics_torch._scratch(torch.empty(1, 3, 7, C))
        assert small.shape == (1, 3, 7, C) and small.is_contiguous()
        assert small.data_ptr() == big.data_ptr()  # a view of the same block
        grown = metrics_torch._scratch(torch.empty(3, 5, 7, C))
        assert grown.shape == (3, 5, 7, C) and grown.numel() == 3 * 5 * 7 * C
    assert getattr(metrics_torch._local, "buffers", None) is None
