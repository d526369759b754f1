"""``execution.executor: ray``: a local two-worker Ray cluster fills the same per-sample cache
as the single-process pass (record by record), survives a killed worker, and a rerun
completes with no duplicates; without Ray installed, nothing else imports it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from domain_gap.analysis.cache import FeatureCache
from domain_gap.analysis.extract import RECORD_FIELDS, TorchRunner, extract_domain
from domain_gap.config import Config, HeatmapConfig
from domain_gap.data.dataset import DomainDataset

PASSES = [("cityscapes", "val"), ("kitti", "val"), ("kitti", "unlabeled")]
"""Labelled and unlabeled frames of both domains: 14 samples of the tiny sample."""


def _config(config_for: Callable[..., Config], root: Path, ckpt: Path, cache: Path) -> Config:
    return config_for(
        root,
        top={
            "cache_dir": str(cache),
            "model": {"checkpoint": str(ckpt), "batch_size": 2, "device": "cpu"},
            "execution": {
                "executor": "ray",
                "concurrency": 2,  # two model actors (the two workers) ...
                "num_cpus_per_worker": 0.5,  # ... leaving a CPU for the decode tasks
                "max_restarts": 2,
            },
        },
    )


def _shards(cache: FeatureCache) -> list[Path]:
    return sorted(p for p in cache.root.rglob("*") if p.is_file() and p.name != "model.json")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """One local Ray with two CPUs (two model actors) for the whole module."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(
    tiny_sample: Path, tiny_ckpt: Path, config_for: Callable[..., Config], tmp_path_factory: Any
) -> tuple[Config, FeatureCache]:
    """The single-process pass of :data:`PASSES` into its own cache."""
    config = _config(config_for, tiny_sample, tiny_ckpt, tmp_path_factory.mktemp("local"))
    cache = FeatureCache.for_config(config)
    dataset = DomainDataset(config)
    for domain, subset in PASSES:
        extract_domain(config, dataset, domain, subset, cache=cache, progress=False)
    return config, cache


def _assert_same_records(
    config: Config, got: FeatureCache, want: FeatureCache, dataset: DomainDataset
) -> int:
    from domain_gap.analysis.extract import cache_source

    n = 0
    for domain, subset in PASSES:
        source = cache_source(config, domain)
        for r in dataset.select(domain, subset):
            a = got.load(domain, r.sample_id, source, RECORD_FIELDS)
            b = want.load(domain, r.sample_id, source, RECORD_FIELDS)
            assert a is not None and b is not None, r.sample_id
            for name in RECORD_FIELDS:
                x, y = a[name], b[name]
                assert x.shape == y.shape and x.dtype == y.dtype, (r.sample_id, name)
                if x.dtype.kind == "f":
                    np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5, err_msg=name)
                else:
                    np.testing.assert_array_equal(x, y, err_msg=name)
            n += 1
    return n


