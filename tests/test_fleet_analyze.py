"""``analyze`` above ``analysis.subsample``: the sections on a seeded subsample, every frame
streamed (summary.fleet), compared with an in-memory run over every frame on the same cache."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SUBSAMPLE = 4  # the tiny sample's kitti val has 7 frames, cityscapes val 4


def _config(config_for: Any, root: Path, ckpt: Path, cache: Path, **analysis: Any) -> Any:
    return config_for(
        root,
        top={
            "cache_dir": str(cache),
            "model": {"checkpoint": str(ckpt), "batch_size": 4, "device": "cpu", "onnx": None},
            "analysis": {
                "clusters": 2,
                "permutations": 19,
                "bootstrap": 10,
                "heatmaps": {"enabled": False},
                **analysis,
            },
        },
    )


@pytest.fixture(scope="module")
def runs(
    tiny_sample: Path, tiny_ckpt: Path, config_for: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The fleet run first (it fills a fresh cache), then the in-memory run on that cache."""
    from domain_gap.pipeline import run_analysis

    cache = tmp_path_factory.mktemp("fleet_cache")
    fix = [{"kind": "rgb_normalize"}]
    fleet_cfg = _config(
        config_for,
        tiny_sample,
        tiny_ckpt,
        cache,
        subsample=SUBSAMPLE,
        mitigations=fix,
        heatmaps={"enabled": True, "min_images": 2},
    )
    full_cfg = _config(config_for, tiny_sample, tiny_ckpt, cache)
    fleet = run_analysis(fleet_cfg, tmp_path_factory.mktemp("fleet_out"), progress=False)
    full = run_analysis(
        full_cfg, tmp_path_factory.mktemp("full_out"), progress=False, runner=NoModel()
    )
    return {
        "fleet": json.loads(fleet["summary"].read_text()),
        "full": json.loads(full["summary"].read_text()),
        "fleet_paths": fleet,
        "full_paths": full,
        "cache": cache,
        "config": fleet_cfg,
    }


class NoModel:
    """A runner that must not be called (every record is cached)."""

    def __call__(self, x: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        raise AssertionError("the model ran although the fleet run had cached every frame")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _bottom_k(ids: list[str], seed: int, k: int) -> set[str]:
    """The k ids of smallest sha256(seed, id) key, computed here independently."""

    def key(s: str) -> int:
        return int.from_bytes(hashlib.sha256(f"{seed}\0{s}".encode()).digest()[:8], "little")

    return set(sorted(ids, key=key)[:k])


@pytest.mark.slow
def test_sections_run_on_the_stated_bottom_k_subsample(runs: dict[str, Any]) -> None:
    fleet, full = runs["fleet"], runs["full"]
    info = fleet["fleet"]["subsample"]
    assert info["kitti"]["n_total"] == full["sizes"]["kitti"] == 7
    assert info["kitti"]["n_used"] == fleet["sizes"]["kitti"] == SUBSAMPLE
    assert info["cityscapes"]["n_total"] == info["cityscapes"]["n_used"] == 4
    assert "bottom-k" in info["kitti"]["method"]
    full_ids = [
        r["sample_id"] for r in _rows(runs["full_paths"]["samples"]) if r["domain"] == "kitti"
    ]
    got = {r["sample_id"] for r in _rows(runs["fleet_paths"]["samples"]) if r["domain"] == "kitti"}
    assert got == _bottom_k(full_ids, runs["config"].seed, SUBSAMPLE)
    assert fleet["frames"] == full["frames"]  # the index is stated whole
    report = runs["fleet_paths"]["report"].read_text()
    assert "seeded subsample" in report and "4 of 7" in report
    # fields drawn over every frame: here (4 + 4 frames: nothing significant) the three of
    # largest KS statistic on the subsample
    numeric = fleet["metadata_drift"]["kitti"]["numeric"]
    assert not any(r["significant"] for r in numeric)
    by_ks = sorted((r for r in numeric if r["ks"] is not None), key=lambda r: -r["ks"])
    for row in by_ks[:3]:
        assert f'alt="{row["field"]}, every frame"' in report
    assert report.count(', every frame"') == 3
    # the what-if pass re-extracted the subsample only, and the heatmaps saw it only
    assert fleet["mitigations"]["kitti"]["mitigations"][0]["deltas"]["n_images"] == SUBSAMPLE
    assert fleet["heatmaps"]["n_images"] == {"cityscapes": 4, "kitti": SUBSAMPLE}


@pytest.mark.slow
def test_every_frame_figures_equal_the_in_memory_run(runs: dict[str, Any]) -> None:
    streamed, full = runs["fleet"]["fleet"], runs["full"]
    for name, want in full["domains"].items():
        got = streamed["domains"][name]
        assert got["n"] == want["n"] and got["n_labelled"] == want["n_labelled"]
        assert got["loss_median"] is None  # not streamed, and not claimed
        for key in ("loss_mean", "miou_dataset", "miou_mean", "pixel_acc_mean"):
            assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), (name, key)
        for cls, v in want["class_iou_dataset"].items():
            assert got["class_iou_dataset"][cls] == pytest.approx(v, abs=1e-12)
    for key, v in full["drop"]["kitti"].items():
        assert streamed["drop"]["kitti"][key] == pytest.approx(v, rel=1e-9, abs=1e-12)
    fd, want_fd = streamed["frechet"]["kitti"], full["latent_gap"]["kitti"]["frechet"]
    assert fd["dims"] == want_fd["dims"] and fd["reduced"] == want_fd["reduced"]
    assert fd["value"] == pytest.approx(want_fd["value"], rel=1e-6)


