"""A target without labels, analysed with the default settings (issue 13, part 1)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from domain_gap.analysis.drift import metadata_drift, score_agreement
from domain_gap.config import parse_config


def _three_domains(root: Path, ckpt: Path, cache: Path) -> Any:
    from conftest import tiny_config_dict

    data = tiny_config_dict(
        root,
        top={
            "cache_dir": str(cache),
            "model": {"checkpoint": str(ckpt), "batch_size": 4, "device": "cpu"},
            "analysis": {
                "clusters": 3,
                "permutations": 19,
                "bootstrap": 10,
                "mitigations": [{"kind": "rgb_normalize"}],
            },
        },
    )
    # KITTI's testing/ frames alone: a third domain with no label at all (default subset: val)
    data["domains"].append(
        {"name": "photos", "kind": "kitti", "root": "kitti", "splits": ["testing"]}
    )
    return parse_config(data, source="three domains", base_dir=root)


@pytest.fixture(scope="module")
def three(tiny_sample: Path, tiny_ckpt: Path, tmp_path_factory: Any) -> tuple[Any, dict[str, Path]]:
    from domain_gap.pipeline import run_analysis

    config = _three_domains(tiny_sample, tiny_ckpt, tmp_path_factory.mktemp("unlabeled_cache"))
    out = run_analysis(config, tmp_path_factory.mktemp("unlabeled_out"), progress=False)
    return config, out


def test_unlabeled_target_enters_with_every_frame_and_source_stays_on_val(three: Any) -> None:
    from domain_gap.data.dataset import DomainDataset
    from domain_gap.pipeline import domain_subset

    config, out = three
    dataset = DomainDataset(config)
    assert domain_subset(config, dataset, "cityscapes") == "val"
    assert domain_subset(config, dataset, "kitti") == "val"
    assert domain_subset(config, dataset, "photos") == "unlabeled"
    summary = json.loads(out["summary"].read_text())
    photos = summary["domains"]["photos"]
    assert photos["n"] == len(dataset.select(domain="photos")) == 3
    assert (photos["n_labelled"], photos["subset"], photos["loss_mean"]) == (0, "unlabeled", None)
    assert photos["miou_dataset"] is None and summary["drop"]["photos"]["loss_increase"] is None
    with out["samples"].open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["subset"] for r in rows if r["domain"] == "cityscapes"} == {"val"}
    assert {r["subset"] for r in rows if r["domain"] == "photos"} == {"unlabeled"}
    assert all(float(r["entropy"]) > 0 and 0 < float(r["max_prob"]) <= 1 for r in rows)


def test_drivers_of_an_unlabeled_target_rank_against_the_label_free_score(three: Any) -> None:
    _, out = three
    summary = json.loads(out["summary"].read_text())
    score = summary["label_free_score"]
    assert score["name"] == "predictive entropy" and score["used_for"] == ["photos"]
    assert [a["domain"] for a in score["agreement"]] == ["cityscapes", "kitti"]
    assert all(-1 <= a["spearman_rho"] <= 1 and a["n"] >= 3 for a in score["agreement"])
    assert summary["metadata_drift"]["photos"]["score"] == "predictive entropy"
    assert summary["metadata_drift"]["kitti"]["score"] == "loss"
    report = out["report"].read_text()
    assert "no labels" in report and "ranked against the label-free predictive entropy" in report


def test_fixes_skip_the_unlabeled_target_and_the_report_says_why(three: Any) -> None:
    _, out = three
    summary = json.loads(out["summary"].read_text())
    assert list(summary["mitigations"]) == ["kitti"]  # the labelled target is still tested
    assert list(summary["mitigations_skipped"]) == ["photos"]
    assert "no labels" in summary["mitigations_skipped"]["photos"]
    report = out["report"].read_text()
    what_if = report[report.index('id="what-if"') :]
    assert "cityscapes → photos</b>: not tested: the target has no labels" in what_if


def test_schema_accepts_the_unlabeled_summary(three: Any, validate_summary: Any) -> None:
    validate_summary(json.loads(three[1]["summary"].read_text()))


def test_driver_sentence_names_the_score() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 60), rng.normal(2, 1, 60)
    score = b + rng.normal(0, 0.1, 60)  # the score rises with the field in the target
    drift = metadata_drift({"x": a}, {"x": b}, score, score="predictive entropy")
    assert drift.score == "predictive entropy" and drift.drivers
    assert "higher predictive entropy" in drift.drivers[0].sentence


def test_score_agreement_is_spearman_on_finite_pairs() -> None:
    loss = np.array([0.1, 0.5, np.nan, 0.9, 1.2])
    score = np.array([1.0, 2.0, 3.0, 4.0, 2.5])
    a = score_agreement("d", score, loss)
    assert (a.n, a.spearman_rho) == (4, pytest.approx(0.8))
    short = score_agreement("d", score[:2], loss[:2])
    assert short.spearman_rho is None and "only 2" in short.note


def test_three_domains_get_the_pairwise_matrix_on_the_first_screen(three: Any) -> None:
    _, out = three
    summary = json.loads(out["summary"].read_text())
    pm = summary["pairwise"]
    assert pm["domains"] == ["cityscapes", "kitti", "photos"]
    pairs = {(p["a"], p["b"]): p for p in pm["pairs"]}
    assert set(pairs) == {("cityscapes", "kitti"), ("cityscapes", "photos"), ("kitti", "photos")}
    gap = summary["latent_gap"]["kitti"]
    assert pairs[("cityscapes", "kitti")]["mmd2"] == gap["mmd"]["mmd2"]
    assert pairs[("cityscapes", "kitti")]["auc"] == gap["c2st"]["auc"]
    kp = pairs[("kitti", "photos")]
    assert (kp["n_a"], kp["n_b"]) == (summary["domains"]["kitti"]["n"], 3)
    assert 0 <= kp["auc"] <= 1 and kp["mmd_p"] is not None
    report = out["report"].read_text()
    assert report.index("Which pairs of domains differ") < report.index("Latent map")


def test_pairwise_finds_the_one_shifted_domain() -> None:
    from domain_gap.analysis.pairwise import pairwise_gaps

    rng = np.random.default_rng(0)
    emb = {n: rng.normal(size=(40, 5)) for n in ("a", "b")}
    emb["c"] = rng.normal(size=(40, 5)) + 1.5
    pm = pairwise_gaps(emb, {}, bandwidth=2.0, permutations=99, alpha=0.05, seed=0)
    flags = {(p.a, p.b): (p.mmd_significant, p.auc_significant) for p in pm.pairs}
    assert flags == {("a", "b"): (False, False), ("a", "c"): (True, True), ("b", "c"): (True, True)}
