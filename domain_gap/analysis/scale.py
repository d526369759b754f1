"""``analyze`` at fleet scale: a stated subsample in memory, every frame streamed from the cache.

When a domain's analysed subset holds more than ``analysis.subsample`` frames, holding every
record (about 9 kB a frame: per-class embeddings, confusion matrices, calibration counts)
stops scaling. Then:

1. :func:`plan_scale` picks each domain's seeded bottom-k subsample of sample ids
   (``moments.hash_keys``, the rule of ``moments.Subsample``: the same frames whatever the
   listing order or sharding) before anything is read;
2. :func:`fill_cache` extracts every frame outside the subsample that the cache lacks, a chunk
   at a time, keeping nothing (with ``execution.executor: ray`` the cluster has filled them
   already); the subsample's frames are extracted by the usual in-memory pass;
3. the report's sections run on the subsample as usual (``ScalePlan.view``: the dataset with
   the other analysed frames left out, so the what-if passes and heatmaps use it too);
4. :func:`scale_section` streams every shard twice (``fleet.fleet_scale``): FD from streamed
   moments, performance and drops from summed confusion matrices, metadata histograms.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from domain_gap.analysis.cache import FeatureCache
from domain_gap.analysis.extract import (
    Runner,
    batches,
    cache_source,
    extract_domain,
    metadata_columns_json,
)
from domain_gap.analysis.fleet import Chunk, Quality, Stream, fleet_scale
from domain_gap.analysis.frechet import common_fd_dims
from domain_gap.analysis.moments import SUBSAMPLE_METHOD, hash_keys
from domain_gap.analysis.results import FleetScale, SubsampleInfo
from domain_gap.config import Config
from domain_gap.labels import CLASS_NAMES

__all__ = ["STREAM_FIELDS", "ScalePlan", "fill_cache", "plan_scale", "scale_section"]

STREAM_FIELDS = ("embedding", "metadata", "loss", "miou", "pixel_acc", "confusion", "labelled")
"""The shard arrays the streamed pass reads (not the per-class embeddings or masks)."""

CHUNK = 512
"""Frames per chunk of the fill and streamed passes (memory: one chunk of records)."""


@dataclass(frozen=True)
class ScalePlan:
    """Each analysed domain's frames and the seeded subsample the report's sections use."""

    passes: tuple[tuple[str, str | None], ...]
    """(domain, analysed subset) of every configured domain."""
    dropped: frozenset[str]
    """Analysed frames outside the subsample (still in the streamed figures)."""
    info: dict[str, SubsampleInfo]

    def view(self, dataset: Any) -> Any:
        """``dataset`` without the analysed frames outside the subsample."""
        return dataset.without(self.dropped)


def plan_scale(
    config: Config, dataset: Any, passes: Sequence[tuple[str, str | None]]
) -> ScalePlan | None:
    """The subsample plan when some domain has more than ``analysis.subsample`` frames in
    its analysed subset, else None (everything is analysed in memory)."""
    size = config.analysis.subsample
    chosen = {d: [r.sample_id for r in dataset.select(domain=d, subset=s)] for d, s in passes}
    if all(len(ids) <= size for ids in chosen.values()):
        return None
    dropped: set[str] = set()
    info = {}
    for domain, ids in chosen.items():
        order = np.argsort(hash_keys(ids, config.seed), kind="stable")
        dropped.update(ids[i] for i in order[size:])
        info[domain] = SubsampleInfo(len(ids), min(len(ids), size), config.seed, SUBSAMPLE_METHOD)
    return ScalePlan(tuple(passes), frozenset(dropped), info)


def fill_cache(
    config: Config,
    dataset: Any,
    cache: FeatureCache,
    runner: Runner,
    plan: ScalePlan,
    progress: bool = True,
) -> int:
    """Extract every analysed frame outside the subsample that the cache lacks (or holds
    unreadable), a chunk at a time, keeping no record; returns how many were computed. The
    subsample's own frames are left to the in-memory pass, whose forward also makes their
    heatmaps."""
    done = 0
    for domain, subset in plan.passes:
        source = cache_source(config, domain)
        others = [
            r for r in dataset.select(domain=domain, subset=subset) if r.sample_id in plan.dropped
        ]
        seen = tqdm(
            others, desc=f"cache check {domain}", unit="img", disable=not progress or not others
        )
        todo = [r for r in seen if cache.load(domain, r.sample_id, source, only=("loss",)) is None]
        bar = tqdm(
            total=len(todo),
            desc=f"extract {domain} (outside the subsample)",
            unit="img",
            disable=not progress or not todo,
        )
        with bar:
            for chunk in batches(todo, CHUNK):
                extract_domain(
                    config,
                    dataset,
                    domain,
                    subset,
                    runner=runner,
                    cache=cache,
                    progress=False,
                    records=chunk,
                )
                bar.update(len(chunk))
        done += len(todo)
    return done


def _stream(
    config: Config,
    dataset: Any,
    cache: FeatureCache,
    domain: str,
    subset: str | None,
    fields: Sequence[str],
    bar: Any = None,
) -> Stream:
    """A re-iterable stream of one domain's cached records as :class:`Chunk` (the numeric
    metadata ``fields``, NaN where a frame lacks one or holds text); ``bar`` counts frames."""
    source = cache_source(config, domain)
    records = dataset.select(domain=domain, subset=subset)

    def read(r: Any) -> dict[str, np.ndarray]:
        shard = cache.load(domain, r.sample_id, source, only=STREAM_FIELDS)
        if shard is None:
            raise FileNotFoundError(
                f"{cache.shard_path(domain, r.sample_id, source)}: cache shard of "
                f"{r.sample_id!r} vanished or broke during the run; rerun to recompute it"
            )
        return shard

    def chunks() -> Iterator[Chunk]:
        for part in batches(records, CHUNK):
            shards = [read(r) for r in part]
            meta = metadata_columns_json([str(s["metadata"]) for s in shards])
            if getattr(dataset, "user_tables", None):
                meta.update(dataset.user_metadata(list(part))[0])
            col = {k: np.stack([s[k] for s in shards]) for k in STREAM_FIELDS if k != "metadata"}
            yield Chunk(
                sample_ids=np.array([r.sample_id for r in part], dtype=str),
                embeddings=col["embedding"],
                metadata={f: _numeric(meta.get(f), len(part)) for f in fields},
                quality=Quality(
                    col["loss"], col["miou"], col["pixel_acc"], col["confusion"], col["labelled"]
                ),
            )
            if bar is not None:
                bar.update(len(part))

    return chunks


def _numeric(column: np.ndarray | None, n: int) -> np.ndarray:
    if column is None or column.dtype.kind not in "fiub":
        return np.full(n, np.nan)
    return column.astype(np.float64)


def scale_section(
    config: Config,
    dataset: Any,
    cache: FeatureCache,
    plan: ScalePlan,
    subsets: Mapping[str, str],
    fields: Sequence[str],
    dim: int,
    progress: bool = True,
) -> FleetScale:
    """:func:`~domain_gap.analysis.fleet.fleet_scale` over every analysed frame of every
    domain, read from the cache (``dataset``: the whole one, not the plan's view).
    ``fields``: the numeric metadata fields to histogram; ``dim``: the embedding width."""
    sizes = [plan.info[d].n_total for d, _ in plan.passes]
    bar = tqdm(total=2 * sum(sizes), desc="every frame, 2 passes", unit="img", disable=not progress)
    with bar:
        streams = {d: _stream(config, dataset, cache, d, s, fields, bar) for d, s in plan.passes}
        return fleet_scale(
            streams,
            config.source_domain,
            plan.info,
            subsets,
            CLASS_NAMES,
            max_dim=common_fd_dims(dim, sizes, config.analysis.max_dim),
        )