def _shard_metadata(cache: Path, domain: str, ids: set[str]) -> list[dict[str, Any]]:
    """The metadata of ``ids`` read straight from the cache's shard files."""
    out = []
    for path in cache.rglob(f"{domain}/*.npz"):
        if "mitigated" in path.parts:
            continue
        with np.load(path) as npz:  # records only (heatmap shards have no metadata)
            if "metadata" in npz.files and str(npz["sample_id"]) in ids:
                out.append(json.loads(str(npz["metadata"])))
    return out


@pytest.mark.slow
def test_histograms_count_every_frame(runs: dict[str, Any]) -> None:
    rows = _rows(runs["full_paths"]["samples"])
    hists = {h["name"]: h for h in runs["fleet"]["fleet"]["histograms"]["kitti"]}
    assert "brightness" in hists
    for side, domain in (("source", "cityscapes"), ("target", "kitti")):
        ids = {r["sample_id"] for r in rows if r["domain"] == domain}
        meta = _shard_metadata(runs["cache"], domain, ids)
        assert len(meta) == len(ids) == runs["full"]["sizes"][domain]
        for name in ("brightness", "saturation", "frac_road"):
            h = hists[name]
            values = np.array([m[name] for m in meta], dtype=float)
            assert list(np.histogram(values, np.array(h["edges"]))[0]) == h[side], (name, side)


@pytest.mark.slow
def test_fleet_run_cached_every_frame_and_its_summary_fits_the_schema(
    runs: dict[str, Any], validate_summary: Any
) -> None:
    shards = list(Path(runs["cache"]).rglob("kitti/*.npz"))
    kitti = runs["full"]["frames"]["kitti"]
    assert len([p for p in shards if "mitigated" not in p.parts]) >= kitti["val"]
    validate_summary(runs["fleet"])
    assert runs["full"]["fleet"] is None  # under the subsample size nothing is streamed


class Counting:
    """A runner that counts the samples it is given."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.samples = inner, 0

    def __call__(self, x: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        self.samples += len(x)
        return self.inner(x, labels)


def test_fill_pass_computes_only_the_frames_outside_the_subsample(
    tiny_sample: Path, tiny_ckpt: Path, config_for: Any, tmp_path: Path
) -> None:
    from domain_gap.analysis.cache import FeatureCache
    from domain_gap.analysis.extract import load_runner
    from domain_gap.analysis.scale import fill_cache, plan_scale
    from domain_gap.data.dataset import DomainDataset
    from domain_gap.pipeline import analysed_passes

    config = _config(config_for, tiny_sample, tiny_ckpt, tmp_path / "c", subsample=SUBSAMPLE)
    dataset, cache = DomainDataset(config), FeatureCache.for_config(config)
    plan = plan_scale(config, dataset, analysed_passes(config, dataset))
    assert plan is not None and len(plan.dropped) == 7 - SUBSAMPLE  # kitti val 7 → 4
    runner = Counting(load_runner(config, cache))
    assert fill_cache(config, dataset, cache, runner, plan, progress=False) == len(plan.dropped)
    assert runner.samples == len(plan.dropped)
    assert fill_cache(config, dataset, cache, runner, plan, progress=False) == 0  # all cached
    view = plan.view(dataset)
    kept = {r.sample_id for r in view.select("kitti", "val")}
    assert len(kept) == SUBSAMPLE and kept.isdisjoint(plan.dropped)
    assert len(view.select("kitti", "train")) == len(dataset.select("kitti", "train"))
    roomy = _config(config_for, tiny_sample, tiny_ckpt, tmp_path / "c", subsample=7)
    assert plan_scale(roomy, dataset, analysed_passes(roomy, dataset)) is None
