"""The extraction pass as a Ray Data pipeline, writing into the local per-sample cache.

    index (driver: the samples the cache lacks)
      → read + decode + resize        CPU tasks (``map_batches`` of :func:`decode_batch`)
      → model actor                   :class:`ModelActor`: the model loaded once per actor,
                                      a batch of ``model.batch_size``, device chosen there
      → per-sample records            streamed back to the driver, which writes each shard

The records are the local pass's (``analysis.extract.forward_batch`` + ``batch_records``, the
same functions), so the cache cannot tell the two executors apart. Only the driver writes,
each shard atomically (``FeatureCache.save``), under a name fixed by the sample id: a record
computed twice (a retried batch) replaces itself, so there are no duplicates, and the cache
folder need not be shared with the workers. A rerun sends only the samples whose shard is
absent; a killed actor is restarted (``execution.max_restarts``) and loses only the batch
it was running, and a killed run keeps every shard written before. A shard present but
unreadable is left to the local read (``extract_domain`` warns and recomputes it).

Ray is imported inside the functions: importing this module needs no Ray.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from domain_gap.analysis.cache import FeatureCache
from domain_gap.analysis.extract import Runner, batch_records, cache_source, forward_batch
from domain_gap.config import Config, ExecutionConfig

__all__ = ["ModelActor", "connect", "decode_batch", "extract_missing", "missing_rows"]

RunnerFactory = Callable[[Config], Runner]
"""Builds the model runner inside an actor (default: the configured checkpoint)."""

_DATASETS: dict[tuple[str, str], Any] = {}
"""Per worker process: the indexed ``DomainDataset`` of each (config, domain), built once."""


def missing_rows(
    config: Config,
    dataset: Any,
    cache: FeatureCache,
    passes: Sequence[tuple[str, str | None]],
) -> list[dict[str, str]]:
    """One row per sample of ``passes`` (domain, subset) without a shard in ``cache``:
    its domain and its index record as JSON (what a decode task needs to read it)."""
    rows = []
    for domain, subset in passes:
        source = cache_source(config, domain)
        for r in dataset.select(domain=domain, subset=subset):
            if not cache.shard_path(domain, r.sample_id, source).exists():
                rows.append({"domain": domain, "record": json.dumps(asdict(r))})
    return rows


def connect(execution: ExecutionConfig) -> None:
    """Join ``execution.address`` (None: start a local Ray) unless Ray is already running
    in this process (a caller's own ``ray.init`` wins)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address=execution.address,
            log_to_driver=False,
            include_dashboard=False,
            logging_level=logging.WARNING,
        )


def _dataset(config: Config, domain: str) -> Any:
    from domain_gap.data.dataset import DomainDataset

    key = (config.model_dump_json(), domain)
    if key not in _DATASETS:
        _DATASETS[key] = DomainDataset(config, domains=[domain])
    return _DATASETS[key]


def decode_batch(batch: Mapping[str, np.ndarray], config: Config) -> dict[str, np.ndarray]:
    """Read, decode and resize a batch of index rows (a CPU task): the columns of
    ``PreparedSample`` (a missing label is all void with ``has_label`` False)."""
    from domain_gap.data.records import SampleRecord
    from domain_gap.labels import IGNORE_INDEX

    prepared = []
    for domain, text in zip(batch["domain"], batch["record"], strict=True):
        record = SampleRecord(**json.loads(str(text)))
        prepared.append(_dataset(config, str(domain)).prepare(record))
    shape = prepared[0].image.shape[:2]
    return {
        "domain": np.asarray(batch["domain"]),
        "record": np.asarray(batch["record"]),
        "image": np.stack([p.image for p in prepared]),
        "label": np.stack(
            [p.label if p.label is not None else np.full(shape, IGNORE_INDEX) for p in prepared]
        ).astype(np.uint8),
        "has_label": np.array([p.label is not None for p in prepared]),
        "valid": np.stack([np.asarray(p.valid, dtype=bool) for p in prepared]),
        "orig_hw": np.array([p.orig_hw for p in prepared], dtype=np.int64),
        "vehicle": np.array([json.dumps(p.vehicle) for p in prepared]),
    }


def _prepared(batch: Mapping[str, np.ndarray]) -> list[Any]:
    """The ``PreparedSample`` list behind a decoded batch."""
    from domain_gap.data.dataset import PreparedSample
    from domain_gap.data.records import SampleRecord

    return [
        PreparedSample(
            record=SampleRecord(**json.loads(str(batch["record"][i]))),
            image=batch["image"][i],
            label=batch["label"][i] if batch["has_label"][i] else None,
            valid=batch["valid"][i],
            orig_hw=(int(batch["orig_hw"][i][0]), int(batch["orig_hw"][i][1])),
            vehicle=json.loads(str(batch["vehicle"][i])),
        )
        for i in range(len(batch["record"]))
    ]


def _check_checkpoint(config: Config, cache: FeatureCache) -> None:
    """Load the configured checkpoint once on the driver (CPU): a missing or unfit file is one
    clear error before any actor starts, and its card lands beside the shards, as locally."""
    from domain_gap.analysis.extract import ExtractionError, write_model_card
    from models import load_checkpoint

    path = Path(config.resolve(config.model.checkpoint) or "")
    if not path.is_file():
        raise ExtractionError(f"{path}: model checkpoint not found (config model.checkpoint)")
    m = config.model
    _, card = load_checkpoint(
        path, arch=m.arch, num_classes=m.num_classes, output_stride=m.output_stride
    )
    write_model_card(cache, card)


