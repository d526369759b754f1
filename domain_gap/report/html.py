"""The static, self-contained report page: inline CSS, images as PNG data URIs, no scripts.

:func:`render_report` formats the summary (numbers computed elsewhere) and the drawn assets
into one HTML string that opens offline. Verdicts are plain-English readings of the p-values
and intervals already in the summary.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from domain_gap.report.assets import ReportAssets, histogram_fields
from domain_gap.report.thumbnails import THUMB_WIDTH

DASH = "&ndash;"
"""Shown for a missing or non-finite number."""

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d232b;
background:#f6f7f9;line-height:1.4}
main{max-width:1240px;margin:0 auto;padding:18px 26px 40px}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:20px;margin:28px 0 8px;border-bottom:2px solid
#d8dde3;padding-bottom:4px}h3{font-size:16px;margin:18px 0 6px}
.banner{background:#fff3cd;border:1px solid #e0b400;color:#6b4e00;padding:10px 14px;
border-radius:6px;font-weight:600;margin:10px 0}
.verdict{background:#fff;border-left:5px solid #555;padding:9px 14px;margin:10px 0;
border-radius:4px}.verdict.sig{border-color:#c62828}.verdict.ns{border-color:#2e7d32}
.row{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
.card{background:#fff;border:1px solid #dde2e8;border-radius:6px;padding:10px}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:6px 0}
th,td{border:1px solid #dde2e8;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#eef1f5;text-align:center}td.l,th.l{text-align:left}
td:not(.l){white-space:nowrap}
.muted{color:#68727d;font-size:12px}.good{color:#2e7d32;font-weight:600}
.bad{color:#c62828;font-weight:600}.thumbs{display:flex;flex-wrap:wrap;gap:6px}
figure{margin:0;text-align:center;font-size:11px;color:#4a5560;width:@THUMB@px}
figure img{display:block;border:1px solid #ccd}
figcaption{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.card p{max-width:620px}
.big{font-size:22px;font-weight:700}
""".replace("@THUMB@", str(THUMB_WIDTH + 2))


def esc(value: object) -> str:
    """HTML-escape ``str(value)``."""
    return html.escape(str(value), quote=True)


def data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img(png: bytes | None, alt: str, width: int | None = None) -> str:
    """An inline ``<img>`` (empty string when there is no image)."""
    if not png:
        return ""
    w = f' width="{width}"' if width else ""
    return f'<img src="{data_uri(png)}" alt="{esc(alt)}"{w}>'


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table: a dash for None/NaN, fixed or scientific as its size needs."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    v = float(value)
    if not math.isfinite(v):
        return DASH
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}f}"


def fmt_pct(value: Any) -> str:
    """A share as a percentage (a dash for None/NaN)."""
    if value is None or not math.isfinite(float(value)):
        return DASH
    return f"{100 * float(value):.1f}%"


def fmt_p(value: Any) -> str:
    """A p-value: ``< 0.001`` below a thousandth."""
    if value is None:
        return DASH
    v = float(value)
    return "< 0.001" if v < 0.001 else f"{v:.3f}"


