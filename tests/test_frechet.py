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
