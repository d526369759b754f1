"""The what-if loop end to end on the tiny sample: fit on unevaluated frames, re-measure."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from domain_gap.analysis.cache import FeatureCache
from domain_gap.analysis.mitigate import MitigationError, choose_fit_records
from domain_gap.data.dataset import DomainDataset

FIXES = [
    {"kind": "rgb_normalize"},
    {"kind": "histogram_match"},
    {"kind": "fourier_amplitude", "options": {"beta": 0.05}},
    {"kind": "adabn", "options": {"batch_size": 2}},
]


@pytest.fixture(scope="module")
def whatif_config(tiny_sample: Path, tiny_ckpt: Path, config_for: Any, whatif_cache: Path):
    return config_for(
        tiny_sample,
        top={
            "cache_dir": str(whatif_cache),
            "model": {"checkpoint": str(tiny_ckpt), "batch_size": 4, "device": "cpu"},
            "analysis": {
                "clusters": 3,
                "permutations": 19,
                "bootstrap": 20,
                "mitigations": FIXES,
                "mitigation_fit": {"max_images": 4},
            },
        },
    )


@pytest.fixture(scope="module")
def outputs(whatif_config: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from domain_gap.pipeline import run_analysis

    return run_analysis(whatif_config, tmp_path_factory.mktemp("out"), progress=False)


def test_fit_frames_are_never_evaluated(whatif_config: Any) -> None:
    dataset = DomainDataset(whatif_config)
    evaluated = [r.sample_id for r in dataset.records if r.subset == "val"]
    src, tgt, fit = choose_fit_records(whatif_config, dataset, "cityscapes", "kitti", evaluated)
    assert fit.target_ids and fit.source_ids
    assert not set(fit.target_ids + fit.source_ids) & set(evaluated)
    assert {r.subset for r in tgt} <= {"train", "unlabeled"} and len(tgt) <= 4
    assert {r.subset for r in src} == {"train"}
    with pytest.raises(MitigationError, match="shared"):
        choose_fit_records(
            whatif_config, dataset, "cityscapes", "kitti", [*evaluated, fit.target_ids[0]]
        )


@pytest.mark.slow
def test_summary_has_a_what_if_section_per_fix(
    outputs: dict[str, Path], validate_summary: Any
) -> None:
    summary = json.loads(outputs["summary"].read_text())
    validate_summary(summary)
    section = summary["mitigations"]["kitti"]
    assert [m["name"] for m in section["mitigations"]] == [f["kind"] for f in FIXES]
    base = summary["domains"]["kitti"]
    for m in section["mitigations"]:
        d = m["deltas"]["miou"]
        assert d["before"] == pytest.approx(base["miou_dataset"])
        assert d["delta"] == pytest.approx(d["after"] - d["before"])
        assert d["ci_low"] <= d["delta"] <= d["ci_high"]
        assert m["verdict"]["verdict"] in {"helps", "harms", "no clear effect"}
        assert m["fit"]["target_subsets"] == ["train", "unlabeled"] and m["fit"]["n_target"] > 0
        gap = {g["name"]: g for g in m["gap"]}
        assert gap["MMD²"]["before"] == pytest.approx(summary["latent_gap"]["kitti"]["mmd"]["mmd2"])
        # the frozen kernel: the re-measured gap uses the baseline's bandwidth
        assert m["gap_after"]["mmd"]["bandwidth"] == pytest.approx(summary["bandwidth"]["value"])
        assert math.isclose(sum(c["share_target_after"] for c in m["clusters"]), 1.0, rel_tol=1e-9)
    dec = section["decomposition"]
    total = dec["total"]["value"]
    assert total == pytest.approx(base_drop(summary))
    assert dec["class_mix"]["value"] + dec["appearance"]["value"] == pytest.approx(total)


def base_drop(summary: dict) -> float:
    return (
        summary["domains"]["cityscapes"]["miou_dataset"]
        - summary["domains"]["kitti"]["miou_dataset"]
    )


@pytest.mark.slow
def test_samples_csv_has_loss_and_miou_per_fix(outputs: dict[str, Path]) -> None:
    with outputs["samples"].open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for fix in FIXES:
        for row in rows:
            value = row[f"loss_{fix['kind']}"]
            assert (value == "") == (row["domain"] != "kitti"), (fix, row["sample_id"])
        kitti = [float(r[f"miou_{fix['kind']}"]) for r in rows if r["domain"] == "kitti"]
        assert all(0.0 <= v <= 1.0 for v in kitti)


@pytest.mark.slow
def test_image_fixes_change_the_input_and_adabn_only_the_model(
    outputs: dict[str, Path], whatif_config: Any
) -> None:
    summary = json.loads(outputs["summary"].read_text())
    by = {m["name"]: m for m in summary["mitigations"]["kitti"]["mitigations"]}
    before = {r["field"]: r for r in summary["metadata_drift"]["kitti"]["numeric"]}
    rgb = {r["field"]: r for r in by["rgb_normalize"]["drift_after"]["numeric"]}
    ada = {r["field"]: r for r in by["adabn"]["drift_after"]["numeric"]}
    # AdaBN leaves the images alone: their colour statistics do not move
    assert ada["mean_r"]["mean_target"] == pytest.approx(before["mean_r"]["mean_target"])
    assert rgb["mean_r"]["mean_target"] != pytest.approx(before["mean_r"]["mean_target"])
    cache = FeatureCache.for_config(whatif_config)
    passes = sorted(p.name.split("-")[0] for p in (cache.root / "mitigated").iterdir())
    assert passes == sorted(f["kind"] for f in FIXES)


@pytest.mark.slow
def test_rerun_reads_fits_and_passes_from_the_cache(
    outputs: dict[str, Path], whatif_config: Any, tmp_path: Path
) -> None:
    from domain_gap.pipeline import run_analysis

    class NoModel:
        def __call__(self, x: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
            raise AssertionError("the model ran although every pass is cached")

        def get(self) -> Any:
            raise AssertionError("the model was loaded although every fit is cached")

    again = run_analysis(whatif_config, tmp_path, progress=False, runner=NoModel())
    first = json.loads(outputs["summary"].read_text())["mitigations"]
    assert json.loads(again["summary"].read_text())["mitigations"] == first


def test_a_regenerated_sample_is_fitted_anew(tmp_path: Path, tiny_ckpt: Path, config_for: Any):
    """Same sample ids, new pixels: the cached fit of the old data must not be served."""
    from domain_gap.analysis.mitigate import fit_mitigation
    from domain_gap.data.sample import write_sample

    def fitted_mean() -> list[float]:
        config = config_for(
            tmp_path,
            top={
                "cache_dir": str(tmp_path / "cache"),
                "model": {"checkpoint": str(tiny_ckpt)},
                "analysis": {"mitigations": [{"kind": "rgb_normalize"}]},
            },
        )
        dataset = DomainDataset(config)
        evaluated = [r.sample_id for r in dataset.records if r.subset == "val"]
        src, tgt, fit = choose_fit_records(config, dataset, "cityscapes", "kitti", evaluated)
        cache = FeatureCache.for_config(config)
        spec = config.analysis.mitigations[0]
        return fit_mitigation(config, dataset, spec, (src, tgt), fit, cache).params()["target_mean"]

    write_sample(tmp_path, seed=0, size="test", progress=False)
    first = fitted_mean()
    assert fitted_mean() == first  # the second fit comes from the cache
    write_sample(tmp_path, seed=1, size="test", progress=False)
    assert fitted_mean() != pytest.approx(first)