def p_is(value: Any) -> str:
    """``p < 0.001`` or ``p = 0.012`` for running text."""
    text = fmt_p(value)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def fmt_ci(ci: Sequence[Any] | None, digits: int = 3) -> str:
    """``[lo, hi]`` or a dash."""
    if not ci or len(ci) != 2 or ci[0] is None or ci[1] is None:
        return DASH
    return f"[{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], align: str = "l") -> str:
    """A table of already-escaped cells; ``align`` has one letter per column, ``l`` = left
    (text), anything else or missing = right (numbers)."""

    def cls(i: int) -> str:
        return ' class="l"' if i < len(align) and align[i] == "l" else ""

    head = "".join(f"<th{cls(i)}>{h}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _short(sample_id: str) -> str:
    """The file name without extension or the Cityscapes ``_leftImg8bit`` suffix."""
    stem = sample_id.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return stem.removesuffix("_leftImg8bit")


def thumb(assets: ReportAssets, sample_id: str, caption: str = "") -> str:
    """A figure with the sample's thumbnail and a short caption."""
    png = assets.thumbnails.get(sample_id)
    if png is None:
        return ""
    cap = esc(_short(sample_id)) + (f"<br>{caption}" if caption else "")
    return (
        f'<figure title="{esc(sample_id)}">{img(png, sample_id)}'
        f"<figcaption>{cap}</figcaption></figure>"
    )


# --------------------------------------------------------------------------- verdicts


def _ci_excludes(ci: Sequence[Any] | None, value: float) -> bool | None:
    if not ci or ci[0] is None or ci[1] is None:
        return None
    return not (float(ci[0]) <= value <= float(ci[1]))


def gap_rows(gap: Mapping[str, Any]) -> list[list[str]]:
    """Rows of the headline latent-gap table: statistic, value, interval, test, verdict."""
    alpha = float(gap.get("alpha", 0.05))
    rows: list[list[str]] = []
    fd = gap["frechet"]
    rows.append(
        [
            "Fréchet distance (FD)",
            fmt(fd["value"]),
            fmt_ci(fd.get("ci")),
            esc(f"{fd.get('dims')} dims"),
            esc(fd.get("note", "")),
        ]
    )
    mmd = gap["mmd"]
    sig = mmd["p_value"] < alpha
    rows.append(
        [
            "MMD² (Gaussian kernel, unbiased)",
            fmt(mmd["mmd2"], 4),
            fmt_ci(mmd.get("ci"), 4),
            f"{p_is(mmd['p_value'])} ({mmd['permutations']} permutations)",
            _word(sig, "embeddings differ (significant)", "no significant difference"),
        ]
    )
    kd = gap["kid"]
    kid_sig = _ci_excludes(kd.get("ci"), 0.0)
    rows.append(
        [
            "KID (mean ± std over subsets)",
            f"{fmt(kd['mean'], 4)} ± {fmt(kd['std'], 4)}",
            fmt_ci(kd.get("ci"), 4),
            esc(f"{kd.get('subsets')} subsets of {kd.get('subset_size')}"),
            _word(kid_sig, "interval excludes 0: distributions differ", "interval covers 0"),
        ]
    )
    c2 = gap["c2st"]
    auc_sig = _ci_excludes(c2.get("auc_ci"), 0.5)
    rows.append(
        [
            "C2ST domain classifier AUC",
            fmt(c2["auc"]),
            fmt_ci(c2.get("auc_ci")),
            esc(f"{c2.get('folds')}-fold CV, DeLong CI")
            + (f", {p_is(c2['p_value'])}" if c2.get("p_value") is not None else ""),
            _word(
                auc_sig and float(c2["auc"]) > 0.5,
                "a classifier tells the domains apart",
                "close to chance (0.5)",
            ),
        ]
    )
    rows.append(
        [
            "Proxy A-distance (PAD)",
            fmt(c2["pad"]),
            DASH,
            "balanced error &epsilon; = " + fmt(c2["error"]),
            "PAD = 2(1 &minus; 2&epsilon;): 0 = indistinguishable, 2 = fully separable",
        ]
    )
    bb = gap.get("bbsd")
    if bb:
        shifted = [r["name"] for r in bb["per_class"] if r["significant"]]
        rows.append(
            [
                "BBSD (KS on mean class probabilities)",
                esc(f"{len(shifted)} / {len(bb['per_class'])} classes"),
                DASH,
                f"min adj. {p_is(bb['min_p_adjusted'])} (Bonferroni)",
                _word(
                    bool(shifted),
                    "model outputs shift: "
                    + esc(", ".join(shifted[:6]))
                    + ("…" if len(shifted) > 6 else ""),
                    "no class-probability shift detected",
                ),
            ]
        )
    return rows


def _word(flag: bool | None, yes: str, no: str) -> str:
    if flag is None:
        return '<span class="muted">not computable</span>'
    return f'<span class="bad">{yes}</span>' if flag else f'<span class="good">{no}</span>'


# --------------------------------------------------------------------------- sections


def _header(summary: Mapping[str, Any]) -> str:
    parts = [f"<h1>{esc(summary['title'])}</h1>"]
    if summary.get("synthetic"):
        parts.append(
            '<div class="banner">SYNTHETIC DATA: this report analyses the built-in synthetic '
            "sample (procedural Cityscapes-like and KITTI-like domains), not real images. Its "
            "numbers show how the toolkit works, not how a real model behaves.</div>"
        )
    model = summary.get("model", {})
    subset = summary["domains"][summary["source"]]["subset"]
    facts = [
        f"model {model.get('arch') or '?'}",
        f"checkpoint sha256 {str(model.get('sha256'))[:12]}",
        f"embedding tap '{model.get('tap')}'",
        f"subset '{subset}'",
        f"source domain {summary['source']}",
    ]
    parts.append('<p class="muted">' + " &middot; ".join(esc(f) for f in facts) + "</p>")
    return "".join(parts)


def _overview(summary: Mapping[str, Any], assets: ReportAssets) -> str:
    k = summary["clusters"]["k"]
    return (
        "<h2>Latent map</h2>"
        '<div class="row"><div class="card">'
        + img(assets.figures.get("latent_map"), "latent map")
        + f'<p class="muted">Each point is one image embedding, projected to 2-D '
        f"({esc(summary['projection']['method'].upper())}); colour = domain, size = loss. "
        f"Numbers mark the centres of the {k} k-means concepts below.</p></div>"
        '<div class="card">'
        + img(assets.figures.get("loss_hist"), "loss histogram")
        + "</div></div>"
    )


def _headline(summary: Mapping[str, Any]) -> str:
    doms = summary["domains"]
    rows = [
        [
            esc(name),
            str(d["n"]),
            str(d["n_labelled"]),
            fmt(d["loss_mean"]),
            fmt_pct(d["miou_dataset"]),
            fmt_pct(d["miou_mean"]),
            fmt_pct(d["pixel_acc_mean"]),
        ]
        for name, d in doms.items()
    ]
    out = ["<h2>Headline numbers</h2>"]
    out.append(
        table(
            [
                "domain",
                "images",
                "labelled",
                "mean loss",
                "mIoU (dataset)",
                "mIoU (mean per image)",
                "pixel acc.",
            ],
            rows,
        )
    )
    for target in summary["targets"]:
        drop = summary["drop"][target]
        gap = summary["latent_gap"][target]
        cls = "sig" if gap.get("significant") else "ns"
        out.append(
            f"<h3>{esc(summary['source'])} → {esc(target)}</h3>"
            f'<div class="row"><div class="card"><div class="muted">loss increase</div>'
            f'<div class="big">{fmt(drop["loss_increase"])}</div></div>'
            f'<div class="card"><div class="muted">mIoU drop (dataset)</div>'
            f'<div class="big">{_pts(drop["miou_dataset_drop"])}</div></div>'
            f'<div class="card"><div class="muted">mIoU drop (per image)</div>'
            f'<div class="big">{_pts(drop["miou_mean_drop"])}</div></div></div>'
            f'<div class="verdict {cls}"><b>Verdict:</b> {esc(gap.get("verdict", ""))}</div>'
        )
        level = round(100 * (1 - float(gap.get("alpha", 0.05))))
        out.append(
            table(
                ["statistic", "value", f"{level}% interval", "test", "reading"],
                gap_rows(gap),
                align="lrrll",
            )
        )
        bw = summary.get("bandwidth", {})
        out.append(
            '<p class="muted">'
            + esc(f"n = {gap['n_source']} vs {gap['n_target']}, embedding dim {gap['dim']}. ")
            + f"MMD bandwidth {fmt(bw.get('value'))}: {esc(bw.get('rule', ''))}. "
            + f"Decision rule: {esc(gap.get('decision_rule', ''))}.</p>"
        )
    return "".join(out)


def _pts(value: Any) -> str:
    if value is None or not math.isfinite(float(value)):
        return DASH
    return f"{100 * float(value):+.1f} pts"


def _clusters(summary: Mapping[str, Any], assets: ReportAssets) -> str:
    out = ["<h2>Concepts (k-means clusters of the embeddings)</h2>"]
    out.append(
        '<p class="muted">Share = share of the domain\'s images in the cluster. A concept '
        "missing or rare in one domain, or one whose loss is high there, points at what the "
        "model has not seen. p: Fisher exact test of the shares, Benjamini-Hochberg adjusted."
        "</p>"
    )
    source = summary["source"]
    for target, rows in summary["clusters"]["tables"].items():
        out.append(f"<h3>{esc(source)} vs {esc(target)}</h3>")
        body = []
        for r in sorted(rows, key=lambda r: -(r["n"])):
            examples = r.get("examples") or {}
            pics = "".join(
                thumb(assets, sid) for dom in (source, target) for sid in examples.get(dom, [])
            )
            status = esc(r["status"])
            if r.get("significant"):
                status = f"<b>{status}</b>"
            body.append(
                [
                    str(r["cluster"]),
                    str(r["n"]),
                    fmt_pct(r["share_source"]),
                    fmt_pct(r["share_target"]),
                    fmt(r.get("ratio"), 2),
                    status,
                    fmt(r.get("mean_loss_source")),
                    fmt(r.get("mean_loss_target")),
                    fmt_p(r.get("p_adjusted")),
                    f'<div class="thumbs">{pics}</div>',
                ]
            )
        out.append(
            table(
                [
                    "cluster",
                    "images",
                    f"share {esc(source)}",
                    f"share {esc(target)}",
                    "ratio",
                    "status",
                    f"loss {esc(source)}",
                    f"loss {esc(target)}",
                    "adj. p",
                    f"examples ({esc(source)} then {esc(target)}: image above prediction)",
                ],
                body,
                align="rrrrrlrrrl",
            )
        )
    return "".join(out)


def _per_class(summary: Mapping[str, Any], assets: ReportAssets) -> str:
    out = ["<h2>Per class: IoU drop next to the class-conditional gap</h2>"]
    out.append(
        '<p class="muted">IoU from summed confusion matrices per domain. The class-conditional '
        "gap is the MMD² between the class's mean tap features in source and target images "
        "(permutation p, Benjamini-Hochberg adjusted): a large gap with a large IoU drop means "
        "the class looks different to the model in the target.</p>"
    )
    for target, rows in summary["per_class"].items():
        out.append(f"<h3>{esc(summary['source'])} vs {esc(target)}</h3>")
        out.append(
            '<div class="card">'
            + img(assets.figures.get(f"per_class/{target}"), "per-class chart")
            + "</div>"
        )
        body = [
            [
                esc(r["class"]),
                fmt_pct(r.get("dataset_iou_source")),
                fmt_pct(r.get("dataset_iou_target")),
                _pts(r.get("dataset_iou_drop")),
                f"{r['n_source']} / {r['n_target']}",
                fmt(r.get("mmd2"), 4),
                fmt_p(r.get("p_adjusted")),
                fmt(r.get("fd")),
                esc(r.get("note", "")) if not r.get("computable") else "",
            ]
            for r in rows
        ]
        out.append(
            table(
                [
                    "class",
                    "IoU source",
                    "IoU target",
                    "drop",
                    "images (s / t)",
                    "MMD²",
                    "adj. p",
                    "FD",
                    "note",
                ],
                body,
                align="lrrrrrrrl",
            )
        )
    return "".join(out)


def _drift(summary: Mapping[str, Any], assets: ReportAssets) -> str:
    out = ["<h2>Metadata drift: likely drivers of the gap</h2>"]
    for target, drift in summary["metadata_drift"].items():
        out.append(f"<h3>{esc(summary['source'])} vs {esc(target)}</h3>")
        out.append(f'<p class="muted">Ranking rule: {esc(drift.get("driver_rule", ""))}.</p>')
        drivers = drift.get("drivers", [])
        if drivers:
            out.append(
                table(
                    ["rank", "field", "SMD", "Spearman &rho; (loss)", "score", "reading"],
                    [
                        [
                            str(d["rank"]),
                            esc(d["field"]),
                            fmt(d["smd"], 2),
                            f"{fmt(d['spearman_rho'], 2)} (p {fmt_p(d.get('spearman_p'))})",
                            fmt(d["score"], 3),
                            esc(d["sentence"]),
                        ]
                        for d in drivers[:12]
                    ],
                    align="rlrrrl",
                )
            )
        else:
            out.append("<p>No field is both significantly shifted and associated with loss.</p>")
        pics = [
            f'<div class="card">{img(assets.figures.get(f"hist/{target}/{name}"), name)}</div>'
            for name in histogram_fields(drift)
        ]
        if pics:
            out.append('<div class="row">' + "".join(pics) + "</div>")
        numeric = sorted(drift.get("numeric", []), key=lambda r: -(r.get("ks") or 0.0))
        out.append("<h3>Most shifted numeric fields</h3>")
        out.append(
            table(
                [
                    "field",
                    "mean source",
                    "mean target",
                    "SMD",
                    "KS",
                    "adj. p",
                    "Wasserstein",
                    "&rho; with loss",
                    "status",
                ],
                [
                    [
                        esc(r["field"]),
                        fmt(r.get("mean_source")),
                        fmt(r.get("mean_target")),
                        fmt(r.get("smd"), 2),
                        fmt(r.get("ks"), 2),
                        fmt_p(r.get("p_adjusted")),
                        fmt(r.get("wasserstein")),
                        fmt(r.get("spearman_rho"), 2),
                        esc(r.get("status", "")),
                    ]
                    for r in numeric[:15]
                ],
            )
        )
        cats = drift.get("categorical", [])
        if cats:
            out.append(
                table(
                    ["categorical field", "categories", "χ²", "Cramér's V", "adj. p", "status"],
                    [
                        [
                            esc(r["field"]),
                            str(len(r.get("categories", []))),
                            fmt(r.get("chi2"), 2),
                            fmt(r.get("cramers_v"), 2),
                            fmt_p(r.get("p_adjusted")),
                            esc(r.get("status", "")),
                        ]
                        for r in cats
                    ],
                )
            )
    return "".join(out)


def _specific(summary: Mapping[str, Any], assets: ReportAssets) -> str:
    out = ["<h2>Most domain-specific samples</h2>"]
    out.append(
        '<p class="muted">Ranked by the cross-validated domain classifier\'s probability that '
        "the image comes from the target: the clearest examples of what sets each domain "
        "apart (image above prediction).</p>"
    )
    for target, sides in summary.get("domain_specific", {}).items():
        for dom, items in sides.items():
            out.append(f"<h3>Most {esc(dom)}-like ({esc(summary['source'])} vs {esc(target)})</h3>")
            pics = "".join(
                thumb(assets, it["sample_id"], f"P({esc(target)}) = {fmt(it['p_target'], 2)}")
                for it in items
            )
            out.append(f'<div class="thumbs">{pics}</div>')
    return "".join(out)


def _footer(summary: Mapping[str, Any]) -> str:
    timing = summary.get("timing_s", {})
    total = sum(timing.values()) if timing else None
    return (
        '<h2>About</h2><p class="muted">Written by domain-gap. Machine-readable numbers are in '
        "summary.json, one row per image in samples.csv (loss, mIoU, cluster, domain-classifier "
        f"probability, map coordinates, metadata). Analysis time: {fmt(total, 1)} s.</p>"
    )


def render_report(summary: Mapping[str, Any], assets: ReportAssets) -> str:
    """The whole page as one self-contained HTML string."""
    body = "".join(
        [
            _header(summary),
            _overview(summary, assets),
            _headline(summary),
            _clusters(summary, assets),
            _per_class(summary, assets),
            _drift(summary, assets),
            _specific(summary, assets),
            _footer(summary),
        ]
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(summary['title'])}</title><style>{CSS}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )
