"""Extraction cache and streaming pass: records, reuse, resume, invalidation, atomic writes."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from domain_gap.analysis.cache import CACHE_VERSION, FeatureCache, file_sha256, prep_hash
from domain_gap.analysis.extract import Features, cache_source, metadata_columns
from domain_gap.config import Config, parse_config
from domain_gap.data.sample import STAMP

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


def test_cache_reads_only_the_named_arrays_and_requires_them(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, "ab" * 32, "aspp", "p1")
    arrays = {"embedding": np.arange(4, dtype=np.float32), "loss": np.asarray(0.5)}
    cache.save("a", "a/x/1.png", arrays)
    got = cache.load("a", "a/x/1.png", only=("loss",))
    assert got is not None and set(got) == {"loss", "sample_id", "cache_version"}
    assert float(got["loss"]) == 0.5
    with pytest.warns(UserWarning, match=r"unusable cache shard \(lacks \['confusion'\]\)"):
        assert cache.load("a", "a/x/1.png", only=("loss", "confusion")) is None


def test_cache_failed_write_leaves_no_temp_file(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, "cd" * 32, "aspp", "p1")

    class Boom:
        def __array__(self, *args: object, **kwargs: object) -> np.ndarray:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        cache.save("a", "a/1.png", {"embedding": Boom()})  # type: ignore[dict-item]
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no shard, no temp file


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


def test_cache_source_changes_when_the_sample_is_regenerated(
    sample_copy: Path, config_for: Callable[..., Config]
) -> None:
    config = config_for(sample_copy)
    root = str(config.resolve(config.domain("kitti").root))
    before = cache_source(config, "kitti")
    assert before.startswith(root) and before != root
    stamp = json.loads((sample_copy / STAMP).read_text())
    (sample_copy / STAMP).write_text(json.dumps({**stamp, "version": stamp["version"] + 1}))
    assert cache_source(config, "kitti") not in (before, root)
    (sample_copy / STAMP).unlink()
    assert cache_source(config, "kitti") == root  # real data: keyed by its root only


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
        calibration=np.zeros((n, 15, 3)),
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


# --------------------------------------------------------------------------- streaming pass


class CountingRunner:
    """Wraps the real torch runner; counts batches and samples, can fail after k batches."""

    def __init__(self, inner: object, fail_after: int | None = None) -> None:
        self.inner = inner
        self.fail_after = fail_after
        self.batches = 0
        self.samples = 0

    def __call__(self, x: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
        if self.fail_after is not None and self.batches >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.batches += 1
        self.samples += len(x)
        return self.inner(x, labels)  # type: ignore[operator]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    """A random DeepLabV3+ MobileNet with calibrated BatchNorm statistics, and its checkpoint."""
    import torch

    from models import build_model, save_checkpoint

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("deeplabv3plus_mobilenet", output_stride=16)
    model.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        for _ in range(3):
            model(torch.randn(2, 3, 64, 128) * 1.5 + 0.3)
    model.eval()
    path = tmp_path_factory.mktemp("tiny_model") / "tiny.pt"
    save_checkpoint(model, path)
    return model, path


@pytest.mark.parametrize(("h", "w"), [(64, 128), (72, 120)])
@pytest.mark.parametrize("tap", ["aspp", "low"])
def test_torch_runner_equals_run_batch(
    tiny_model: tuple[object, Path], h: int, w: int, tap: str
) -> None:
    """The runner feeds class_embeddings labels already at the tap's grid when it divides the
    input (72 x 120 does not at stride 16): the outputs are models.run_batch's, bit for bit."""
    import torch

    from domain_gap.analysis.extract import TorchRunner
    from models import run_batch

    model, _ = tiny_model
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, h, w)).astype(np.float32)
    labels = rng.integers(0, 19, size=(2, h, w)).astype(np.uint8)
    labels[:, :5] = 255
    got = TorchRunner(model, "cpu", tap)(x, labels)
    ref = run_batch(model, x, "cpu", tap, labels=labels, logits_on_device=True)
    assert torch.equal(got["logits"], ref["logits"])
    np.testing.assert_array_equal(got["embedding"], ref["embedding"])
    np.testing.assert_array_equal(got["class_emb"], ref["class_embedding"])
    np.testing.assert_array_equal(got["class_counts"], ref["class_count"])
    assert got["class_counts"].dtype == np.int64


def _cfg(config_for: object, root: Path, ckpt: Path, cache: Path, **model: object) -> object:
    return config_for(  # type: ignore[operator]
        root,
        top={
            "cache_dir": str(cache),
            "model": {"checkpoint": str(ckpt), "batch_size": 2, "device": "cpu", **model},
        },
    )


def _runner(config: object, tiny_model: tuple[object, Path], **kw: object) -> CountingRunner:
    from domain_gap.analysis.extract import TorchRunner

    model, _ = tiny_model
    return CountingRunner(TorchRunner(model, "cpu", config.model.tap), **kw)  # type: ignore[attr-defined]


