"""The heatmap stage on the tiny sample: its summary section, samples.csv columns and report
section, a cached and resumable pass (the pipeline wiring runs in tests/test_pipeline.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from domain_gap.analysis.cache import FeatureCache
from domain_gap.analysis.results import Heatmaps, to_json
from domain_gap.data.dataset import DomainDataset
from domain_gap.heatmaps.run import FIELDS, heatmap_cache, run_heatmaps


@pytest.fixture(scope="module")
def config(tiny_sample: Path, config_for: Any, tmp_path_factory: pytest.TempPathFactory):
    from models import build_model, save_checkpoint

    tmp = tmp_path_factory.mktemp("heatmaps")
    torch.manual_seed(3)  # a random model whose CAMs have mass for two classes
    model = build_model("deeplabv3plus_mobilenet", head_channels=32)
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 128) * 1.5 + 0.3)
    save_checkpoint(model.eval(), tmp / "model.pt")
    return config_for(
        tiny_sample,
        top={
            "image": {"height": 64, "width": 128, "resize": "pad"},
            "cache_dir": str(tmp / "cache"),
            "model": {"checkpoint": str(tmp / "model.pt"), "batch_size": 4, "device": "cpu"},
            "analysis": {
                "clusters": 3,
                "permutations": 19,
                "bootstrap": 10,
                "heatmaps": {"min_images": 3, "grid": [8, 16], "ring": 0.1},
            },
        },
    )


@pytest.fixture(scope="module")
def run(config: Any):
    return run_heatmaps(config, DomainDataset(config), FeatureCache.for_config(config), None, False)


class NoModel:
    """A runner that fails if anything asks it for the model."""

    def get(self) -> Any:
        raise AssertionError("the model was loaded although every heatmap is cached")

    def __call__(self, x: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
        raise AssertionError("the model was called although every sample is cached")


def test_section_columns_and_report(run, config) -> None:
    from domain_gap.report.assets import ReportAssets
    from domain_gap.report.heatmap_figures import draw
    from domain_gap.report.html import environment

    h = to_json(run.section)
    assert h["layer"] == "aspp" and h["target_masks"] == "predicted" and h["grid"] == [8, 16]
    comp = h["comparisons"]["kitti"]
    tested = [c for c in comp["classes"] if c["tested"]]
    assert tested and comp["n_tests"] == 5 * len(tested)
    for c in tested:
        assert min(c["n_source"], c["n_target"]) >= 3 and c["sentence"]
        for t in c["tests"]:
            assert t["p_floor"] == pytest.approx(1 / (comp["permutations"] + 1))
            assert t["p_adjusted"] >= t["p_value"]
    assert 1 / (comp["permutations"] + 1) <= comp["alpha"] / (2 * comp["n_tests"])
    ids = run.records.sample_ids.tolist()
    name = tested[0]["class_name"]
    shares = run.columns(ids)[f"cam_on_object_{name.replace(' ', '_')}"]
    assert np.isfinite(shares).sum() >= 6 and np.nanmax(shares) <= 1
    # the report section, drawn and rendered from the run alone
    dataset = DomainDataset(config)
    by_id = {r.sample_id: r for r in dataset.records}

    def images(sample_ids):
        prepared = {i: dataset.prepare(by_id[i]) for i in sample_ids}
        return {i: (p.image, None, p.valid) for i, p in prepared.items()}

    summary = SimpleNamespace(heatmaps=run.section)
    assets = ReportAssets()
    draw(assets, summary, run, images)
    assert f"heatmaps/kitti/{name}" in assets.figures
    html = environment().get_template("heatmaps.html.j2").render(s=summary, assets=assets)
    assert "Where the model looks" in html and tested[0]["sentence"] in html.replace("&#39;", "'")
    assert html.count("<img") == len(assets.figures)


def test_a_cached_pass_needs_no_model_and_resumes(run, config) -> None:
    dataset = DomainDataset(config)
    cache = FeatureCache.for_config(config)
    again = run_heatmaps(config, dataset, cache, NoModel(), progress=False)
    first = to_json(run.section)
    assert to_json(again.section) == first
    shards = sorted(heatmap_cache(cache, config).root.rglob("*.npz"))
    assert len(shards) == sum(1 for r in dataset.records if r.subset == "val")
    shards[0].unlink()  # an interrupted pass: one shard missing
    with pytest.raises(AssertionError, match="heatmap is cached"):
        run_heatmaps(config, dataset, cache, NoModel(), progress=False)
    redone = run_heatmaps(config, dataset, cache, None, progress=False)
    assert isinstance(redone.section, Heatmaps) and shards[0].is_file()
    with np.load(shards[0]) as npz:
        assert set(FIELDS) <= set(npz.files)
    classes = to_json(redone.section)["comparisons"]["kitti"]["classes"]
    for a, b in zip(first["comparisons"]["kitti"]["classes"], classes, strict=True):
        assert (a["class_name"], a["n_source"], a["n_target"]) == (
            b["class_name"],
            b["n_source"],
            b["n_target"],
        )
        for ta, tb in zip(a["tests"], b["tests"], strict=True):
            assert ta["value_target"] == pytest.approx(tb["value_target"], abs=1e-4)


def test_the_extraction_pass_makes_the_same_heatmaps_from_its_own_forward(config: Any, tmp_path):
    """One forward for records and CAMs: the shards equal the separate heatmap pass's, the
    records equal a pass without heatmaps."""
    from domain_gap.analysis.extract import extract_domain, load_runner
    from domain_gap.heatmaps.run import CamSink, cam_pass

    dataset = DomainDataset(config)
    domain = config.source_domain
    shared = FeatureCache.for_config(config.model_copy(update={"cache_dir": str(tmp_path / "s")}))
    runner = load_runner(config)
    with_cams = extract_domain(
        config,
        dataset,
        domain,
        "val",
        runner=runner,
        cache=shared,
        progress=False,
        cam_sink=CamSink(config, shared),
    )
    plain = FeatureCache.for_config(config.model_copy(update={"cache_dir": str(tmp_path / "p")}))
    without = extract_domain(
        config, dataset, domain, "val", runner=runner, cache=plain, progress=False
    )
    np.testing.assert_array_equal(with_cams.embeddings, without.embeddings)
    np.testing.assert_array_equal(with_cams.confusion, without.confusion)
    np.testing.assert_allclose(with_cams.loss, without.loss, rtol=1e-6)

    folded = cam_pass(config, dataset, domain, shared, NoModel(), False)  # all cached already
    separate = cam_pass(config, dataset, domain, plain, runner, False)
    assert len(folded) == len(separate) > 0
    for a, b in zip(folded, separate, strict=True):
        assert a["sample_id"] == b["sample_id"]
        for name in FIELDS:
            np.testing.assert_allclose(
                np.asarray(a[name], float),
                np.asarray(b[name], float),
                rtol=1e-5,
                atol=1e-6,
                err_msg=name,
            )
