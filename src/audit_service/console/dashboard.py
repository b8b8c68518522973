"""/console/dashboard: activity over time, top users / actions / modules, peak hours, the
period comparisons and failed logins, all from the statistics service (stats/) the API's
/admin/stats uses. Every figure links into the activity page with the matching filters
(the same parameters as /admin/activity); the chart (static/charts.js) reads its data from
a JSON data island and turns a click or a dragged range into such a link."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, field_validator
from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.audit_log.context import RequestAudit, audited
from audit_service.audit_log.dependencies import RecorderDep, SessionDep
from audit_service.console import auth
from audit_service.console.auth import Viewer
from audit_service.console.forms import parse_query
from audit_service.console.routing import ConsoleRoute
from audit_service.console.templating import render
from audit_service.core.dependencies import SettingsDep
from audit_service.kit.schemas import InputModel, check_time_zone
from audit_service.stats import service as stats
from audit_service.stats.rollup import LOGIN_ACTIONS
from audit_service.stats.schemas import (
    Dimension,
    Figures,
    PeakHours,
    StatsFilters,
    Summary,
    SummaryQuery,
    Timeseries,
    TimeseriesQuery,
    TopList,
    TopQuery,
)

router = APIRouter(
    prefix="/console",
    route_class=ConsoleRoute,
    include_in_schema=False,
    dependencies=[Depends(auth.console_guard)],
)
ACTIVITY = "/console/activity"
TOP_LIMIT = 8
# (dimension, heading, the /admin/activity parameter its key filters on)
TOP_PANELS: tuple[tuple[Dimension, str, str], ...] = (
    ("actor", "Most active users", "actor"),
    ("action", "Top actions", "action"),
    ("module", "Top modules", "module"),
)
INTERVALS = (("day", "Per day"), ("week", "Per week"), ("month", "Per month"))
# The comparison cards: (compare, heading, span of the current period).
COMPARISONS: tuple[tuple[Literal["previous_week", "previous_month"], str, timedelta], ...] = (
    ("previous_week", "Last 7 days vs the week before", timedelta(days=7)),
    ("previous_month", "Last 30 days vs a month before", timedelta(days=30)),
)
COMPARED_FIGURES = (
    ("events", "Events"),
    ("distinct_users", "Active users"),
    ("logins_failed", "Failed logins"),
    ("denied", "Denied"),
)
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
HEAT_LEVELS = 5


class DashboardQuery(InputModel):
    """The dashboard's own parameters; anything else is refused (422 page)."""

    interval: Literal["day", "week", "month"] = "day"
    tz: str | None = Field(default=None, max_length=64)

    @field_validator("tz")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return check_time_zone(value or None)


Q = TypeVar("Q", bound=BaseModel)


def _query(model: type[Q], **values: Any) -> Q:
    """A stats query as the API would receive it: times as ISO 8601 text (its validators
    take text only, as a query string has it)."""
    return model.model_validate(
        {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}
    )


def activity_link(**params: Any) -> str:
    """An /console/activity URL with exactly /admin/activity's parameter names."""
    pairs: list[tuple[str, str]] = []
    for name, value in params.items():
        if value is None:
            continue
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            pairs.append((name, v.isoformat() if isinstance(v, datetime) else str(v)))
    return f"{ACTIVITY}?{urlencode(pairs)}" if pairs else ACTIVITY


@dataclass(frozen=True, slots=True)
class TopRow:
    label: str
    detail: str | None
    count: int
    share_pct: float
    change_pct: float | None
    href: str


@dataclass(frozen=True, slots=True)
class TopPanel:
    heading: str
    total: int
    rows: list[TopRow]


@dataclass(frozen=True, slots=True)
class ComparedFigure:
    label: str
    now: int
    before: int
    change_pct: float | None
    direction: str  # up, down, same


@dataclass(frozen=True, slots=True)
class ComparisonCard:
    heading: str
    since: datetime
    until: datetime
    before_since: datetime
    before_until: datetime
    figures: list[ComparedFigure]
    href: str


@dataclass(frozen=True, slots=True)
class HeatCell:
    count: int
    level: int
    label: str


@dataclass(frozen=True, slots=True)
class SeriesRow:
    start: datetime
    end: datetime
    count: int
    href: str


@dataclass(frozen=True, slots=True)
class FailedLogins:
    figures: Figures
    href: str
    by_account: TopPanel


@dataclass(frozen=True, slots=True)
class Dashboard:
    interval: str
    tz: str
    since: datetime
    until: datetime
    total: int
    series: list[SeriesRow]
    chart: dict[str, Any]
    tops: list[TopPanel]
    heatmap: list[tuple[str, list[HeatCell]]]
    busiest: list[str]
    comparisons: list[ComparisonCard]
    failed_logins: FailedLogins
    intervals: tuple[tuple[str, str], ...] = INTERVALS


def _top_panel(
    top: TopList, heading: str, param: str, since: datetime, until: datetime, **extra: Any
) -> TopPanel:
    rows = []
    for item in top.items:
        label = item.key if item.key is not None else "(none)"
        rows.append(
            TopRow(
                label=label,
                detail=item.actor_type,
                count=item.count,
                share_pct=round(item.share * 100, 1),
                change_pct=item.change_pct,
                href=activity_link(**{param: item.key}, since=since, until=until, **extra),
            )
        )
    return TopPanel(heading=heading, total=top.total, rows=rows)