class NoModel:
    """A runner that must not be called (every record is already cached)."""

    def __call__(self, x: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        raise AssertionError("the model ran although the cache was full")


@pytest.mark.slow
def test_two_workers_fill_the_same_cache(
    cluster: Any,
    reference: tuple[Config, FeatureCache],
    tiny_sample: Path,
    tiny_ckpt: Path,
    config_for: Callable[..., Config],
    tmp_path: Path,
) -> None:
    from domain_gap.execution import prefill_cache

    config = _config(config_for, tiny_sample, tiny_ckpt, tmp_path / "cache")
    cache = FeatureCache.for_config(config)
    dataset = DomainDataset(config)
    written = prefill_cache(config, dataset, cache, PASSES, progress=False)
    n = sum(len(dataset.select(d, s)) for d, s in PASSES)
    assert written == n == len(_shards(cache))
    assert (cache.root / "model.json").is_file()  # the card, as the local pass writes it
    assert _assert_same_records(config, cache, reference[1], dataset) == n
    assert prefill_cache(config, dataset, cache, PASSES, progress=False) == 0  # rerun: cached
    for domain, subset in PASSES:  # the local read finds every record
        got = extract_domain(config, dataset, domain, subset, runner=NoModel(), cache=cache)
        want = extract_domain(config, dataset, domain, subset, runner=NoModel(), cache=reference[1])
        np.testing.assert_allclose(got.embeddings, want.embeddings, rtol=2e-4, atol=2e-5)
        assert got.sample_ids.tolist() == want.sample_ids.tolist()


@pytest.mark.slow
def test_pipeline_extraction_runs_on_ray_when_configured(
    cluster: Any,
    reference: tuple[Config, FeatureCache],
    tiny_sample: Path,
    tiny_ckpt: Path,
    config_for: Callable[..., Config],
    tmp_path: Path,
) -> None:
    """``pipeline.extract_all`` with ``executor: ray`` fills the cache on the cluster first: the
    local runner it is given is never called, and the features equal the local pass's."""
    from domain_gap.analysis.extract import domain_subset
    from domain_gap.pipeline import extract_all

    config = _config(config_for, tiny_sample, tiny_ckpt, tmp_path / "cache")
    off = config.analysis.model_copy(update={"heatmaps": HeatmapConfig(enabled=False)})
    config = config.model_copy(update={"analysis": off})
    dataset = DomainDataset(config)
    feats = extract_all(config, dataset, FeatureCache.for_config(config), NoModel(), False)
    for d in config.domains:
        subset = domain_subset(config, dataset, d.name)
        want = extract_domain(config, dataset, d.name, subset, cache=reference[1], progress=False)
        got = feats.domain(d.name)
        assert got.sample_ids.tolist() == want.sample_ids.tolist()
        np.testing.assert_allclose(got.loss, want.loss, rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(got.embeddings, want.embeddings, rtol=2e-4, atol=2e-5)


@pytest.mark.slow
def test_a_bad_frame_on_a_worker_is_one_line_naming_it(
    cluster: Any,
    sample_copy: Path,
    tiny_ckpt: Path,
    config_for: Callable[..., Config],
    tmp_path: Path,
) -> None:
    from domain_gap.analysis.extract import ExtractionError
    from domain_gap.execution.ray_extract import extract_missing

    config = _config(config_for, sample_copy, tiny_ckpt, tmp_path / "cache")
    dataset = DomainDataset(config)
    path = Path(dataset.select("kitti", "val")[3].image_path)
    data = bytearray(path.read_bytes())
    data[40:200] = bytes(160)  # header intact, image data destroyed
    path.write_bytes(bytes(data))
    cache = FeatureCache.for_config(config)
    with pytest.raises(ExtractionError) as info:
        extract_missing(config, dataset, cache, [("kitti", "val")], progress=False)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "corrupt" in message
    assert "records written and kept" in message
    assert not list(cache.root.rglob("*.tmp*"))  # whatever was written is whole


class KillableRunner:
    """The real model, logging each batch; once (``armed`` claimed), its process writes its
    pid to ``victim`` on its second batch and waits there to be killed."""

    def __init__(self, config: Config, marks: Path) -> None:
        from domain_gap.analysis.extract import load_runner

        self.inner: TorchRunner = load_runner(config)
        self.marks = marks
        self.calls = 0

    def __call__(self, x: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        self.calls += 1
        with open(self.marks / "calls.log", "a") as fh:
            fh.write(f"{os.getpid()} {len(x)}\n")
        if self.calls == 2:
            try:
                os.rename(self.marks / "armed", self.marks / f"claimed-{os.getpid()}")
            except FileNotFoundError:
                pass
            else:
                (self.marks / "victim.tmp").write_text(str(os.getpid()))
                os.replace(self.marks / "victim.tmp", self.marks / "victim")
                time.sleep(120)
        return self.inner(x, labels)


class KillableFactory:
    def __init__(self, marks: Path) -> None:
        self.marks = marks

    def __call__(self, config: Config) -> KillableRunner:
        return KillableRunner(config, self.marks)


def _run_and_kill(config: Config, cache: FeatureCache, marks: Path) -> BaseException | None:
    """Run the pipeline in a thread, SIGKILL the worker that claims ``armed`` mid-batch."""
    from domain_gap.execution.ray_extract import extract_missing

    dataset = DomainDataset(config)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            extract_missing(
                config,
                dataset,
                cache,
                PASSES,
                progress=False,
                runner_factory=KillableFactory(marks),
            )
        except BaseException as exc:  # reported to the test
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    while not (marks / "victim").exists():
        assert time.monotonic() < deadline and thread.is_alive(), "no worker reached batch 2"
        time.sleep(0.2)
    os.kill(int((marks / "victim").read_text()), signal.SIGKILL)
    thread.join(180)
    assert not thread.is_alive()
    return failure[0] if failure else None


@pytest.mark.slow
def test_killed_worker_loses_only_its_batch_and_rerun_completes(
    cluster: Any,
    reference: tuple[Config, FeatureCache],
    tiny_sample: Path,
    tiny_ckpt: Path,
    config_for: Callable[..., Config],
    tmp_path: Path,
) -> None:
    from ray import cloudpickle

    from domain_gap.execution.ray_extract import extract_missing

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    marks = tmp_path / "marks"
    marks.mkdir()
    (marks / "armed").write_text("")
    config = _config(config_for, tiny_sample, tiny_ckpt, tmp_path / "cache")
    cache = FeatureCache.for_config(config)
    dataset = DomainDataset(config)
    n = sum(len(dataset.select(d, s)) for d, s in PASSES)
    _run_and_kill(config, cache, marks)
    assert not (marks / "armed").exists()  # the kill happened
    done_before = len(_shards(cache))
    again = extract_missing(
        config, dataset, cache, PASSES, progress=False, runner_factory=KillableFactory(marks)
    )
    assert again == n - done_before  # the rerun computes only what is missing
    shards = _shards(cache)
    assert len(shards) == n and all(p.suffix == ".npz" for p in shards)  # no dups, no temp
    forwarded = sum(
        int(line.split()[1]) for line in (marks / "calls.log").read_text().split("\n") if line
    )
    assert n <= forwarded <= n + config.model.batch_size  # only the killed batch ran twice
    assert _assert_same_records(config, cache, reference[1], dataset) == n


def test_local_path_needs_no_ray(tiny_sample: Path, tmp_path: Path) -> None:
    """With ``ray`` unimportable, the package, the CLI and the local executor work, and the
    ray executor fails with one clear line naming the extra."""
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys

        class NoRay(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "ray" or name.startswith("ray."):
                    raise ImportError("No module named 'ray' (hidden)")
                return None

        sys.meta_path.insert(0, NoRay())
        import domain_gap, domain_gap.cli, domain_gap.pipeline, domain_gap.execution.ray_extract
        from domain_gap.analysis.cache import FeatureCache
        from domain_gap.config import parse_config
        from domain_gap.data.dataset import DomainDataset
        from domain_gap.execution import prefill_cache
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from conftest import tiny_config_dict

        root = {str(tiny_sample)!r}
        for executor in ("local", "ray"):
            data = tiny_config_dict(root, top={{"execution": {{"executor": executor}}}})
            config = parse_config(data, base_dir=root)
            cache = FeatureCache({str(tmp_path)!r}, "ab" * 32, "aspp", "p")
            try:
                passes = [("kitti", "val")]
                print(executor, prefill_cache(config, DomainDataset(config), cache, passes))
            except RuntimeError as exc:
                print(executor, "error:", exc)
        assert "ray" not in sys.modules
        """
    )
    env = {**os.environ, "TL_DISABLE_ANALYTICS": "true"}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "local 0"
    assert lines[1].startswith("ray error: execution.executor 'ray' needs Ray Data")
    assert "domain-gap[ray]" in lines[1]


def test_resources_are_checked_before_the_run() -> None:
    from domain_gap.config import ExecutionConfig
    from domain_gap.execution.ray_extract import _check_resources

    ex = ExecutionConfig(executor="ray", concurrency=2)
    _check_resources(ex, {"CPU": 3.0})
    with pytest.raises(ValueError, match="need 3 CPUs and 0 GPUs; the Ray cluster has 2 and 0"):
        _check_resources(ex, {"CPU": 2.0})
    with pytest.raises(ValueError, match="need 3 CPUs and 2 GPUs"):
        _check_resources(ExecutionConfig(concurrency=2, num_gpus_per_worker=1), {"CPU": 8.0})


def test_cli_executor_option_overrides_the_config(tiny_config: Config) -> None:
    from domain_gap.cli import with_executor
    from domain_gap.config import ConfigError

    assert tiny_config.execution.executor == "local"
    assert with_executor(tiny_config, None) is tiny_config
    chosen = with_executor(tiny_config, "ray")
    assert chosen.execution.executor == "ray" and chosen.model == tiny_config.model
    with pytest.raises(ConfigError, match="--executor: expected 'local' or 'ray', got 'spark'"):
        with_executor(tiny_config, "spark")
