"""Bounded-memory statistics: streamed moments, histograms and the seeded subsample equal
their in-memory counterparts, whatever the chunking and the order."""

from __future__ import annotations

import numpy as np
import pytest

from domain_gap.analysis.fleet import Chunk, fleet_gap
from domain_gap.analysis.frechet import frechet_distance
from domain_gap.analysis.moments import (
    Moments,
    Range,
    StreamHistogram,
    Subsample,
    frechet_streamed,
    hash_keys,
    stream_moments,
)
from domain_gap.config import Config


def _chunks(x: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    cuts = np.cumsum(sizes)[:-1]
    return np.split(x, cuts)


def test_streamed_moments_equal_numpy_on_any_chunking() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (1000, 7)) @ rng.normal(size=(7, 7))
    whole = Moments.of(x)
    np.testing.assert_allclose(whole.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(whole.cov, np.cov(x, rowvar=False), rtol=1e-10)
    for sizes in ([1000], [1, 999], [300, 1, 250, 449], [100] * 10):
        m = stream_moments(_chunks(x, sizes))
        assert m.n == 1000
        np.testing.assert_allclose(m.mean, x.mean(0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(m.cov, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-10)
    # shards merged in another order give the same moments
    parts = [Moments.of(c) for c in _chunks(x, [100] * 10)]
    tree = parts[9].merge(parts[0]).merge(parts[5].merge(parts[3]))
    for p in (parts[1], parts[2], parts[4], parts[6], parts[7], parts[8]):
        tree = p.merge(tree)
    np.testing.assert_allclose(tree.cov, np.cov(x, rowvar=False), rtol=1e-10)
    with pytest.raises(ValueError, match="dims"):
        whole.merge(Moments.of(x[:, :3]))


@pytest.mark.parametrize(
    ("d", "max_dim", "n"), [(6, None, 600), (40, 8, 600), (40, None, 30), (6, 64, 600)]
)
def test_frechet_from_streamed_moments_equals_in_memory(
    d: int, max_dim: int | None, n: int
) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, d))
    y = rng.normal(0.3, 1.2, size=(n - 100 if n > 100 else n + 5, d))
    want = frechet_distance(x, y, max_dim=max_dim)
    got = frechet_streamed(
        stream_moments(_chunks(x, [n // 2, n - n // 2])),
        stream_moments(_chunks(y, [1, len(y) - 1])),
        max_dim,
    )
    assert got.value == pytest.approx(want.value, rel=1e-8)
    assert (got.dims, got.reduced) == (want.dims, want.reduced)
    assert got.explained_variance == pytest.approx(want.explained_variance, rel=1e-10)


def test_streamed_histogram_equals_numpy() -> None:
    rng = np.random.default_rng(2)
    v = rng.gamma(2.0, 3.0, 5000)
    v[::97] = np.nan
    chunks = _chunks(v, [1000, 2500, 1500])
    rng_ = Range()
    for c in chunks:
        rng_ = rng_.update(c)
    assert (rng_.lo, rng_.hi) == (np.nanmin(v), np.nanmax(v))
    edges = rng_.edges(20)
    parts = [StreamHistogram.empty(edges).update(c) for c in chunks]
    h = parts[2].merge(parts[0]).merge(parts[1])
    want, _ = np.histogram(v[~np.isnan(v)], edges)
    np.testing.assert_array_equal(h.counts, want)
    assert h.nan == int(np.isnan(v).sum()) and h.below == h.above == 0 and h.n == 5000
    # values outside the edges are counted apart, not lost
    out = StreamHistogram.empty(edges).update(np.array([-1.0, edges[-1] + 1, edges[0]]))
    assert (out.below, out.above, int(out.counts.sum())) == (1, 1, 1)


def test_subsample_is_the_same_whatever_the_chunking_and_order() -> None:
    ids = np.array([f"kitti/img_{i:05d}.png" for i in range(3000)])
    values = np.arange(3000.0)
    keys = hash_keys(ids, seed=7)
    want = set(ids[np.argsort(keys)[:200]])
    perm = np.random.default_rng(3).permutation(3000)
    for order, sizes in ((np.arange(3000), [3000]), (perm, [7, 993, 1000, 1000])):
        sub = Subsample.empty(200, seed=7)
        for c in _chunks(order, sizes):
            sub = sub.update(ids[c], {"v": values[c]})
        assert set(sub.rows["sample_id"]) == want and sub.n_seen == 3000
        # columns stay row-aligned
        np.testing.assert_array_equal(
            sub.rows["v"], [float(s[-9:-4]) for s in sub.rows["sample_id"]]
        )
    shard_a = Subsample.empty(200, 7).update(ids[:1700], {"v": values[:1700]})
    shard_b = Subsample.empty(200, 7).update(ids[1700:], {"v": values[1700:]})
    merged = shard_a.merge(shard_b)
    assert set(merged.rows["sample_id"]) == want
    info = merged.info
    assert (info.n_total, info.n_used, info.seed) == (3000, 200, 7)
    assert set(Subsample.empty(200, 8).update(ids, {"v": values}).rows["sample_id"]) != want


def _stream(n: int, shift: float, seed: int, chunk: int = 256):
    def make():
        for start in range(0, n, chunk):
            rng = np.random.default_rng([seed, start])
            m = min(chunk, n - start)
            emb = rng.normal(shift, 1.0, (m, 16))
            ids = np.array([f"d{seed}/{i}" for i in range(start, start + m)])
            meta = {"brightness": rng.normal(100 + 10 * shift, 5, m)}
            yield Chunk(ids, emb, meta)

    return make


def test_fleet_gap_states_the_subsample_and_uses_every_image_for_fd() -> None:
    source, target = _stream(1500, 0.0, 1), _stream(1200, 0.5, 2)
    res = fleet_gap(source, target, subsample=300, permutations=99, n_boot=20, max_dim=8)
    assert (res.n_source, res.n_target) == (1500, 1200)
    assert (res.subsample_source.n_total, res.subsample_source.n_used) == (1500, 300)
    assert (res.latent.n_source, res.latent.n_target) == (300, 300)
    x = np.concatenate([c.embeddings for c in source()])
    y = np.concatenate([c.embeddings for c in target()])
    assert res.frechet.value == pytest.approx(frechet_distance(x, y, max_dim=8).value, rel=1e-8)
    assert res.latent.mmd.significant  # a 0.5 SD mean shift in 16 dims is plain at 300 + 300
    (hist,) = res.histograms
    assert hist.name == "brightness" and sum(hist.source) == 1500 and sum(hist.target) == 1200
    assert any(row.field == "brightness" for row in res.drift.numeric)


def test_fleet_gap_for_reads_the_config(tiny_config: Config) -> None:
    from domain_gap.analysis.fleet import fleet_gap_for

    analysis = tiny_config.analysis.model_copy(update={"subsample": 150, "permutations": 49})
    config = tiny_config.model_copy(update={"analysis": analysis})
    res = fleet_gap_for(config, _stream(400, 0.0, 1), _stream(300, 0.0, 2))
    assert res.subsample_source.n_used == res.subsample_target.n_used == 150
    assert res.subsample_source.seed == config.seed and res.latent.mmd.p_floor == 1 / 50
    assert not res.frechet.reduced  # 400 and 300 images > d = 16: the standard FD


def test_bench_scale_child_smoke() -> None:
    """The benchmark's stage at a tiny size: the subsample it states is the one it used."""
    from benchmarks.bench_scale import child

    row = child(300, 100, 19)
    assert row["n_per_domain"] == 300 and row["subsample_used"] == 100
    assert row["peak_mib"] >= row["peak_before_mib"] > 0 and row["mmd_method"].startswith("exact")


def _quality_stream(n: int, shift: float, seed: int, labelled_every: int = 1, chunk: int = 97):
    """Chunks with per-image quality (confusion matrices; every k-th image labelled)."""
    from domain_gap.analysis.fleet import Quality
    from domain_gap.metrics import pixel_accuracy, sample_miou

    def make():
        for start in range(0, n, chunk):
            rng = np.random.default_rng([seed, start])
            m = min(chunk, n - start)
            cm = rng.integers(0, 20, (m, 4, 4)) + np.eye(4, dtype=np.int64) * 60
            lab = (np.arange(start, start + m) % labelled_every) == 0
            loss = np.where(lab, rng.gamma(2.0, 0.2 + shift, m), np.nan)
            miou = np.where(lab, sample_miou(cm), np.nan)
            acc = np.where(lab, pixel_accuracy(cm), np.nan)
            ids = np.array([f"d{seed}/{i}" for i in range(start, start + m)])
            meta = {"brightness": rng.normal(100 + 20 * shift, 5, m), "sky": rng.uniform(0, 1, m)}
            emb = rng.normal(shift, 1.0, (m, 6))
            yield Chunk(ids, emb, meta, Quality(loss, miou, acc, cm, lab))

    return make


def test_fleet_scale_equals_the_in_memory_statistics_for_every_target() -> None:
    from domain_gap.analysis.fleet import fleet_scale
    from domain_gap.analysis.results import SubsampleInfo
    from domain_gap.metrics import dataset_iou

    streams = {
        "src": _quality_stream(700, 0.0, 1),
        "a": _quality_stream(500, 0.5, 2, labelled_every=2),
        "b": _quality_stream(300, 1.0, 3),
    }
    info = {d: SubsampleInfo(1, 1, 0, "stated as given") for d in streams}
    res = fleet_scale(streams, "src", info, dict.fromkeys(streams, "val"), ("w", "x", "y", "z"))
    assert set(res.frechet) == set(res.drop) == set(res.histograms) == {"a", "b"}
    assert res.subsample == info
    whole = {d: list(s()) for d, s in streams.items()}

    def cat(d: str, get):
        return np.concatenate([get(c) for c in whole[d]])

    for d in streams:
        st = res.domains[d]
        lab = cat(d, lambda c: c.quality.labelled)
        cm = cat(d, lambda c: c.quality.confusion)[lab]
        iou, miou = dataset_iou(cm)
        assert (st.n, st.n_labelled, st.subset) == (len(lab), int(lab.sum()), "val")
        assert st.miou_dataset == pytest.approx(miou, rel=1e-12)
        assert st.loss_mean == pytest.approx(np.nanmean(cat(d, lambda c: c.quality.loss)))
        assert st.miou_mean == pytest.approx(np.nanmean(cat(d, lambda c: c.quality.miou)))
        assert list(st.class_iou_dataset.values()) == pytest.approx(iou.tolist())
        assert st.loss_median is None
    x = cat("src", lambda c: c.embeddings)
    for t in ("a", "b"):
        want = frechet_distance(x, cat(t, lambda c: c.embeddings))
        assert res.frechet[t].value == pytest.approx(want.value, rel=1e-8)
        assert res.drop[t].loss_increase == pytest.approx(
            res.domains[t].loss_mean - res.domains["src"].loss_mean
        )
    # one set of edges per field, shared by every domain, counting every frame
    for name in ("brightness", "sky"):
        ha = next(h for h in res.histograms["a"] if h.name == name)
        hb = next(h for h in res.histograms["b"] if h.name == name)
        assert ha.edges == hb.edges and ha.source == hb.source
        allv = np.concatenate([cat(d, lambda c, k=name: c.metadata[k]) for d in streams])
        assert ha.edges[0] == allv.min() and ha.edges[-1] == allv.max()
        want_b, _ = np.histogram(cat("b", lambda c, k=name: c.metadata[k]), np.array(hb.edges))
        assert list(want_b) == list(hb.target) and sum(ha.source) == 700
