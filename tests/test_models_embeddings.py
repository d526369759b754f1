"""Embeddings: image embedding = global mean of a tap; class embeddings = masked means."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import build_model, class_embeddings, image_embedding, run_batch

torch.set_num_threads(1)


def test_image_embedding_is_the_spatial_mean() -> None:
    g = torch.Generator().manual_seed(0)
    taps = {"aspp": torch.randn(2, 5, 3, 4, generator=g), "decoder": torch.randn(2, 6, 8, 8)}
    emb = image_embedding(taps)
    assert emb.shape == (2, 5)
    ref = np.asarray(taps["aspp"]).reshape(2, 5, -1).mean(axis=-1)
    np.testing.assert_allclose(emb.numpy(), ref, rtol=1e-6)
    assert image_embedding(taps, "decoder").shape == (2, 6)
    with pytest.raises(ValueError, match="tap"):
        image_embedding(taps, "logits")
    with pytest.raises(KeyError, match="high"):
        image_embedding(taps, "high")


def _reference_class_embeddings(feature: np.ndarray, labels: np.ndarray, c: int):
    """Loop reference: nearest downsampling by index floor(i * H / h), then masked means."""
    b, d, h, w = feature.shape
    H, W = labels.shape[1:]
    rows = (np.arange(h) * H) // h
    cols = (np.arange(w) * W) // w
    emb = np.zeros((b, c, d))
    counts = np.zeros((b, c))
    for i in range(b):
        small = labels[i][np.ix_(rows, cols)]
        for k in range(c):
            mask = small == k
            counts[i, k] = mask.sum()
            if mask.any():
                emb[i, k] = feature[i][:, mask].mean(axis=1)
    return emb, counts


def test_class_embeddings_match_a_loop_reference() -> None:
    rng = np.random.default_rng(0)
    feature = rng.standard_normal((2, 4, 6, 8)).astype(np.float32)
    labels = rng.choice([0, 1, 5, 255], size=(2, 25, 37)).astype(np.uint8)
    labels[1][labels[1] == 5] = 1  # class 5 absent from sample 1
    emb, counts = class_embeddings(torch.from_numpy(feature), labels, num_classes=7)
    ref_emb, ref_counts = _reference_class_embeddings(feature, labels, 7)
    assert emb.shape == (2, 7, 4) and counts.shape == (2, 7)
    np.testing.assert_allclose(counts.numpy(), ref_counts)
    np.testing.assert_allclose(emb.numpy(), ref_emb, rtol=1e-5, atol=1e-6)
    assert counts[1, 5] == 0 and torch.all(emb[1, 5] == 0)
    assert counts.sum() < 2 * 6 * 8  # void cells are not counted


def test_class_embeddings_reject_bad_labels() -> None:
    feature = torch.zeros(1, 2, 4, 4)
    with pytest.raises(ValueError, match="trainId"):
        class_embeddings(feature, np.full((1, 8, 8), 19, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        class_embeddings(feature, np.zeros((2, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="integer"):
        class_embeddings(feature, torch.zeros(1, 8, 8))


def test_run_batch_is_deterministic_and_consistent() -> None:
    torch.manual_seed(0)
    model = build_model("deeplabv3plus_mobilenet", head_channels=16)
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
    labels = np.random.default_rng(2).integers(0, 19, size=(2, 64, 64)).astype(np.uint8)
    a = run_batch(model, x, "cpu", tap="decoder", labels=labels)
    b = run_batch(model, x, "cpu", tap="decoder", labels=labels)
    assert set(a) == {"logits", "embedding", "class_embedding", "class_count"}
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert a["logits"].shape == (2, 19, 64, 64)
    assert a["embedding"].shape == (2, 16)
    assert a["class_embedding"].shape == (2, 19, 16)
    assert a["class_count"].sum() == 2 * 16 * 16
    one = run_batch(model, x[:1], "cpu", tap="decoder")
    np.testing.assert_allclose(one["embedding"], a["embedding"][:1], rtol=1e-5, atol=1e-6)