def _iou_reference(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-class IoU by set counting, one class at a time (void ignored)."""
    keep = gt != 255
    out = np.full(19, np.nan)
    for c in range(19):
        p, g = (pred == c) & keep, (gt == c) & keep
        union = (p | g).sum()
        if union:
            out[c] = (p & g).sum() / union
    return out


@pytest.mark.slow
def test_records_match_direct_computation(
    tiny_sample: Path, config_for: object, tiny_model: tuple[object, Path], tmp_path: Path
) -> None:
    import torch
    import torch.nn.functional as F

    from domain_gap.analysis.extract import extract_domain
    from domain_gap.data.dataset import DomainDataset
    from domain_gap.metadata import compute_metadata

    model, ckpt = tiny_model
    config = _cfg(config_for, tiny_sample, ckpt, tmp_path / "cache")
    dataset = DomainDataset(config)
    runner = _runner(config, tiny_model)
    feats = extract_domain(config, dataset, "kitti", "val", runner=runner, progress=False)
    records = dataset.select("kitti", "val")
    assert feats.sample_ids.tolist() == [r.sample_id for r in records]
    assert runner.samples == len(records) and runner.batches == -(-len(records) // 2)
    mean = torch.tensor(config.image.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.image.std).view(1, 3, 1, 1)
    for i, record in enumerate(records):
        p = dataset.prepare(record)
        x = (torch.from_numpy(p.image).permute(2, 0, 1)[None].float() / 255 - mean) / std
        with torch.no_grad():
            taps = model.forward_taps(x)
        logits = taps["logits"]
        y = torch.from_numpy(p.label.astype(np.int64))[None]
        loss = F.cross_entropy(logits, y, ignore_index=255).item()
        assert feats.loss[i] == pytest.approx(loss, rel=1e-4)
        pred = logits.argmax(1)[0].numpy()
        iou = _iou_reference(pred, p.label)
        np.testing.assert_allclose(feats.class_iou[i], iou, equal_nan=True)
        assert feats.miou[i] == pytest.approx(np.nanmean(iou))
        keep = p.label != 255
        assert feats.pixel_acc[i] == pytest.approx((pred[keep] == p.label[keep]).mean())
        emb = taps["aspp"].mean(dim=(2, 3))[0].numpy()
        np.testing.assert_allclose(feats.embeddings[i], emb, rtol=1e-4, atol=1e-6)
        assert np.abs(emb).max() > 1e-3  # the reference is not trivially zero
        probs = torch.softmax(logits, 1)[0].numpy()
        np.testing.assert_allclose(feats.prob_mean[i], probs[:, p.valid].mean(axis=1), atol=1e-5)
        frac = [((pred == c) & p.valid).mean() for c in range(19)] + [(~p.valid).mean()]
        np.testing.assert_allclose(feats.pred_frac[i], frac, atol=1e-12)
        # class embeddings: mean aspp cell under the nearest-downsampled label, class by class
        feat = taps["aspp"][0]
        small = F.interpolate(y[:, None].float(), size=feat.shape[-2:], mode="nearest")[0, 0]
        for c in np.unique(small.numpy()):
            if c == 255:
                continue
            cells = feat[:, small == c]
            assert feats.class_counts[i, int(c)] == cells.shape[1]
            np.testing.assert_allclose(
                feats.class_emb[i, int(c)].astype(np.float32),
                cells.mean(1).numpy(),
                rtol=2e-3,
                atol=2e-3,
            )
        meta = compute_metadata(
            p.image,
            p.label,
            p.valid,
            domain=record.domain,
            group=record.group,
            file_name=record.file_name,
            orig_hw=p.orig_hw,
            vehicle=p.vehicle,
        )
        for key, value in meta.items():
            got = feats.metadata[key][i]
            if isinstance(value, str):
                assert got == value
            else:
                assert got == pytest.approx(value, nan_ok=True)
    assert feats.labelled.all()
    assert feats.confusion.sum(axis=(1, 2)).tolist() == [
        int((dataset.prepare(r).label != 255).sum()) for r in records
    ]


@pytest.mark.slow
def test_rerun_reuses_cache_and_interruption_resumes(
    tiny_sample: Path, config_for: object, tiny_model: tuple[object, Path], tmp_path: Path
) -> None:
    from domain_gap.analysis.extract import extract_domain
    from domain_gap.data.dataset import DomainDataset

    _, ckpt = tiny_model
    config = _cfg(config_for, tiny_sample, ckpt, tmp_path / "cache")
    dataset = DomainDataset(config)
    n = len(dataset.select("kitti", "val"))
    assert n >= 5
    # interrupted after one batch of 2: exactly those 2 shards exist, no temp file
    failing = _runner(config, tiny_model, fail_after=1)
    with pytest.raises(KeyboardInterrupt):
        extract_domain(config, dataset, "kitti", "val", runner=failing, progress=False)
    shards = list((tmp_path / "cache").rglob("*.npz"))
    assert len(shards) == 2
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.name.endswith(".tmp")]
    # resume: only the rest is computed
    resume = _runner(config, tiny_model)
    first = extract_domain(config, dataset, "kitti", "val", runner=resume, progress=False)
    assert resume.samples == n - 2
    # rerun: no model call at all, identical records
    again = _runner(config, tiny_model)
    second = extract_domain(config, dataset, "kitti", "val", runner=again, progress=False)
    assert again.batches == 0
    np.testing.assert_array_equal(first.embeddings, second.embeddings)
    np.testing.assert_array_equal(first.loss, second.loss)
    assert first.metadata.keys() == second.metadata.keys()
    # a corrupt shard is recomputed, alone
    victim = sorted((tmp_path / "cache").rglob("*.npz"))[0]
    victim.write_bytes(b"garbage")
    fix = _runner(config, tiny_model)
    with pytest.warns(UserWarning, match="corrupt cache shard"):
        third = extract_domain(config, dataset, "kitti", "val", runner=fix, progress=False)
    assert fix.samples == 1
    # recomputed in a batch of one, not two: the CPU's float32 kernels may round differently
    # by batch size (seen with AVX-512), so to float32 precision, not bit for bit
    np.testing.assert_allclose(third.embeddings, first.embeddings, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(third.sample_ids, first.sample_ids)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_prep_tap_or_model_change_invalidates(
    tiny_sample: Path, config_for: object, tiny_model: tuple[object, Path], tmp_path: Path
) -> None:
    from domain_gap.analysis.extract import extract_domain
    from domain_gap.data.dataset import DomainDataset

    _, ckpt = tiny_model
    cache = tmp_path / "cache"
    base = _cfg(config_for, tiny_sample, ckpt, cache)
    n = len(DomainDataset(base).select("cityscapes", "val"))

    def computed(config: object) -> int:
        runner = _runner(config, tiny_model)
        extract_domain(
            config, DomainDataset(config), "cityscapes", "val", runner=runner, progress=False
        )
        return runner.samples

    assert computed(base) == n
    assert computed(base) == 0
    assert computed(_cfg(config_for, tiny_sample, ckpt, cache, tap="decoder")) == n
    other = config_for(
        tiny_sample,
        top={
            "cache_dir": str(cache),
            "image": {"height": 96, "width": 192, "resize": "pad"},
            "model": {"checkpoint": str(ckpt), "batch_size": 2},
        },
    )
    assert computed(other) == n
    copy = tmp_path / "copy.pt"
    copy.write_bytes(ckpt.read_bytes() + b"\0")  # another file: another model hash
    assert FeatureCache.for_config(_cfg(config_for, tiny_sample, copy, cache)).root != (
        FeatureCache.for_config(base).root
    )
    assert computed(base) == 0


def test_missing_checkpoint_is_one_clear_error(
    tiny_sample: Path, config_for: object, tmp_path: Path
) -> None:
    from domain_gap.analysis.extract import extract_domain
    from domain_gap.data.dataset import DomainDataset

    config = _cfg(config_for, tiny_sample, tmp_path / "nope.pt", tmp_path / "cache")
    with pytest.raises(ValueError, match=r"nope\.pt: model checkpoint not found"):
        extract_domain(config, DomainDataset(config), "kitti", "val", progress=False)


@pytest.mark.slow
def test_unlabelled_samples_have_no_loss(
    tiny_sample: Path, config_for: object, tiny_model: tuple[object, Path], tmp_path: Path
) -> None:
    from domain_gap.analysis.extract import extract_domain
    from domain_gap.data.dataset import DomainDataset

    _, ckpt = tiny_model
    config = _cfg(config_for, tiny_sample, ckpt, tmp_path / "cache")
    dataset = DomainDataset(config)
    feats = extract_domain(
        config, dataset, "kitti", "unlabeled", runner=_runner(config, tiny_model), progress=False
    )
    assert len(feats) == len(dataset.select("kitti", "unlabeled")) > 0
    assert not feats.labelled.any()
    assert np.isnan(feats.loss).all() and np.isnan(feats.miou).all()
    assert (feats.class_counts == 0).all() and (feats.confusion == 0).all()
    assert np.isnan(feats.metadata["frac_road"]).all()
    assert np.isfinite(feats.embeddings).all() and np.isfinite(feats.metadata["brightness"]).all()
    np.testing.assert_allclose(feats.pred_frac.sum(axis=1), 1.0)
    np.testing.assert_allclose(feats.prob_mean.sum(axis=1), 1.0, rtol=1e-5)


def test_metadata_columns_from_json_equal_the_dict_version() -> None:
    import json

    from domain_gap.analysis.extract import metadata_columns_json

    rows = [
        {"a": 1.5, "b": "x", "c": True, "d": None},
        {"a": 2, "c": False, "e": 3.0},
        {"b": 7, "d": 4.0, "e": None},
    ]
    expected = metadata_columns(rows)
    got = metadata_columns_json([json.dumps(r) for r in rows])
    assert list(got) == list(expected)
    for key, col in expected.items():
        assert got[key].dtype.kind == col.dtype.kind, key
        if col.dtype.kind == "f":
            np.testing.assert_array_equal(got[key], col)
        else:
            assert got[key].tolist() == col.tolist(), key
