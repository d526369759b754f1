"""The report's "What if" section, end to end on the tiny sample (two fixes, no real model)."""

from __future__ import annotations

import base64
import html as html_lib
import re
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest

from domain_gap.analysis.results import DeltaEstimate, Summary, WhatIf
from domain_gap.report import plots
from domain_gap.report.assets import ReportAssets, thumbnail_fixes
from domain_gap.report.format import fmt, fmt_ci, fmt_pct
from domain_gap.report.html import render_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIXES = [{"kind": "rgb_normalize"}, {"kind": "adabn", "options": {"batch_size": 2}}]
TAGS = {
    "html", "head", "meta", "title", "style", "body", "main", "h1", "h2", "h3", "h4", "p",
    "div", "span", "b", "br", "table", "thead", "tbody", "tr", "th", "td", "img", "figure",
    "figcaption",
}  # fmt: skip


@pytest.fixture(scope="module")
def rendered(
    tiny_sample: Path,
    tiny_ckpt: Path,
    config_for: Any,
    whatif_cache: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Summary, ReportAssets, str]:
    """run_analysis with two fixes; the Summary and assets it rendered, and the page."""
    import domain_gap.report.html as html_module
    from domain_gap.pipeline import run_analysis

    config = config_for(
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
    seen: dict[str, Any] = {}

    def capture(summary: Summary, assets: ReportAssets) -> str:
        seen.update(summary=summary, assets=assets)
        return render_report(summary, assets)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(html_module, "render_report", capture)
        paths = run_analysis(config, tmp_path_factory.mktemp("report_whatif"), progress=False)
    return seen["summary"], seen["assets"], paths["report"].read_text(encoding="utf-8")


def _plain(text: str) -> str:
    """The page's text without tags, unescaped (what a reader sees, spaces collapsed)."""
    return re.sub(r"\s+", " ", html_lib.unescape(re.sub(r"<[^>]+>", " ", text)))


def _section(summary: Summary) -> WhatIf:
    return summary.mitigations["kitti"]


def _signed(value: float | None, digits: int = 3) -> str:
    return ("+" if value is not None and value > 0 else "") + fmt(value, digits)


def _cell(d: DeltaEstimate, digits: int = 3) -> str:
    """A table cell as the page prints it: after value, then (Δ signed delta [CI])."""
    interval = fmt_ci([d.ci_low, d.ci_high], digits)
    return f"{fmt(d.after, digits)} (Δ {_signed(d.delta, digits)} {interval})"


def _img(text: str, alt: str) -> bytes:
    """The PNG bytes of the image with this (unescaped) alt text; fails when absent."""
    match = re.search(rf'<img src="data:image/png;base64,([^"]+)" alt="{re.escape(alt)}"', text)
    assert match, f"no PNG data URI with alt {alt!r}"
    return base64.b64decode(match.group(1))


def _decode(png: bytes) -> np.ndarray:
    assert png[:8] == PNG_MAGIC
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


@pytest.mark.slow
def test_section_shows_every_fix_with_its_deltas_and_verdict(
    rendered: tuple[Summary, ReportAssets, str],
) -> None:
    summary, _, text = rendered
    section = _section(summary)
    assert [m.name for m in section.mitigations] == [f["kind"] for f in FIXES]
    assert '<h2 id="what-if">What if: testing fixes</h2>' in text
    # after the headline numbers, before the concepts
    assert text.index("Headline numbers") < text.index("What if") < text.index("Concepts (")
    plain = _plain(text)
    fit = section.mitigations[0].fit
    assert f"fitted on {fit.n_source} cityscapes images (subset '{fit.source_subset}')" in plain
    assert f"and {fit.n_target} kitti images (subsets 'train', 'unlabeled')" in plain
    assert f"Evaluated on the {section.n_images} images of kitti's 'val' subset" in plain
    assert section.frozen in plain
    for m in section.mitigations:
        d = m.deltas
        assert _cell(d.miou) in plain, m.name
        assert fmt_ci([d.miou.ci_low, d.miou.ci_high]) in text
        assert d.loss is not None and _cell(d.loss) in plain
        assert d.ece is not None and _cell(d.ece) in plain
        gap = {g.name: g for g in m.gap}
        assert _cell(gap["MMD²"], 4) in plain and _cell(gap["C2ST AUC"], 4) in plain
        fd = gap["FD"]  # a point value: printed below the table, without an interval
        assert f"{m.name} {fmt(fd.after, 4)} (Δ {_signed(fd.delta, 4)})" in plain
        word = m.verdict.verdict
        css = {"helps": "good", "harms": "bad"}.get(word)
        expected = f'<span class="{css}">{word}</span>' if css else f'<td class="l">{word}'
        assert expected in text, (m.name, word)
        if m.verdict.note:
            assert html_lib.escape(m.verdict.note) in text
    d = section.mitigations[0].deltas
    assert d.loss is not None and d.ece is not None
    baseline = f"baseline (no fix) {fmt(d.loss.before)} {fmt(d.miou.before)} {fmt(d.ece.before)}"
    assert baseline in plain


@pytest.mark.slow
def test_verdicts_are_coloured_the_best_fix_marked_and_each_fit_named(
    rendered: tuple[Summary, ReportAssets, str],
) -> None:
    summary, assets, _ = rendered
    section = _section(summary)
    a, b = section.mitigations
    helps = replace(a, verdict=replace(a.verdict, verdict="helps"))
    harms = replace(
        b,
        verdict=replace(b.verdict, verdict="harms", note="<i>odd</i> note"),
        fit=replace(b.fit, n_target=b.fit.n_target + 1),
    )
    changed = replace(section, mitigations=(helps, harms), best=a.name)
    page = render_report(replace(summary, mitigations={"kitti": changed}), assets)
    assert '<span class="good">helps</span>' in page and '<span class="bad">harms</span>' in page
    assert f'<b>{a.name}</b> <span class="good">(best)</span>' in page
    assert "&lt;i&gt;odd&lt;/i&gt; note" in page and "<i>odd</i>" not in page
    plain = _plain(page)  # two fits: each named with the fixes it served
    assert f"{a.name}: fitted on {a.fit.n_source} cityscapes images" in plain
    assert f"{b.name}: fitted on {b.fit.n_source} cityscapes images" in plain
    assert f"and {b.fit.n_target + 1} kitti images" in plain and "Every fix was" not in plain


@pytest.mark.slow
def test_decomposition_and_recovery_are_shown(
    rendered: tuple[Summary, ReportAssets, str],
) -> None:
    summary, _, text = rendered
    section = _section(summary)
    dec = section.decomposition
    assert dec is not None
    plain = _plain(text)
    for comp in (dec.total, dec.class_mix, dec.appearance):
        assert f"{_signed(comp.value)} {fmt_ci([comp.ci_low, comp.ci_high])}" in plain
        assert fmt_pct(comp.share) in plain
    assert f"Dominant: {dec.dominant}." in plain
    assert f"effective sample size {fmt(dec.weights.ess, 1)} of {dec.weights.n_source}" in plain
    for m in section.mitigations:
        r = m.recovery
        assert r is not None
        rec = r.recovered
        row = f"{m.name} {_signed(rec.value)} {fmt_ci([rec.ci_low, rec.ci_high])}"
        assert row in plain
        assert fmt_pct(r.fraction_of_appearance.value) in plain
        assert f'<td class="l">{html_lib.escape(r.verdict)}</td></tr>' in text


@pytest.mark.slow
def test_figures_are_png_data_uris(rendered: tuple[Summary, ReportAssets, str]) -> None:
    summary, assets, text = rendered
    section = _section(summary)
    bars = _decode(_img(text, "per-class IoU change per fix"))
    assert bars.shape[0] > 150 and bars.shape[1] > 300
    fix = assets.whatif_map_fix["kitti"]
    assert fix == (section.best or section.mitigations[0].name)
    panels = _decode(_img(text, f"latent map before and after {fix}"))
    assert panels.shape[1] > 1.8 * panels.shape[0]  # two panels side by side
    assert assets.figures["whatif/map/kitti"] == _img(text, f"latent map before and after {fix}")


@pytest.mark.slow
def test_changed_images_shown_before_and_after(
    rendered: tuple[Summary, ReportAssets, str],
) -> None:
    summary, _, text = rendered
    section = _section(summary)
    plain = _plain(text)
    shown = 0
    for m in section.mitigations:  # two fixes: each fix's images are shown
        for change in (*m.most_improved, *m.most_worsened):
            sid = change.sample_id
            before = _decode(_img(text, f"before: {sid}"))
            after = _decode(_img(text, f"{m.name}: {sid}"))
            assert before.shape == after.shape
            image_rows = (before.shape[0] - 2) // 2  # the image, 2 white rows, the prediction
            same_image = np.array_equal(before[:image_rows], after[:image_rows])
            # AdaBN adapts the model and leaves the image alone; RGB normalisation recolours it
            assert same_image == (m.kind == "adabn"), (m.name, sid)
            caption = f"mIoU {fmt(change.miou_before)} → {fmt(change.miou_after)}"
            assert f"{caption} (Δ {_signed(change.delta_miou)})" in plain
            shown += 1
    assert shown > 0
    assert "most improved" in plain and "most worsened" in plain


@pytest.mark.slow
def test_page_is_self_contained_and_escaped(rendered: tuple[Summary, ReportAssets, str]) -> None:
    _, _, text = rendered
    assert "<script" not in text and not re.search(r"(src|href)=\"https?:", text)
    sources = re.findall(r'<img src="([^"]+)"', text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    tags: set[str] = set()

    class Tags(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list) -> None:
            tags.add(tag)

    Tags().feed(text)
    assert tags <= TAGS, tags - TAGS
    # the rules' quotes are escaped, never printed raw
    assert "dominant = &#39;class mix&#39;" in text and "dominant = 'class mix'" not in text


@pytest.mark.slow
def test_no_what_if_section_without_mitigations(
    rendered: tuple[Summary, ReportAssets, str],
) -> None:
    summary, assets, _ = rendered
    page = render_report(replace(summary, mitigations={}), assets)
    assert "What if" not in page and "most improved" not in page
    assert "Headline numbers" in page and "Concepts (" in page


def test_class_delta_bars_leave_out_classes_without_a_delta() -> None:
    names = [f"class {i}" for i in range(10)]
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 0.05, 10), rng.normal(0, 0.05, 10)
    png = plots.class_delta_bars(names, {"x": list(a), "y": list(b)})
    # five more classes, absent from every fix: the same figure
    with_absent = plots.class_delta_bars(
        [*names, *(f"absent {i}" for i in range(5))],
        {"x": [*a, *[None] * 5], "y": [*b, *[float("nan")] * 5]},
    )
    assert _decode(png).shape == _decode(with_absent).shape
    wider = plots.class_delta_bars(
        [*names, *(f"more {i}" for i in range(5))],
        {"x": [*a, *[0.1] * 5], "y": [*b, *[None] * 5]},  # one bar each is enough to keep it
    )
    assert _decode(wider).shape[1] > _decode(png).shape[1] + 100


def test_before_after_map_has_two_panels() -> None:
    rng = np.random.default_rng(1)
    coords = rng.normal(size=(30, 2))
    groups = np.array(["s"] * 10 + ["t"] * 10 + ["t (fix)"] * 10)
    png = plots.before_after_map(
        coords, groups, rng.random(30), ["s", "t"], target="t", mitigated="t (fix)"
    )
    image = _decode(png)
    assert image.shape[1] > 1.8 * image.shape[0]


def _fake_section(names: list[str], best: str | None) -> Any:
    fixes = [SimpleNamespace(name=n) for n in names]
    return SimpleNamespace(mitigations=fixes, best=best)


def test_thumbnail_fixes_every_fix_when_few_else_the_mapped_one() -> None:
    assert thumbnail_fixes(_fake_section(["a", "b"], None)) == ["a", "b"]
    assert thumbnail_fixes(_fake_section(["a", "b", "c"], "c")) == ["c"]
    assert thumbnail_fixes(_fake_section(["a", "b", "c"], None)) == ["a"]
    assert thumbnail_fixes(_fake_section(["a", "b", "c"], "c"), map_fix="b") == ["b"]
    assert thumbnail_fixes(_fake_section([], None)) == []


def test_mitigated_thumbnails_are_looked_up_by_target_fix_and_id() -> None:
    assets = ReportAssets(mitigated={"t": {"f": {"id": b"png"}}})
    assert assets.mitigated_thumb("t", "f", "id") == b"png"
    assert assets.mitigated_thumb("t", "g", "id") is None
    assert assets.mitigated_thumb("u", "f", "id") is None
