"""Contracts of domain_gap.metrics, checked against independent references."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.special import log_softmax as sp_log_softmax
from scipy.special import softmax as sp_softmax

from domain_gap import metrics
from domain_gap.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, train_id_to_id

C = NUM_CLASSES


def _random_case(
    seed: int, b: int = 3, h: int = 7, w: int = 9, void_share: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=(b, C, h, w)).astype(np.float32)
    labels = rng.integers(0, C, size=(b, h, w)).astype(np.uint8)
    labels[rng.random((b, h, w)) < void_share] = IGNORE_INDEX
    return logits, labels


def _reference_ce(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy in float64 with scipy, 0 at void."""
    lsm = sp_log_softmax(logits.astype(np.float64), axis=1)
    out = np.zeros(labels.shape)
    for b, i, j in np.ndindex(labels.shape):
        if labels[b, i, j] != IGNORE_INDEX:
            out[b, i, j] = -lsm[b, labels[b, i, j], i, j]
    return out


def _reference_confusion(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    cm = np.zeros((C, C), dtype=np.int64)
    for p, g in zip(pred.ravel(), labels.ravel(), strict=True):
        if g != IGNORE_INDEX:
            cm[g, p] += 1
    return cm


def test_softmax_and_log_softmax_match_scipy_and_are_stable() -> None:
    logits = _random_case(0)[0].astype(np.float64)
    np.testing.assert_allclose(
        metrics.log_softmax(logits), sp_log_softmax(logits, axis=1), atol=1e-12
    )
    np.testing.assert_allclose(metrics.softmax(logits), sp_softmax(logits, axis=1), atol=1e-12)
    huge = np.array([[[[1000.0]], [[0.0]], [[-1000.0]]]])
    assert np.isfinite(metrics.log_softmax(huge)).all()
    np.testing.assert_allclose(metrics.softmax(huge)[0, :, 0, 0], [1.0, 0.0, 0.0], atol=1e-12)


def test_pixel_cross_entropy_matches_float64_scipy_and_is_zero_at_void() -> None:
    logits, labels = _random_case(1)
    ce = metrics.pixel_cross_entropy(logits, labels)
    assert ce.dtype == np.float32
    assert ce.shape == labels.shape
    np.testing.assert_allclose(ce, _reference_ce(logits, labels), rtol=1e-5, atol=1e-5)
    assert (ce[labels == IGNORE_INDEX] == 0).all()
    assert (ce[labels != IGNORE_INDEX] > 0).all()


def test_loss_ignores_logits_at_void_pixels() -> None:
    logits, labels = _random_case(2)
    changed = logits.copy()
    void = labels == IGNORE_INDEX
    assert void.any()
    noise = np.random.default_rng(9).normal(scale=50.0, size=changed.shape).astype(np.float32)
    changed = np.where(void[:, None], noise, changed)
    np.testing.assert_array_equal(
        metrics.sample_loss(logits, labels), metrics.sample_loss(changed, labels)
    )
    np.testing.assert_array_equal(
        metrics.pixel_cross_entropy(logits, labels), metrics.pixel_cross_entropy(changed, labels)
    )


def test_sample_loss_is_mean_over_valid_pixels_and_zero_without_any() -> None:
    logits, labels = _random_case(3)
    labels[1] = IGNORE_INDEX
    ref = _reference_ce(logits, labels)
    loss = metrics.sample_loss(logits, labels)
    assert loss.dtype == np.float32 and loss.shape == (3,)
    for b in (0, 2):
        valid = labels[b] != IGNORE_INDEX
        assert loss[b] == pytest.approx(ref[b][valid].mean(), rel=1e-5)
    assert loss[1] == 0.0


def test_predict_is_argmax_not_a_threshold() -> None:
    logits = np.full((1, C, 1, 2), -5.0, dtype=np.float32)  # sigmoid < 0.5 everywhere
    logits[0, 7, 0, 0] = -1.0
    logits[0, 3, 0, 1] = -2.0
    pred = metrics.predict(logits)
    assert pred.dtype == np.uint8
    np.testing.assert_array_equal(pred, [[[7, 3]]])


def test_confusion_matrices_match_a_direct_count() -> None:
    logits, labels = _random_case(4, b=4, h=11, w=13)
    pred = metrics.predict(logits)
    cm = metrics.confusion_matrices(pred, labels)
    assert cm.dtype == np.int64 and cm.shape == (4, C, C)
    for b in range(4):
        np.testing.assert_array_equal(cm[b], _reference_confusion(pred[b], labels[b]))
        assert cm[b].sum() == (labels[b] != IGNORE_INDEX).sum()


def test_batch_results_equal_per_sample_results() -> None:
    logits, labels = _random_case(5, b=4)
    batch_cm = metrics.confusion_matrices(metrics.predict(logits), labels)
    batch = {
        "loss": metrics.sample_loss(logits, labels),
        "ce": metrics.pixel_cross_entropy(logits, labels),
        "miou": metrics.sample_miou(batch_cm),
        "acc": metrics.pixel_accuracy(batch_cm),
        "iou": metrics.per_class_iou(batch_cm),
        "frac": metrics.class_pixel_fractions(labels),
    }
    for b in range(4):
        lg, lb = logits[b : b + 1], labels[b : b + 1]
        cm = metrics.confusion_matrices(metrics.predict(lg), lb)
        np.testing.assert_array_equal(cm[0], batch_cm[b])
        np.testing.assert_array_equal(metrics.sample_loss(lg, lb)[0], batch["loss"][b])
        np.testing.assert_array_equal(metrics.pixel_cross_entropy(lg, lb)[0], batch["ce"][b])
        np.testing.assert_array_equal(metrics.sample_miou(cm)[0], batch["miou"][b])
        np.testing.assert_array_equal(metrics.pixel_accuracy(cm)[0], batch["acc"][b])
        np.testing.assert_array_equal(metrics.per_class_iou(cm)[0], batch["iou"][b])
        np.testing.assert_array_equal(metrics.class_pixel_fractions(lb)[0], batch["frac"][b])


def test_iou_on_a_hand_made_case() -> None:
    labels = np.array([[[0, 0, 1, 1, IGNORE_INDEX]]], dtype=np.uint8)
    pred = np.array([[[0, 1, 1, 2, 5]]], dtype=np.uint8)
    cm = metrics.confusion_matrices(pred, labels)
    iou = metrics.per_class_iou(cm)[0]
    # class 0: TP 1, FN 1 -> 1/2; class 1: TP 1, FP 1, FN 1 -> 1/3; class 2: FP 1 -> 0.
    assert iou[0] == pytest.approx(0.5)
    assert iou[1] == pytest.approx(1 / 3)
    assert iou[2] == 0.0
    assert np.isnan(iou[3:]).all()  # class 5 predicted only at a void pixel: not counted
    assert metrics.sample_miou(cm)[0] == pytest.approx((0.5 + 1 / 3 + 0.0) / 3)
    assert metrics.pixel_accuracy(cm)[0] == pytest.approx(2 / 4)


def test_all_void_sample_gives_nan_iou_and_accuracy_without_warnings() -> None:
    labels = np.full((1, 4, 4), IGNORE_INDEX, dtype=np.uint8)
    cm = metrics.confusion_matrices(np.zeros((1, 4, 4), np.uint8), labels)
    with np.errstate(all="raise"):
        assert np.isnan(metrics.sample_miou(cm)[0])
        assert np.isnan(metrics.pixel_accuracy(cm)[0])


def test_class_pixel_fractions_sum_to_one_with_void_last() -> None:
    labels = np.array([[[0, 0, 18, IGNORE_INDEX]]], dtype=np.uint8)
    frac = metrics.class_pixel_fractions(labels)
    assert frac.shape == (1, C + 1)
    assert frac[0, 0] == 0.5 and frac[0, 18] == 0.25 and frac[0, C] == 0.25
    assert frac.sum() == pytest.approx(1.0)


def test_inputs_are_not_mutated() -> None:
    logits, labels = _random_case(6)
    lg, lb = logits.copy(), labels.copy()
    pred = metrics.predict(logits)
    pr = pred.copy()
    cm = metrics.confusion_matrices(pred, labels)
    cmc = cm.copy()
    metrics.sample_loss(logits, labels)
    metrics.per_class_iou(cm)
    metrics.sample_miou(cm)
    metrics.pixel_accuracy(cm)
    metrics.dataset_iou(cm)
    metrics.class_pixel_fractions(labels)
    np.testing.assert_array_equal(logits, lg)
    np.testing.assert_array_equal(labels, lb)
    np.testing.assert_array_equal(pred, pr)
    np.testing.assert_array_equal(cm, cmc)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: metrics.sample_loss(np.zeros((1, C, 2, 2)), np.full((1, 2, 2), 19)), "trainId"),
        (lambda: metrics.sample_loss(np.zeros((C, 2, 2)), np.zeros((1, 2, 2), np.uint8)), "(B, C"),
        (
            lambda: metrics.confusion_matrices(
                np.full((1, 2, 2), 19, np.uint8), np.zeros((1, 2, 2), np.uint8)
            ),
            "pred",
        ),
        (
            lambda: metrics.confusion_matrices(
                np.zeros((1, 2, 3), np.uint8), np.zeros((1, 2, 2), np.uint8)
            ),
            "shape",
        ),
        (lambda: metrics.per_class_iou(np.zeros((3, 4))), "(..., C, C)"),
    ],
)
def test_bad_input_raises_a_clear_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def _cityscapes_eval(pred_paths: list[str], gt_paths: list[str]) -> dict:
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling

    args = evalPixelLevelSemanticLabeling.CArgs()
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = False
    args.evalLabels = []
    args.printRow = 5
    args.normalized = True
    args.colorized = False
    args.bold = ""
    args.nocol = ""
    args.JSONOutput = False
    args.quiet = True
    args.avgClassSize = evalPixelLevelSemanticLabeling.args.avgClassSize
    return evalPixelLevelSemanticLabeling.evaluateImgLists(pred_paths, gt_paths, args)


