"""Report: number formatting, thumbnails, figures and the rendered page (no model needed)."""

from __future__ import annotations

import base64
import html as html_lib
import re
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from domain_gap.analysis.extract import PRED_STRIDE, Features
from domain_gap.analysis.results import (
    DriftField,
    Driver,
    Histogram,
    MetadataDrift,
    ModelInfo,
    Summary,
)
from domain_gap.config import parse_config
from domain_gap.labels import CLASS_COLORS
from domain_gap.report import plots
from domain_gap.report.assets import build_assets, histogram_fields, thumbnail_ids
from domain_gap.report.format import DASH, data_uri, fmt, fmt_ci, fmt_p, fmt_pct, p_is
from domain_gap.report.html import render_report
from domain_gap.report.thumbnails import expand_strided, png_bytes, sample_thumbnail, valid_box

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- formatting


def test_number_formatting() -> None:
    assert fmt(None) == DASH and fmt(float("nan")) == DASH and fmt(float("inf")) == DASH
    assert fmt(3) == "3" and fmt(True) == "yes"
    assert fmt(0.12345) == "0.123" and fmt(0.0) == "0.000"
    assert fmt(1.5e-5) == "1.50e-05" and fmt(123456.0) == "1.23e+05"
    assert fmt(0.052, 2) == "0.05" and fmt(-0.0004, 2) == "-4.0e-04"
    assert fmt_p(0.0004) == "< 0.001" and fmt_p(0.0123) == "0.012" and fmt_p(None) == DASH
    assert p_is(0.0001) == "p < 0.001" and p_is(0.25) == "p = 0.250"
    assert fmt_pct(0.4567) == "45.7%" and fmt_pct(None) == DASH
    assert fmt_ci([0.1, 0.25]) == "[0.100, 0.250]" and fmt_ci([None, 1.0]) == DASH
    # at a permutation test's floor the page says so, in the table and the verdict alike
    assert fmt_p(1 / 501, floor=1 / 501) == "≤ 0.002" and p_is(1 / 501, 1 / 501) == "p ≤ 0.002"
    assert fmt_p(0.01, floor=1 / 501) == "0.010"


def test_data_uri_round_trip() -> None:
    png = png_bytes(np.zeros((4, 6, 3), np.uint8))
    uri = data_uri(png)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == png


# --------------------------------------------------------------------------- thumbnails