def _heatmap(peaks: PeakHours) -> tuple[list[tuple[str, list[HeatCell]]], list[str]]:
    top = max((n for row in peaks.heatmap for n in row), default=0)
    rows = []
    for day, counts in zip(WEEKDAYS, peaks.heatmap, strict=True):
        cells = []
        for hour, n in enumerate(counts):
            level = (
                0
                if n == 0 or top == 0
                else 1 + min(HEAT_LEVELS - 2, (n * (HEAT_LEVELS - 1) - 1) // top)
            )
            cells.append(HeatCell(n, level, f"{day} {hour:02d}:00-{hour + 1:02d}:00: {n} events"))
        rows.append((day, cells))
    busiest = [
        f"{WEEKDAYS[c.weekday]} {c.hour:02d}:00-{c.hour + 1:02d}:00 ({c.count} events)"
        for c in peaks.busiest
        if c.count
    ]
    return rows, busiest


def _comparison(summary: Summary, heading: str) -> ComparisonCard:
    assert summary.comparison is not None
    before = summary.comparison.figures
    figures = []
    for name, label in COMPARED_FIGURES:
        now, was = int(getattr(summary.figures, name)), int(getattr(before, name))
        figures.append(
            ComparedFigure(
                label=label,
                now=now,
                before=was,
                change_pct=summary.comparison.delta[name].pct,
                direction="up" if now > was else "down" if now < was else "same",
            )
        )
    return ComparisonCard(
        heading=heading,
        since=summary.period.since,
        until=summary.period.until,
        before_since=summary.comparison.period.since,
        before_until=summary.comparison.period.until,
        figures=figures,
        href=activity_link(since=summary.period.since, until=summary.period.until),
    )


async def dashboard_view(
    session: AsyncSession, audit: RequestAudit, query: DashboardQuery, default_tz: str
) -> Dashboard:
    """Everything the dashboard shows, from the statistics service (which records each as
    viewed statistics; the page is then described as one dashboard view)."""
    series: Timeseries = await stats.timeseries(
        session, audit, _query(TimeseriesQuery, interval=query.interval, tz=query.tz), default_tz
    )
    tz = series.period.tz
    since, until = series.period.since, series.period.until
    tops = []
    for dimension, heading, param in TOP_PANELS:
        top = await stats.top(
            session,
            audit,
            _query(TopQuery, dimension=dimension, limit=TOP_LIMIT, since=since, until=until, tz=tz),
            default_tz,
        )
        tops.append(_top_panel(top, heading, param, since, until))
    peaks = await stats.peak_hours(
        session, audit, _query(StatsFilters, since=since, until=until, tz=tz), default_tz
    )
    heatmap, busiest = _heatmap(peaks)
    comparisons = []
    for compare, heading, span in COMPARISONS:
        summary = await stats.summary(
            session,
            audit,
            _query(SummaryQuery, since=until - span, until=until, tz=tz, compare=compare),
            default_tz,
        )
        comparisons.append(_comparison(summary, heading))
    period = await stats.summary(
        session, audit, _query(SummaryQuery, since=since, until=until, tz=tz), default_tz
    )
    failed_filter = {"action": list(LOGIN_ACTIONS), "outcome": "failure"}
    by_account = await stats.top(
        session,
        audit,
        _query(
            TopQuery, dimension="actor", limit=5, since=since, until=until, tz=tz, **failed_filter
        ),
        default_tz,
    )
    failed = FailedLogins(
        figures=period.figures,
        href=activity_link(**failed_filter, since=since, until=until),
        by_account=_top_panel(
            by_account, "Failed logins by account", "actor", since, until, **failed_filter
        ),
    )
    rows = [
        SeriesRow(b.start, b.end, b.count, activity_link(since=b.start, until=b.end))
        for b in series.buckets
    ]
    chart = {
        "tz": tz,
        "interval": series.interval,
        "activity_url": ACTIVITY,
        "filters": {},
        "series": {
            "starts": [int(b.start.timestamp()) for b in series.buckets],
            "ends": [int(b.end.timestamp()) for b in series.buckets],
            "counts": [b.count for b in series.buckets],
        },
    }
    audit.describe(
        description="Viewed the console dashboard",
        endpoint="dashboard",
        interval=query.interval,
        since=since.isoformat(),
        until=until.isoformat(),
        tz=tz,
    )
    return Dashboard(
        interval=series.interval,
        tz=tz,
        since=since,
        until=until,
        total=sum(b.count for b in series.buckets),
        series=rows,
        chart=chart,
        tops=tops,
        heatmap=heatmap,
        busiest=busiest,
        comparisons=comparisons,
        failed_logins=failed,
    )


@router.get("/dashboard", openapi_extra=audited("stats.viewed", "stats"))
async def dashboard(
    request: Request,
    _: Viewer,
    session: SessionDep,
    audit: RecorderDep,
    settings: SettingsDep,
) -> Response:
    query = parse_query(request, DashboardQuery)
    view = await dashboard_view(session, audit, query, settings.stats_default_tz)
    return render(request, "dashboard.html", {"view": view, "active": "dashboard"})
