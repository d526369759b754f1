"""Where the extraction pass runs (``execution.executor``): ``local`` is
:func:`domain_gap.analysis.extract.extract_domain` in this process; ``ray`` is
:mod:`domain_gap.execution.ray_extract`, a Ray Data pipeline that fills the same per-sample
cache. Ray is imported only by that module, and only when it runs (an optional extra)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from domain_gap.config import Config

__all__ = ["RAY_MISSING", "prefill_cache"]

RAY_MISSING = (
    "execution.executor 'ray' needs Ray Data: pip install 'domain-gap[ray]' "
    "(or ray[data]), or set execution.executor: local"
)


def prefill_cache(
    config: Config,
    dataset: Any,
    cache: Any,
    passes: Sequence[tuple[str, str | None]],
    progress: bool = True,
) -> int:
    """Compute the records the cache lacks for ``passes`` (domain, subset) with the configured
    executor; returns how many were written (always 0 for ``local``, whose pass is the
    extraction itself). The caller then reads the records through ``extract_domain``."""
    if config.execution.executor == "local":
        return 0
    try:
        from domain_gap.execution.ray_extract import extract_missing
    except ImportError as exc:  # ray itself is imported inside; this is a broken install
        raise RuntimeError(f"{RAY_MISSING} ({exc})") from None
    return extract_missing(config, dataset, cache, passes, progress=progress)
