"""Fréchet distance against pytorch-fid's ``calculate_frechet_distance`` (the standard FD)."""

from __future__ import annotations

import numpy as np
import pytest
from pytorch_fid.fid_score import calculate_frechet_distance

from domain_gap.analysis import frechet


def _moments(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return a.mean(0), np.cov(a, rowvar=False)


@pytest.mark.parametrize("d", [8, 128])
def test_frechet_from_moments_equals_pytorch_fid(d: int) -> None:
    rng = np.random.default_rng(d)
    x = rng.normal(size=(3 * d, d)) @ rng.normal(size=(d, d)) / np.sqrt(d)
    y = rng.normal(size=(2 * d + 5, d)) * 1.3 + 0.2
    ref = calculate_frechet_distance(*_moments(x), *_moments(y))
    assert frechet.frechet_from_moments(*_moments(x), *_moments(y)) == pytest.approx(ref, rel=1e-6)


def test_frechet_from_moments_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="cov_b: expected shape"):
        frechet.frechet_from_moments(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))


def test_default_fd_is_the_standard_fd_on_the_full_embedding_when_n_exceeds_d() -> None:
    rng = np.random.default_rng(5)
    d = 128  # the old default capped this at 64 pooled-PCA dims, 31-72 % below the standard FD
    x = rng.normal(size=(300, d)) @ rng.normal(size=(d, d)) / np.sqrt(d)
    y = rng.normal(size=(260, d)) * 1.2 + 0.1
    res = frechet.frechet_distance(x, y)
    ref = calculate_frechet_distance(*_moments(x), *_moments(y))
    assert not res.reduced and res.dims == d
    assert res.value == pytest.approx(ref, rel=1e-6)
    assert frechet.frechet_with_ci(x, y, n_boot=10).value == pytest.approx(ref, rel=1e-6)
    assert frechet.frechet_test(res).name == "Fréchet distance (FD)"


def test_pca_only_when_n_not_above_d_and_named_in_the_label() -> None:
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(40, 64)), rng.normal(size=(64, 64)) + 0.3
    res = frechet.frechet_distance(x, y)
    assert res.reduced and res.dims == 39  # min(n, m) - 1
    assert "fewer images than dimensions" in res.note
    assert frechet.frechet_test(res).name == "Fréchet distance (FD, 39-dim pooled PCA)"
    # one more image than dimensions on both sides: the full, standard FD again
    full = frechet.frechet_distance(rng.normal(size=(65, 64)), rng.normal(size=(65, 64)))
    assert not full.reduced and full.dims == 64


def test_several_targets_share_the_fd_dimensions() -> None:
    rng = np.random.default_rng(7)
    d = 32
    source, big, small = (rng.normal(size=(n, d)) for n in (200, 150, 20))
    k = frechet.common_fd_dims(d, [len(source), len(big), len(small)])
    assert k == 19
    a = frechet.frechet_distance(source, big, max_dim=k)
    b = frechet.frechet_distance(source, small, max_dim=k)
    assert a.dims == b.dims == 19 and a.reduced and b.reduced
    assert "same dims" in a.note and "capped at max_dim = 19" in a.note
    assert frechet.common_fd_dims(d, [200, 150]) == d  # every domain has n > d: full embedding
    assert frechet.common_fd_dims(d, [200, 150], max_dim=8) == 8
