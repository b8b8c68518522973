"""A report as an e-mail: subject, HTML part and plain-text part.

The HTML is built for mail clients, not browsers: table layout, inline CSS only, bars as
table cells with a width — no SVG, no `data:` URIs, no images or external resources (Gmail,
Outlook and Yahoo drop or block them). Autoescaping is on for HTML, so every value that
comes from an event (actions, actor ids, modules, tenants) is text, never markup.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from audit_service.reports.content import Report

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str


@cache
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("audit_service.reports", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["signed"] = _signed
    env.filters["pct"] = _pct
    env.filters["num"] = lambda n: f"{n:,}"
    return env


def _signed(value: float) -> str:
    return f"{value:+,.0f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f} %"


def _period_label(report: Report) -> str:
    start, end = report.period.start, report.period.end
    if report.kind == "daily":
        return start.date().isoformat()
    if report.kind == "weekly":
        last = end.date().fromordinal(end.date().toordinal() - 1)
        return f"{start.date().isoformat()} to {last.isoformat()}"
    return start.strftime("%B %Y")


def subject(report: Report) -> str:
    scope = ", ".join(f"{k} {v}" for k, v in report.scope.items())
    return (
        f"[audit-service] {report.kind.capitalize()} report {_period_label(report)} "
        f"({report.period.tz})" + (f" - {scope}" if scope else "")
    )


def console_link(report: Report, public_url: str | None) -> str | None:
    """The console's activity view of the same period and scope: its parameters are
    exactly /admin/activity's, so the link is a deep link."""
    if public_url is None:
        return None
    params = {
        "since": report.period.start.isoformat(),
        "until": report.period.end.isoformat(),
        **report.scope,
    }
    return f"{public_url}/console/activity?{urlencode(params)}"


def _bar_width(count: int, top: int) -> int:
    return 0 if top <= 0 else max(1 if count else 0, round(count * 100 / top))


def render(report: Report, *, public_url: str | None) -> Rendered:
    env = _environment()
    heat_top = max((max(row) for row in report.heatmap), default=0)
    context: dict[str, Any] = {
        "r": report,
        "title": subject(report).removeprefix("[audit-service] "),
        "period_label": _period_label(report),
        "link": console_link(report, public_url),
        "weekdays": WEEKDAYS,
        "width": _bar_width,
        "day_top": max((b.count for b in report.per_day), default=0),
        "trend_top": max((b.count for b in report.trend), default=0),
        "heat_top": heat_top,
        "shade": lambda n: _shade(n, heat_top),
    }
    return Rendered(
        subject=subject(report),
        html=env.get_template("report.html").render(context),
        text=env.get_template("report.txt").render(context),
    )


def _shade(count: int, top: int) -> str:
    """A heatmap cell's background: white to a dark blue, by count."""
    if top <= 0 or count <= 0:
        return "#ffffff"
    level = count / top
    r, g, b = (int(255 - (255 - c) * level) for c in (30, 80, 160))
    return f"#{r:02x}{g:02x}{b:02x}"
