"""Concept map, clusters, cluster table and per-class gaps."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import cdist
from sklearn.metrics import adjusted_rand_score

from domain_gap.analysis import concepts, projection
from domain_gap.analysis.results import to_json


def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0] * 8, [6.0] * 8, [-6.0] + [0.0] * 7])
    truth = np.repeat(np.arange(3), 30)
    return centers[truth] + rng.normal(size=(90, 8)), truth


def test_project_2d_pca_and_tsne_are_deterministic() -> None:
    x, truth = _blobs()
    for method in ("pca", "tsne"):
        a, used = projection.project_2d(x, method, seed=3)
        b, _ = projection.project_2d(x, method, seed=3)
        assert used == method and a.shape == (90, 2)
        np.testing.assert_array_equal(a, b)
        assert np.isfinite(a).all()
    # the three blobs stay apart in the t-SNE map: nearest neighbours share their blob
    d = cdist(a, a)
    np.fill_diagonal(d, np.inf)
    assert np.mean(truth[d.argmin(1)] == truth) > 0.95
    with pytest.raises(ValueError, match="method"):
        projection.project_2d(x, "lda")


def test_auto_needs_no_jit_below_the_tsne_limit() -> None:
    assert projection.choose_method(4) == "tsne"
    assert projection.choose_method(projection.TSNE_MAX_SAMPLES) == "tsne"
    assert projection.choose_method(3) == "pca"  # too few for t-SNE
    big = projection.choose_method(projection.TSNE_MAX_SAMPLES + 1)
    assert big == ("umap" if projection._umap_available() else "pca")
    assert projection.choose_method(10, "umap") == "umap"


def test_cached_projection_reads_back_exactly_these_rows(tmp_path, monkeypatch) -> None:
    x, _ = _blobs()
    first, used = projection.cached_projection(x, tmp_path, "tsne", seed=1)
    assert used == "tsne" and len(list((tmp_path / "projections").glob("*.npz"))) == 1

    def no_fit(*args, **kwargs):
        raise AssertionError("refitted although cached")

    monkeypatch.setattr(projection, "project_2d", no_fit)
    again, used_again = projection.cached_projection(x, tmp_path, "tsne", seed=1)
    np.testing.assert_array_equal(first, again)
    assert used_again == "tsne"
    with pytest.raises(AssertionError, match="refitted"):  # other rows → another key
        projection.cached_projection(x[1:], tmp_path, "tsne", seed=1)
    with pytest.raises(AssertionError, match="refitted"):  # other seed → another key
        projection.cached_projection(x, tmp_path, "tsne", seed=2)
    monkeypatch.undo()
    for f in (tmp_path / "projections").glob("*.npz"):
        f.write_bytes(b"damaged")  # a damaged file is refitted and rewritten
    fixed, _ = projection.cached_projection(x, tmp_path, "tsne", seed=1)
    np.testing.assert_array_equal(first, fixed)


@pytest.mark.slow
def test_project_2d_umap_keeps_blobs_apart() -> None:
    x, truth = _blobs()
    coords, used = projection.project_2d(x, "umap", seed=0)
    again, _ = projection.project_2d(x, "umap", seed=0)
    assert used == "umap"
    np.testing.assert_allclose(coords, again)
    d = cdist(coords, coords)
    np.fill_diagonal(d, np.inf)
    assert np.mean(truth[d.argmin(1)] == truth) > 0.95


def test_cluster_recovers_blobs_and_centres_are_member_means() -> None:
    x, truth = _blobs()
    labels, centers = concepts.cluster(x, 3, seed=0)
    assert adjusted_rand_score(truth, labels) == pytest.approx(1.0)
    for c in range(3):
        np.testing.assert_allclose(centers[c], x[labels == c].mean(0))
    again, _ = concepts.cluster(x, 3, seed=0)
    np.testing.assert_array_equal(labels, again)
    with pytest.raises(ValueError, match="k"):
        concepts.cluster(x, 200)


def test_cluster_table_shares_status_tests_and_examples() -> None:
    # cluster 0: 40 source, 0 target; cluster 1: 0 source, 30 target;
    # cluster 2: 50 source, 10 target (ratio 0.4); cluster 3: 10 source, 10 target (ratio 2.0)
    labels = np.r_[[0] * 40, [2] * 50, [3] * 10, [1] * 30, [2] * 10, [3] * 10]
    domains = np.array(["cs"] * 100 + ["kitti"] * 50)
    loss = np.arange(150, dtype=float)
    loss[100] = np.nan  # an unlabeled target image
    x = np.random.default_rng(0).normal(size=(150, 4))
    centers = np.stack([x[labels == c].mean(0) for c in range(4)])
    rows = concepts.cluster_table(labels, domains, loss, "cs", "kitti", x=x, centers=centers)
    by = {r.cluster: r for r in rows}
    assert by[0].status == "missing in target" and by[0].ratio == 0.0
    assert by[1].status == "missing in source" and by[1].ratio is None
    assert by[2].status == "under-represented in target"
    assert by[2].ratio == pytest.approx((10 / 50) / (50 / 100))
    assert by[3].status == "over-represented in target"
    assert by[2].share_source == pytest.approx(0.5) and by[2].share_target == pytest.approx(0.2)
    ref_p = stats.fisher_exact([[50, 50], [10, 40]]).pvalue
    assert by[2].p_value == pytest.approx(ref_p)
    assert by[1].mean_loss_target == pytest.approx(np.mean(np.arange(101, 130)))
    assert by[0].mean_loss_target is None
    members = np.flatnonzero((labels == 2) & (domains == "cs"))
    nearest = members[np.argsort(np.linalg.norm(x[members] - centers[2], axis=1))[:4]]
    assert list(by[2].examples["cs"]) == nearest.tolist()
    assert by[0].examples["kitti"] == ()
    json.dumps(to_json(rows), allow_nan=False)


def test_cluster_table_rejects_missing_domain() -> None:
    with pytest.raises(ValueError, match="kitti"):
        concepts.cluster_table(np.zeros(3, int), np.array(["cs"] * 3), np.zeros(3), "cs", "kitti")


def test_class_conditional_gap_flags_shifted_class_and_uncomputable_ones() -> None:
    rng = np.random.default_rng(5)
    n, m, d = 40, 30, 6
    emb_s, emb_t = rng.normal(size=(n, 3, d)), rng.normal(size=(m, 3, d))
    emb_t[:, 1] += 1.5  # class 1 looks different in the target
    counts_s = np.ones((n, 3), int)
    counts_t = np.ones((m, 3), int)
    counts_t[:, 2] = 0
    counts_t[:4, 2] = 100  # class 2 present in only 4 target images
    iou_s = np.full((n, 3), 0.8)
    iou_t = np.full((m, 3), 0.5)
    iou_t[0, 0] = np.nan
    rows = concepts.class_conditional_gap(
        emb_s,
        counts_s,
        emb_t,
        counts_t,
        iou_s,
        iou_t,
        ["road", "car", "sky"],
        permutations=99,
        seed=0,
    )
    assert [r.class_name for r in rows] == ["road", "car", "sky"]
    road, car, sky = rows
    assert car.significant and car.p_value == pytest.approx(1 / 100)
    assert road.p_value > 0.05 and not road.significant
    assert sky.computable is False and "4 target" in sky.note and sky.mmd2 is None
    assert road.iou_drop == pytest.approx(0.3)
    # MMD² on the present images equals a brute-force Gaussian-kernel estimate
    pooled = np.vstack([emb_s[:, 1], emb_t[:, 1]])
    mu, sd = pooled.mean(0), pooled.std(0)
    xs, ys, bw = (emb_s[:, 1] - mu) / sd, (emb_t[:, 1] - mu) / sd, car.bandwidth

    def k(a, b):
        return np.exp(-cdist(a, b, "sqeuclidean") / (2 * bw**2))

    ref = (
        (k(xs, xs).sum() - n) / (n * (n - 1))
        + (k(ys, ys).sum() - m) / (m * (m - 1))
        - 2 * k(xs, ys).mean()
    )
    assert car.mmd2 == pytest.approx(ref, rel=1e-9)
    json.dumps(to_json(rows), allow_nan=False)


def test_class_conditional_gap_checks_shapes() -> None:
    e = np.zeros((5, 2, 3))
    c = np.ones((5, 2))
    with pytest.raises(ValueError, match="counts_t"):
        concepts.class_conditional_gap(e, c, e, np.ones((4, 2)), c, c, ["a", "b"])
