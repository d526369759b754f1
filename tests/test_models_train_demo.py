"""Demo training pieces: augmentation, seeded reproducibility, evaluation, the card."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from domain_gap.config import Config
from domain_gap.data import DomainDataset
from domain_gap.labels import CLASS_NAMES, IGNORE_INDEX
from domain_gap.metrics import confusion_matrices, dataset_iou
from models import build_model
from models.train_demo import (
    Recipe,
    _check_source_reproduces,
    augment,
    evaluate,
    fastest_pace,
    load_split,
    render_model_card,
    train,
)

torch.set_num_threads(1)

TINY = Recipe(head_channels=16, steps=2, batch_size=2, crop=(64, 128), warmup_steps=1)


def test_augment_is_seeded_and_keeps_pixels_paired() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 80, 3), dtype=np.uint8)
    label = (image[..., 0] // 32).astype(np.uint8)  # label is a function of the pixel
    out = [
        augment(image, label, np.random.default_rng(5), (32, 64), (0.5, 1.5), (1, 2, 3))
        for _ in range(2)
    ]
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])
    for seed in range(20):
        img, lab = augment(
            image, label, np.random.default_rng(seed), (32, 64), (1.0, 1.0), (0,) * 3
        )
        assert img.shape == (32, 64, 3) and lab.shape == (32, 64)
        np.testing.assert_array_equal(lab, img[..., 0] // 32)  # scale 1: exact crops/flips
    img, lab = augment(image, label, np.random.default_rng(1), (64, 128), (0.5, 0.5), (7, 8, 9))
    assert (lab == IGNORE_INDEX).any()  # padded area is void ...
    assert (img[lab == IGNORE_INDEX] == (7, 8, 9)).all()  # ... and filled with the mean colour


@pytest.mark.slow
def test_tiny_training_is_reproducible_and_uses_train_only(tiny_config: Config) -> None:
    dataset = DomainDataset(tiny_config)
    x, y, ids = load_split(dataset, tiny_config.source_domain, "train")
    assert all(dataset_id.startswith("cityscapes/") for dataset_id in ids)
    assert {r.subset for r in dataset.select("cityscapes") if r.sample_id in ids} == {"train"}
    mean, std = tiny_config.image.mean, tiny_config.image.std
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model("deeplabv3plus_efficientnet_lite0", head_channels=16)
        history = train(model, x, y, TINY, mean, std, log=lambda _: None)
        assert history[-1]["step"] == 2 and np.isfinite(history[-1]["loss"])
        weights.append(model.state_dict())
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    other = build_model("deeplabv3plus_efficientnet_lite0", head_channels=16)
    torch.manual_seed(0)
    train(other, x, y, replace(TINY, seed=1), mean, std, log=lambda _: None)
    key = "classifier.classifier.3.weight"
    assert not torch.equal(other.state_dict()[key], weights[0][key])


def test_evaluate_uses_dataset_level_iou(tiny_config: Config) -> None:
    dataset = DomainDataset(tiny_config)
    x, y, _ = load_split(dataset, "cityscapes", "val")
    torch.manual_seed(0)
    model = build_model("deeplabv3plus_mobilenet", head_channels=8).eval()
    mean, std = tiny_config.image.mean, tiny_config.image.std
    result = evaluate(model, x, y, mean, std, batch_size=3)
    # independent recomputation: one batch, argmax in torch
    from domain_gap.encoders import normalize_image

    with torch.no_grad():
        pred = model(torch.from_numpy(normalize_image(x, mean, std))).argmax(1).numpy()
    iou, miou = dataset_iou(confusion_matrices(pred.astype(np.uint8), y).sum(0))
    assert result["miou"] == miou
    assert result["images"] == len(x)
    for name, value in zip(CLASS_NAMES, iou, strict=True):
        got = result["per_class_iou"][name]
        assert (got is None) == bool(np.isnan(value))
        if got is not None:
            assert got == value


def _card() -> dict:
    """A small made-up card with every key render_model_card reads."""
    per_class = {name: None for name in CLASS_NAMES}
    per_class.update({"road": 0.91234, "car": 0.5})
    metrics = {
        "cityscapes/val": {
            "miou": 0.70612,
            "pixel_accuracy": 0.9,
            "per_class_iou": per_class,
            "images": 100,
        },
        "kitti/val": {
            "miou": 0.41,
            "pixel_accuracy": 0.7,
            "per_class_iou": {**per_class, "car": None},
            "images": 100,
        },
    }
    card = {
        "arch": "deeplabv3plus_efficientnet_lite0",
        "output_stride": 16,
        "head_channels": 128,
        "parameters": 1234567,
        "recipe": {**Recipe().__dict__, "crop": [192, 384], "scale": [0.75, 1.25]},
        "data": {"sample_seed": 0, "source": "cityscapes", "train_images": 300},
        "metrics": metrics,
        "files": {"checkpoint_bytes": 9e6, "onnx_bytes": 8e6},
        "onnx": {"tap": "aspp", "max_abs_diff": 2e-5},
        "image": {
            "height": 256,
            "width": 512,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
        },
        "timing": {
            "train_seconds": 600,
            "train_cpu_seconds": 1100,
            "fastest_seconds_per_step": 1.2,
            "train_seconds_at_fastest_pace": 480,
            "total_seconds": 700,
            "threads": 2,
            "load_average_start": 1.0,
            "load_average_end": 2.0,
            "machine": "x86_64",
        },
        "software": {"torch": "2.14.1"},
    }
    return card


def test_model_card_renders_every_number() -> None:
    card = _card()
    text = render_model_card(card)
    assert "SYNTHETIC" in text
    assert "| road | 0.912 | 0.912 |" in text
    assert "| car | 0.500 | — |" in text
    assert "**0.706**" in text and "**0.410**" in text
    assert "| sky |" not in text  # absent everywhere
    assert "10.0 min" in text and "1,234,567" in text
    assert "1.20 s/step" in text and "8.0 min" in text


def test_model_card_says_when_targets_were_remeasured() -> None:
    card = _card()
    assert "Re-measured" not in render_model_card(card)
    card["remeasured"] = {"metrics": ["kitti/val"], "sample_version": 3, "source_miou_diff": 0.0}
    text = render_model_card(card)
    assert "**Re-measured, not retrained:** the kitti/val column was" in text
    assert "sample generator v3" in text and "--remeasure-targets" in text


def test_remeasuring_refuses_a_changed_source() -> None:
    card = {"metrics": {"cityscapes/val": {"miou": 0.7, "images": 100}}}
    assert _check_source_reproduces(card, {"miou": 0.701, "images": 100}, "cityscapes") == (
        pytest.approx(0.001)
    )
    with pytest.raises(ValueError, match="retrain"):
        _check_source_reproduces(card, {"miou": 0.69, "images": 100}, "cityscapes")
    with pytest.raises(ValueError, match="retrain"):
        _check_source_reproduces(card, {"miou": 0.7, "images": 99}, "cityscapes")


def test_fastest_pace_takes_the_quickest_logged_stretch() -> None:
    history = [
        {"step": 25, "seconds": 100.0},
        {"step": 50, "seconds": 130.0},  # 1.2 s/step
        {"step": 60, "seconds": 150.0},  # 2.0 s/step
    ]
    assert fastest_pace(history) == pytest.approx(1.2)
