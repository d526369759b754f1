"""Figures are read back only for the very inputs (and drawing code) that drew them."""

from __future__ import annotations

import numpy as np

from domain_gap.report import plots
from domain_gap.report.figure_cache import PNG_MAGIC, FigureCache

CALLS: list[int] = []


def _draw(values: np.ndarray, title: str) -> bytes:
    CALLS.append(1)
    return plots.loss_histograms({title: values}, [title])


def test_same_inputs_read_back_other_inputs_redraw(tmp_path) -> None:
    CALLS.clear()
    cache = FigureCache(tmp_path)
    x = np.linspace(0, 1, 50)
    first = cache(_draw, x, "a")
    assert first.startswith(PNG_MAGIC) and len(CALLS) == 1
    assert FigureCache(tmp_path)(_draw, x.copy(), "a") == first and len(CALLS) == 1
    cache(_draw, x, "b")  # another argument
    cache(_draw, x + 1e-9, "a")  # another array
    assert len(CALLS) == 3 and cache.misses == 3


def test_a_damaged_entry_is_redrawn_and_no_cache_always_draws(tmp_path) -> None:
    CALLS.clear()
    x = np.arange(10.0)
    first = FigureCache(tmp_path)(_draw, x, "a")
    for f in tmp_path.glob("*.png"):
        f.write_bytes(b"not a png")
    again = FigureCache(tmp_path)(_draw, x, "a")
    assert again == first and len(CALLS) == 2
    none = FigureCache(None)
    none(_draw, x, "a")
    none(_draw, x, "a")
    assert len(CALLS) == 4 and not list(tmp_path.glob("*.tmp*"))
