"""Fitting must never see an evaluated frame: a mitigation fitted on its own test images would
report an optimistic what-if. ``check_disjoint`` is the one check, run before every fit."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["check_disjoint"]

_SHOWN = 10


def check_disjoint(fit_ids: Iterable[str], eval_ids: Iterable[str]) -> None:
    """ValueError naming the sample ids that are both fitted on and evaluated (sorted)."""
    fit, evaluated = set(fit_ids), set(eval_ids)
    overlap = sorted(fit & evaluated)
    if overlap:
        shown = ", ".join(overlap[:_SHOWN]) + (" …" if len(overlap) > _SHOWN else "")
        raise ValueError(
            f"fit_ids: expected no sample evaluated too, got {len(overlap)} shared: {shown}"
        )
