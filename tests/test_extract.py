"""Extraction cache and streaming pass: records, reuse, resume, invalidation, atomic writes."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from domain_gap.analysis.cache import CACHE_VERSION, FeatureCache, file_sha256, prep_hash
from domain_gap.analysis.extract import Features, metadata_columns
from domain_gap.config import parse_config

# --------------------------------------------------------------------------- cache unit tests


def _config(tmp_path: Path, **image: object) -> object:
    data = {
        "domains": [{"name": "a", "kind": "cityscapes", "root": "a", "splits": ["val"]}],
        "image": {"height": 32, "width": 64, **image},
    }
    return parse_config(data, base_dir=tmp_path)


def test_file_sha256_matches_hashlib(tmp_path: Path) -> None:
    import hashlib

    p = tmp_path / "ckpt.pt"
    p.write_bytes(os.urandom(3 << 20))
    assert file_sha256(p) == hashlib.sha256(p.read_bytes()).hexdigest()


def test_prep_hash_changes_with_preprocessing(tmp_path: Path) -> None:
    base = prep_hash(_config(tmp_path))
    assert base == prep_hash(_config(tmp_path))
    assert base != prep_hash(_config(tmp_path, resize="crop"))
    assert base != prep_hash(_config(tmp_path, height=64))
    assert base != prep_hash(_config(tmp_path, mean=[0.5, 0.5, 0.5]))


def test_cache_round_trip_is_atomic(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, "ab" * 32, "aspp", "p1")
    arrays = {"embedding": np.arange(4, dtype=np.float32), "metadata": np.asarray('{"x": 1}')}
    path = cache.save("a", "a/x/1.png", arrays, source="/root")
    assert path.is_file() and path.parent == cache.root / "a"
    got = cache.load("a", "a/x/1.png", "/root", ("embedding", "metadata"))
    assert got is not None
    np.testing.assert_array_equal(got["embedding"], arrays["embedding"])
    assert str(got["metadata"]) == '{"x": 1}'
    assert int(got["cache_version"]) == CACHE_VERSION
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    # another root or sample id is another shard
    assert cache.load("a", "a/x/1.png", "/other") is None
    assert cache.load("a", "a/x/2.png", "/root") is None


def test_cache_failed_write_leaves_no_temp_file(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, "cd" * 32, "aspp", "p1")

    class Boom:
        def __array__(self, *args: object, **kwargs: object) -> np.ndarray:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        cache.save("a", "a/1.png", {"embedding": Boom()})  # type: ignore[dict-item]
    folder = cache.root / "a"
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_id", "missing_field"])
def test_cache_detects_unusable_shards(tmp_path: Path, damage: str) -> None:
    cache = FeatureCache(tmp_path, "ef" * 32, "aspp", "p1")
    arrays = {"embedding": np.random.default_rng(0).normal(size=512).astype(np.float32)}
    path = cache.save("a", "a/1.png", arrays)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    elif damage == "wrong_id":
        other = cache.save("a", "a/2.png", arrays)
        os.replace(other, path)
    required = ("embedding", "loss") if damage == "missing_field" else ("embedding",)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cache.load("a", "a/1.png", required=required) is None
    assert any(str(path) in str(w.message) for w in caught)


def test_for_config_names_missing_checkpoint(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with pytest.raises(ValueError, match="checkpoint not found"):
        FeatureCache.for_config(config)


# --------------------------------------------------------------------------- Features helpers


def test_metadata_columns_types_and_missing() -> None:
    cols = metadata_columns(
        [{"a": 1.0, "b": "x", "c": True}, {"a": None, "b": "y", "c": False, "d": 2}]
    )
    np.testing.assert_array_equal(cols["a"], [1.0, np.nan])
    assert cols["b"].tolist() == ["x", "y"]
    np.testing.assert_array_equal(cols["c"], [1.0, 0.0])
    np.testing.assert_array_equal(cols["d"], [np.nan, 2.0])


def _features(n: int, domain: str, d: int = 3) -> Features:
    rng = np.random.default_rng(n)
    return Features(
        sample_ids=np.array([f"{domain}/{i}" for i in range(n)]),
        domains=np.full(n, domain),
        subsets=np.full(n, "val"),
        embeddings=rng.normal(size=(n, d)).astype(np.float32),
        class_emb=np.zeros((n, 19, d), np.float16),
        class_counts=np.zeros((n, 19), np.int64),
        loss=rng.random(n),
        miou=rng.random(n),
        class_iou=rng.random((n, 19)),
        pixel_acc=rng.random(n),
        confusion=np.zeros((n, 19, 19), np.int64),
        prob_mean=rng.random((n, 19)),
        pred_frac=rng.random((n, 20)),
        labelled=np.ones(n, bool),
        metadata={"brightness": rng.random(n), "group": np.full(n, domain)},
    )


def test_features_concat_and_select() -> None:
    a, b = _features(3, "a"), _features(2, "b")
    b.metadata["only_b"] = np.array([5.0, 6.0])
    both = Features.concat([a, b])
    assert len(both) == 5
    np.testing.assert_array_equal(both.embeddings[3:], b.embeddings)
    np.testing.assert_array_equal(both.metadata["only_b"], [np.nan] * 3 + [5.0, 6.0])
    assert both.metadata["group"].tolist() == ["a"] * 3 + ["b"] * 2
    back = both.domain("b")
    np.testing.assert_array_equal(back.loss, b.loss)
    assert back.sample_ids.tolist() == b.sample_ids.tolist()