def test_expand_strided_inverts_striding() -> None:
    rng = np.random.default_rng(0)
    full = rng.integers(0, 19, size=(37, 50)).astype(np.uint8)
    small = full[::PRED_STRIDE, ::PRED_STRIDE]
    big = expand_strided(small, PRED_STRIDE, full.shape)
    assert big.shape == full.shape
    np.testing.assert_array_equal(big[::PRED_STRIDE, ::PRED_STRIDE], small)
    # every pixel takes the value of the strided pixel at or above-left of it
    rows, cols = np.indices(full.shape)
    np.testing.assert_array_equal(big, full[rows // 4 * 4, cols // 4 * 4])


def test_thumbnail_crops_padding_and_blends_prediction() -> None:
    image = np.full((40, 80, 3), 100, np.uint8)
    valid = np.zeros((40, 80), bool)
    valid[10:30] = True  # letterbox: 10 padded rows above and below
    image[~valid] = 0
    pred = np.full((40, 80), 255, np.uint8)
    pred[10:30, 40:] = 13  # car on the right half, void on the left
    assert valid_box(valid, (40, 80)) == (slice(10, 30), slice(0, 80))
    thumb = sample_thumbnail(image, pred, valid, width=80)
    assert thumb.shape == (20 + 2 + 20, 80, 3)  # cropped image, spacer, overlay
    top, bottom = thumb[:20], thumb[22:]
    assert (top == 100).all()  # padding cropped away
    np.testing.assert_array_equal(bottom[:, :35], top[:, :35])  # void: left unblended
    car = bottom[5, 60].astype(int)
    expected = 0.45 * 100 + 0.55 * CLASS_COLORS[13].astype(int)
    np.testing.assert_allclose(car, expected, atol=1.5)
    # a strided mask gives the same picture as the full one it came from
    again = sample_thumbnail(image, pred[::PRED_STRIDE, ::PRED_STRIDE], valid, width=80)
    assert np.abs(again.astype(int) - thumb.astype(int)).max() <= 60
    assert sample_thumbnail(image, None, None, width=40).shape == (20, 40, 3)


# --------------------------------------------------------------------------- figures


def test_point_sizes_grow_with_loss() -> None:
    sizes = plots.point_sizes(np.array([0.5, np.nan, 2.0, 1.0]), small=5, large=50)
    assert sizes[1] == 5 and sizes[0] == 5 and sizes[2] == 50 and 5 < sizes[3] < 50
    assert (plots.point_sizes(np.array([1.0, 1.0])) > 0).all()


def test_figures_are_png() -> None:
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(30, 2))
    domains = np.array(["a"] * 15 + ["b"] * 15)
    png = plots.latent_map(coords, domains, rng.random(30), ["a", "b"], centers=coords[:2])
    assert png[:8] == PNG_MAGIC
    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape[0] > 200 and decoded.shape[1] > 300
    hist = plots.histograms("f", [0, 1, 2], {"a": [3, 1], "b": [0, 4]}, ["a", "b"])
    assert hist[:8] == PNG_MAGIC
    chart = plots.per_class_chart(["x", "y"], np.array([0.1, np.nan]), np.array([0.2, 0.0]), "g")
    assert chart[:8] == PNG_MAGIC


# --------------------------------------------------------------------------- whole page


def _features(n: int, domain: str, shift: float, rng: np.random.Generator) -> Features:
    d = 6
    emb = rng.normal(size=(n, d)) + shift
    brightness = rng.normal(100 + 40 * shift, 10, size=n)
    loss = 0.5 + 0.01 * (brightness - 100) + rng.normal(0, 0.05, n)
    return Features(
        sample_ids=np.array([f"{domain}/img_{i:03d}.png" for i in range(n)]),
        domains=np.full(n, domain),
        subsets=np.full(n, "val"),
        embeddings=emb.astype(np.float32),
        class_emb=np.zeros((n, 19, d), np.float16),
        class_counts=np.zeros((n, 19), np.int64),
        loss=loss,
        miou=rng.random(n),
        class_iou=rng.random((n, 19)),
        pixel_acc=rng.random(n),
        confusion=rng.integers(0, 50, size=(n, 19, 19)),
        prob_mean=rng.dirichlet(np.ones(19) * (1 + 3 * shift), size=n),
        pred_frac=rng.dirichlet(np.ones(20), size=n),
        labelled=np.ones(n, bool),
        calibration=np.zeros((n, 15, 3)),
        metadata={
            "brightness": brightness,
            "<b>odd name</b>": rng.normal(size=n),
            "group": np.full(n, domain),
        },
    )


@pytest.fixture(scope="module")
def page() -> tuple[Summary, object, str]:
    from domain_gap.pipeline import analyse

    rng = np.random.default_rng(0)
    feats = Features.concat([_features(20, "src", 0.0, rng), _features(20, "tgt", 1.5, rng)])
    config = parse_config(
        {
            "domains": [
                {"name": "src", "kind": "cityscapes", "root": "a", "splits": ["val"]},
                {"name": "tgt", "kind": "kitti", "root": "b", "splits": ["training"]},
            ],
            "analysis": {"clusters": 3, "permutations": 99, "bootstrap": 20},
        },
        base_dir=Path("."),
    )
    result = analyse(config, feats)
    model = ModelInfo(None, "ab" * 32, "deeplabv3plus_mobilenet", "aspp", {})
    summary = replace(result.summary, synthetic=True, model=model)

    def source(ids: list[str]) -> dict:
        img = np.full((32, 64, 3), 90, np.uint8)
        return {i: (img, np.full((8, 16), 7, np.uint8), None) for i in ids}

    assets = build_assets(
        summary,
        coords=result.coords,
        domains=feats.domains,
        loss=feats.loss,
        clusters=result.clusters,
        thumbnail_source=source,
    )
    return summary, assets, render_report(summary, assets)


@pytest.mark.slow
def test_page_shows_the_summary_numbers(page: tuple[Summary, object, str]) -> None:
    summary, _, text = page
    gap = summary.latent_gap["tgt"]
    assert gap.significant  # a 1.5-SD shift in 6 dims at n = 20 per side
    plain = html_lib.unescape(text)
    mmd_p = p_is(gap.mmd.p_value, gap.mmd.p_floor)
    assert f"significant gap: MMD² = {fmt(gap.mmd.mmd2, 4)} ({mmd_p} < 0.05)" in plain
    assert fmt(gap.frechet.value, 4) in text
    assert fmt(gap.mmd.mmd2, 4) in text and fmt_ci(gap.mmd.ci, 4) in text
    assert fmt(gap.c2st.auc) in text and fmt_ci(gap.c2st.auc_ci) in text
    assert "embeddings differ (significant)" in text
    for test in gap.tests:  # every interval method is printed as the result states it
        assert html_lib.escape(test.ci_method or DASH) in text
    assert "DeLong CI" not in text
    for name, dom in summary.domains.items():
        assert f'<td class="l">{name}</td>' in text
        assert fmt(dom.loss_mean) in text
    drivers = summary.metadata_drift["tgt"].drivers
    assert drivers and drivers[0].field == "brightness"
    assert html_lib.escape(drivers[0].sentence, quote=True) in text
    assert "SYNTHETIC DATA" in text


@pytest.mark.slow
def test_page_escapes_and_embeds_everything(page: tuple[Summary, object, str]) -> None:
    summary, assets, text = page
    assert "<b>odd name</b>" not in text and "&lt;b&gt;odd name&lt;/b&gt;" in text
    assert "<script" not in text and not re.search(r"(src|href)=\"https?:", text)
    sources = re.findall(r'<img src="([^"]+)"', text)
    ids = thumbnail_ids(summary)
    assert len(assets.thumbnails) == len(ids) > 0  # type: ignore[attr-defined]
    expected_figures = 2 + 1 + len(histogram_fields(summary.metadata_drift["tgt"]))
    assert len(assets.figures) == expected_figures  # type: ignore[attr-defined]
    assert len(set(sources)) >= expected_figures
    assert all(s.startswith("data:image/png;base64,") for s in sources)


@pytest.mark.slow
def test_banner_only_for_synthetic_data(page: tuple[Summary, object, str]) -> None:
    summary, assets, _ = page
    real = replace(summary, synthetic=False)
    assert "SYNTHETIC" not in render_report(real, assets)  # type: ignore[arg-type]


def test_histogram_fields_prefers_drivers() -> None:
    hist = Histogram((0.0, 1.0), (1,), (1,))

    def field(name: str, significant: bool, ks: float, h: Histogram | None) -> DriftField:
        return DriftField(name, 5, 5, 0, 0, "tested", 0.01, 0.01, significant, ks=ks, histogram=h)

    driver = Driver(1, "b", 1.0, 0.5, 0.01, True, 0.01, 0.5, 0.25, True, "")
    drift = MetadataDrift(
        numeric=(
            field("a", True, 0.9, None),
            field("b", True, 0.5, hist),
            field("c", True, 0.7, hist),
            field("d", False, 0.99, hist),
        ),
        categorical=(),
        drivers=(driver,),
        skipped=(),
        alpha=0.05,
        correction="",
        driver_rule="",
        source="s",
        target="t",
    )
    assert histogram_fields(drift, limit=3) == ["b", "c"]
    assert histogram_fields(drift, limit=1) == ["b"]