def _default_runner(config: Config) -> Runner:
    from domain_gap.analysis.extract import load_runner

    return load_runner(config)


class ModelActor:
    """One model per actor, loaded in ``__init__`` on the device ``config.model.device``
    selects there (``auto``: the actor's GPU when Ray gave it one); each call forwards a
    decoded batch and returns its records as columns."""

    def __init__(self, config: Config, runner_factory: RunnerFactory | None = None) -> None:
        self.config = config
        self.runner = (runner_factory or _default_runner)(config)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        prepared = _prepared(batch)
        records = batch_records(forward_batch(self.runner, prepared, self.config))
        columns = {name: np.stack([np.asarray(r[name]) for r in records]) for name in records[0]}
        columns["domain"] = np.asarray(batch["domain"])
        columns["sample_id"] = np.array([p.record.sample_id for p in prepared])
        return columns


def _check_resources(ex: ExecutionConfig, resources: Mapping[str, float]) -> None:
    """The model actors must leave the CPUs (and hold the GPUs) for at least one decode task,
    or the pipeline would wait for ever: one clear error before it starts."""
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    need_cpu = (ex.concurrency + 1) * ex.num_cpus_per_worker
    need_gpu = ex.concurrency * ex.num_gpus_per_worker
    if need_cpu > cpus or need_gpu > gpus:
        raise ValueError(
            f"execution: {ex.concurrency} model actors x {ex.num_cpus_per_worker} CPU and "
            f"{ex.num_gpus_per_worker} GPU, plus one decode task, need {need_cpu:g} CPUs and "
            f"{need_gpu:g} GPUs; the Ray cluster has {cpus:g} and {gpus:g} (lower "
            "execution.concurrency or num_cpus_per_worker)"
        )


def _restarts(n: int) -> Callable[[], dict[str, int]]:
    """The model actors' remote options: restarted ``n`` times, their batch retried as often
    (Ray 2.60 warns that this argument goes in 2.64; the extra pins 2.60)."""
    return lambda: {"max_restarts": n, "max_task_retries": n}


def _rows(batch: Mapping[str, np.ndarray]) -> Iterator[tuple[str, str, dict[str, np.ndarray]]]:
    """(domain, sample id, record arrays) of each row of a returned batch."""
    names = [n for n in batch if n not in ("domain", "sample_id")]
    for i in range(len(batch["sample_id"])):
        arrays = {n: np.asarray(batch[n][i]) for n in names}
        yield str(batch["domain"][i]), str(batch["sample_id"][i]), arrays


def extract_missing(
    config: Config,
    dataset: Any,
    cache: FeatureCache,
    passes: Sequence[tuple[str, str | None]],
    *,
    progress: bool = True,
    runner_factory: RunnerFactory | None = None,
) -> int:
    """Run the pipeline over the samples of ``passes`` that ``cache`` lacks and write their
    shards; returns how many were written. ``runner_factory`` replaces the configured
    checkpoint (it must be picklable: it runs inside the actors)."""
    rows = missing_rows(config, dataset, cache, passes)
    if not rows:
        return 0
    try:
        import ray
    except ImportError:
        from domain_gap.execution import RAY_MISSING

        raise RuntimeError(RAY_MISSING) from None
    ex = config.execution
    connect(ex)
    _check_resources(ex, ray.cluster_resources())
    if runner_factory is None:  # fail here, not in every actor, on a bad checkpoint
        _check_checkpoint(config, cache)
    ctx = ray.data.DataContext.get_current()
    ctx.raise_original_map_exception = True  # the worker's own error, not Ray's wrapper
    ctx.enable_progress_bars = False  # the one bar below replaces Ray's
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    size = config.model.batch_size
    ds = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // size)))
    ds = ds.map_batches(
        decode_batch,
        batch_size=size,
        batch_format="numpy",
        fn_kwargs={"config": config},
        num_cpus=ex.num_cpus_per_worker,
    )
    ds = ds.map_batches(
        ModelActor,
        batch_size=size,
        batch_format="numpy",
        fn_constructor_kwargs={"config": config, "runner_factory": runner_factory},
        compute=ray.data.ActorPoolStrategy(size=ex.concurrency),
        num_cpus=ex.num_cpus_per_worker,
        num_gpus=ex.num_gpus_per_worker or None,
        ray_remote_args_fn=_restarts(ex.max_restarts),
    )
    sources = {d: cache_source(config, d) for d, _ in passes}
    written = 0
    with tqdm(total=len(rows), desc="extract (ray)", unit="img", disable=not progress) as bar:
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for domain, sample_id, arrays in _rows(batch):
                    cache.save(domain, sample_id, arrays, sources[domain])
                    written += 1
                bar.update(len(batch["sample_id"]))
        except Exception as exc:  # a worker's error arrives wrapped in Ray's own exceptions
            from domain_gap.analysis.extract import ExtractionError

            raise ExtractionError(
                f"ray executor: {root_message(exc)} ({written} records written and kept)"
            ) from None
    return written


def root_message(exc: BaseException) -> str:
    """The first line of the innermost cause of ``exc`` (Ray wraps a worker's exception, with
    its remote traceback, in ``RayTaskError``/``UserCodeException``)."""
    seen = {id(exc)}
    while True:
        cause = getattr(exc, "cause", None) or exc.__cause__
        if not isinstance(cause, BaseException) or id(cause) in seen:
            break
        seen.add(id(cause))
        exc = cause
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    if lines[0].startswith(("ray::", "Traceback")):  # a remote traceback: its last line
        return lines[-1].strip()
    return lines[0].strip()
