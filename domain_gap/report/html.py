"""The static, self-contained report page: inline CSS, images as PNG data URIs, no scripts.

:func:`render_report` renders the typed :class:`~domain_gap.analysis.results.Summary` and the
drawn assets through the Jinja2 templates in ``templates/`` (autoescaped). The templates
format numbers with the filters of :mod:`domain_gap.report.format` and never compute or
decide: significance, readings and verdicts come from the results.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from domain_gap.analysis.results import Summary
from domain_gap.report import format as f
from domain_gap.report.assets import ReportAssets, fleet_histogram_fields, histogram_fields
from domain_gap.report.thumbnails import THUMB_WIDTH

TEMPLATES = Path(__file__).with_name("templates")

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


def _desc_by(items: Iterable[Any], attribute: str) -> list[Any]:
    """Items in descending order of an attribute, None last (for tables ranked by size)."""
    return sorted(items, key=lambda r: -(getattr(r, attribute) or 0.0))


@cache
def environment() -> jinja2.Environment:
    """The page's Jinja2 environment: autoescape on, undefined names are errors."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        fmt=f.fmt,
        pct=f.fmt_pct,
        pts=f.fmt_pts,
        p=f.fmt_p,
        p_is=f.p_is,
        ci=f.fmt_ci,
        short_id=f.short_id,
        data_uri=f.data_uri,
        desc_by=_desc_by,
    )
    env.globals.update(
        DASH=f.DASH,
        histogram_fields=histogram_fields,
        fleet_histogram_fields=fleet_histogram_fields,
        level=lambda alpha: round(100 * (1 - float(alpha))),
    )
    return env


def render_report(summary: Summary, assets: ReportAssets) -> str:
    """The whole page as one self-contained HTML string."""
    template = environment().get_template("report.html.j2")
    return template.render(s=summary, assets=assets, css=CSS)
