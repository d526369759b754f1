"""The one number formatter and the one p-value formatter of the report (plain text; the
templates escape what they print).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from typing import Any

DASH = "\u2013"
"""Shown for a missing or non-finite number (an en dash)."""


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table: a dash for None/NaN, fixed or scientific as its size needs."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    v = _finite(value)
    if v is None:
        return DASH
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}f}"


def fmt_pct(value: Any) -> str:
    """A share as a percentage (a dash for None/NaN)."""
    v = _finite(value)
    return DASH if v is None else f"{100 * v:.1f}%"


def fmt_pts(value: Any) -> str:
    """A difference of shares in percentage points, signed."""
    v = _finite(value)
    return DASH if v is None else f"{100 * v:+.1f} pts"


def fmt_p(value: Any, floor: float | None = None) -> str:
    """A p-value: ``≤ floor`` at a permutation test's floor, ``< 0.001`` below a thousandth."""
    v = _finite(value)
    if v is None:
        return DASH
    if floor is not None and v <= floor * (1 + 1e-9):
        return f"≤ {floor:.3g}"
    return "< 0.001" if v < 0.001 else f"{v:.3f}"


def p_is(value: Any, floor: float | None = None) -> str:
    """``p ≤ 0.002``, ``p < 0.001`` or ``p = 0.012`` for running text."""
    text = fmt_p(value, floor)
    return f"p {text}" if text[0] in "<≤" else f"p = {text}"


def fmt_ci(ci: Sequence[Any] | None, digits: int = 3) -> str:
    """``[lo, hi]`` or a dash."""
    if not ci or len(ci) != 2 or _finite(ci[0]) is None or _finite(ci[1]) is None:
        return DASH
    return f"[{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"


def short_id(sample_id: str) -> str:
    """The file name without extension or the Cityscapes ``_leftImg8bit`` suffix."""
    stem = sample_id.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return stem.removesuffix("_leftImg8bit")


def data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