def test_iou_matches_cityscapesscripts_pixel_level_evaluation(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    preds, gts, pred_paths, gt_paths = [], [], [], []
    for i in range(4):
        h, w = 24 + 4 * i, 40
        gt = rng.integers(0, C, size=(h, w)).astype(np.uint8)
        gt[rng.random((h, w)) < 0.15] = IGNORE_INDEX
        gt[:3] = IGNORE_INDEX
        # A noisy copy of the GT: realistic, with some classes right and others confused.
        pred = np.where(rng.random((h, w)) < 0.6, gt, rng.integers(0, C, size=(h, w)))
        pred = np.where(pred == IGNORE_INDEX, rng.integers(0, C, size=(h, w)), pred)
        pred = pred.astype(np.uint8)
        if i == 0:
            gt[gt == 4] = 0  # class 4 absent from this GT
        preds.append(pred)
        gts.append(gt)
        pred_paths.append(str(tmp_path / f"pred_{i}.png"))
        gt_paths.append(str(tmp_path / f"gt_{i}_gtFine_labelIds.png"))
        assert cv2.imwrite(pred_paths[-1], train_id_to_id(pred))
        assert cv2.imwrite(gt_paths[-1], train_id_to_id(gt))

    result = _cityscapes_eval(pred_paths, gt_paths)
    cms = [metrics.confusion_matrices(p[None], g[None]) for p, g in zip(preds, gts, strict=True)]
    iou, miou = metrics.dataset_iou(np.concatenate(cms))
    expected = np.array([result["classScores"][name] for name in CLASS_NAMES])
    np.testing.assert_allclose(iou, expected, atol=1e-6)
    assert miou == pytest.approx(result["averageScoreClasses"], abs=1e-6)
    # Summing first equals passing one summed matrix.
    iou_sum, miou_sum = metrics.dataset_iou(np.concatenate(cms).sum(axis=0))
    np.testing.assert_array_equal(iou, iou_sum)
    assert miou == miou_sum


def _direct_pixel_ece(logits: np.ndarray, labels: np.ndarray, n_bins: int) -> float:
    """Pixel-level ECE straight from the definition: scipy softmax, np.digitize, per-bin means."""
    probs = sp_softmax(logits.astype(np.float64), axis=1)
    conf = probs.max(axis=1).ravel()
    correct = (probs.argmax(axis=1) == labels).ravel()
    keep = labels.ravel() != IGNORE_INDEX
    conf, correct = conf[keep], correct[keep]
    which = np.digitize(conf, np.linspace(0, 1, n_bins + 1)[1:-1])
    ece = 0.0
    for k in range(n_bins):
        in_bin = which == k
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return ece


def test_calibration_bins_give_the_direct_pixel_level_ece() -> None:
    logits, labels = _random_case(11, b=4, h=9, w=11)
    logits = logits * 0.4  # spread confidences over many bins
    labels[0][metrics.predict(logits)[0] == labels[0]] = IGNORE_INDEX  # vary accuracy per image
    bins = metrics.calibration_bins(logits, labels, n_bins=10)
    assert bins.shape == (4, 10, 3) and bins.dtype == np.float64
    assert bins[..., 0].sum() == (labels != IGNORE_INDEX).sum()
    assert metrics.ece_from_bins(bins.sum(axis=0)) == pytest.approx(
        _direct_pixel_ece(logits, labels, 10), abs=1e-12
    )
    probs = sp_softmax(logits.astype(np.float64), axis=1)
    np.testing.assert_allclose(
        metrics.calibration_bins(probs, labels, n_bins=10, kind="probs"), bins, atol=1e-9
    )


def test_per_image_bins_sum_to_the_bins_of_the_concatenated_pixels() -> None:
    logits, labels = _random_case(12, b=3, h=5, w=6)
    per_image = metrics.calibration_bins(logits, labels)
    # all three images side by side as one wide image
    wide_logits = np.concatenate(list(logits), axis=-1)[None]
    wide_labels = np.concatenate(list(labels), axis=-1)[None]
    np.testing.assert_allclose(
        per_image.sum(axis=0), metrics.calibration_bins(wide_logits, wide_labels)[0], atol=1e-9
    )
    assert metrics.ece_from_bins(per_image.sum(axis=0)) == pytest.approx(
        _direct_pixel_ece(logits, labels, 15), abs=1e-12
    )


def test_calibration_bins_respect_the_valid_mask_and_vectorised_ece() -> None:
    logits, labels = _random_case(13, b=2)
    valid = np.random.default_rng(0).random(labels.shape) < 0.5
    masked = labels.copy()
    masked[~valid] = IGNORE_INDEX
    np.testing.assert_array_equal(
        metrics.calibration_bins(logits, labels, valid),
        metrics.calibration_bins(logits, masked),
    )
    bins = metrics.calibration_bins(logits, labels)
    stack = metrics.ece_from_bin_stack(bins)
    assert stack.shape == (2,)
    assert stack[1] == pytest.approx(metrics.ece_from_bins(bins[1]))
    assert np.isnan(metrics.ece_from_bins(np.zeros((15, 3))))


def test_perfectly_calibrated_bins_have_zero_ece() -> None:
    bins = np.array([[10.0, 2.5, 2.5], [0.0, 0.0, 0.0], [4.0, 3.6, 3.6]])
    assert metrics.ece_from_bins(bins) == 0.0
    bins[0, 2] = 0.5  # bin 0: acc 0.05 vs conf 0.25, 10 of 14 pixels
    assert metrics.ece_from_bins(bins) == pytest.approx(10 / 14 * 0.2)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: metrics.calibration_bins(*_random_case(0), n_bins=0), "n_bins"),
        (lambda: metrics.calibration_bins(*_random_case(0), kind="softmax"), "kind"),
        (
            lambda: metrics.calibration_bins(
                _random_case(0)[0], _random_case(0)[1], np.ones((3, 7, 8), bool)
            ),
            "valid",
        ),
        (lambda: metrics.ece_from_bins(np.zeros((2, 15, 3))), "bins_summed"),
        (lambda: metrics.ece_from_bins(np.zeros((15, 2))), "(n_bins, 3)"),
    ],
)
def test_calibration_bad_input_raises_a_clear_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        call()
