"""What a report says: figures for its period from the statistics rollups (never a scan of
the raw events), through the same stats services the API answers with.

daily: totals against the previous day and the same weekday a week before, logins, distinct
users, the top 5 users, actions and modules, the peak hour, IPs over the failed-login
threshold, alerts, and revisions of earlier reports by late events; weekly: the same plus
events per day, top movers and the off-hours share; monthly: against the previous month, a
6-month trend, the hour-of-week heatmap and the module mix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.audit_log.context import SYSTEM, Actor
from audit_service.stats import service as stats
from audit_service.stats.schemas import (
    Delta,
    Figures,
    PeakCell,
    StatsFilters,
    SummaryQuery,
    TimeseriesQuery,
    TopItem,
    TopQuery,
)

Kind = Literal["daily", "weekly", "monthly"]
TOP = 5
MOVER_CANDIDATES = 20
TREND_MONTHS = 6
# Business hours for the off-hours share: Monday to Friday, 07:00 to 20:00 local.
BUSINESS_DAYS, BUSINESS_HOURS = range(5), range(7, 20)


@dataclass(frozen=True)
class ReportScope:
    """A schedule's optional filters; every figure of its report is narrowed to them."""

    tenant_id: str | None = None
    source: str | None = None
    module: str | None = None

    def filters(self) -> dict[str, str]:
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass(frozen=True)
class ReportPeriod:
    kind: Kind
    start: datetime  # aware, UTC; a local midnight in tz
    end: datetime  # exclusive
    tz: str


@dataclass(frozen=True)
class Reported:
    """An earlier run of the same schedule and the total it reported."""

    start: datetime
    end: datetime
    events: int


@dataclass
class _Discard:
    """The stats services describe their own `stats.viewed` event; a report is recorded as
    `report.sent` instead, so what they say is dropped."""

    actor: Actor = field(default=SYSTEM)

    def describe(self, **_: Any) -> None:
        return None


class PeriodOut(BaseModel):
    start: datetime
    end: datetime
    tz: str


class Compared(BaseModel):
    """The same figures for a comparison period, and the change of each."""

    label: str
    period: PeriodOut
    figures: Figures
    delta: dict[str, Delta]


class Bar(BaseModel):
    label: str
    start: datetime
    count: int


class Mover(BaseModel):
    action: str
    count: int
    previous: int
    change_abs: int
    change_pct: float | None


class FailedLoginIp(BaseModel):
    ip: str
    failed: int
    users: int = Field(description="Distinct users (or attempted names) tried")


class Revision(BaseModel):
    start: datetime
    end: datetime
    reported: int
    now: int


class Share(BaseModel):
    key: str
    count: int
    share: float


class Report(BaseModel):
    kind: Kind
    period: PeriodOut
    scope: dict[str, str]
    figures: Figures
    comparisons: list[Compared]
    top_users: list[TopItem]
    top_actions: list[TopItem]
    top_modules: list[TopItem]
    peak: PeakCell | None = Field(description="The busiest local hour (of the week)")
    failed_login_threshold: int
    failed_login_ips: list[FailedLoginIp] | None = Field(
        description="None: not available for a source- or module-scoped report"
    )
    alerts: str = "No alerts: detections are not enabled in this version."
    revisions: list[Revision]
    per_day: list[Bar] = Field(default_factory=list, description="weekly")
    top_movers: list[Mover] = Field(default_factory=list, description="weekly")
    off_hours_share: float | None = Field(default=None, description="weekly; None: no events")
    trend: list[Bar] = Field(default_factory=list, description="monthly: 6 months")
    heatmap: list[list[int]] = Field(default_factory=list, description="monthly: 7 x 24")
    module_mix: list[Share] = Field(default_factory=list, description="monthly")


def _filters(
    period: ReportPeriod,
    scope: ReportScope,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    return {
        # The query models read what a URL carries: ISO 8601 text.
        "since": (since or period.start).isoformat(),
        "until": (until or period.end).isoformat(),
        "tz": period.tz,
        **scope.filters(),
    }


def _local(when: datetime, tz: str) -> datetime:
    return when.astimezone(ZoneInfo(tz))


async def _compared(
    session: AsyncSession, period: ReportPeriod, scope: ReportScope, compare: str, label: str
) -> Compared:
    query = SummaryQuery(**_filters(period, scope), compare=compare)
    s = await stats.summary(session, _Discard(), query, period.tz)
    assert s.comparison is not None
    return Compared(
        label=label,
        period=PeriodOut(
            start=s.comparison.period.since, end=s.comparison.period.until, tz=period.tz
        ),
        figures=s.comparison.figures,
        delta=s.comparison.delta,
    )


async def _top(
    session: AsyncSession, period: ReportPeriod, scope: ReportScope, dimension: str, limit: int
) -> list[TopItem]:
    query = TopQuery(**_filters(period, scope), dimension=dimension, limit=limit)
    return (await stats.top(session, _Discard(), query, period.tz)).items


async def _bars(
    session: AsyncSession,
    period: ReportPeriod,
    scope: ReportScope,
    interval: str,
    since: datetime,
    label: str,
) -> list[Bar]:
    query = TimeseriesQuery(**_filters(period, scope, since=since), interval=interval)
    series = await stats.timeseries(session, _Discard(), query, period.tz)
    return [
        Bar(label=b.start.strftime(label), start=b.start, count=b.count) for b in series.buckets
    ]


def _months_back(start: datetime, tz: str, months: int) -> datetime:
    local = _local(start, tz)
    year, month = local.year, local.month - months
    while month < 1:
        year, month = year - 1, month + 12
    return datetime(year, month, 1, tzinfo=ZoneInfo(tz)).astimezone(UTC)


async def build_report(
    session: AsyncSession,
    period: ReportPeriod,
    scope: ReportScope,
    *,
    failed_login_threshold: int = 5,
    earlier: Sequence[Reported] = (),
) -> Report:
    base = _filters(period, scope)
    summary = await stats.summary(session, _Discard(), SummaryQuery(**base), period.tz)
    comparisons: list[Compared] = []
    if period.kind == "daily":
        comparisons.append(
            await _compared(session, period, scope, "previous_period", "previous day")
        )
        comparisons.append(
            await _compared(session, period, scope, "previous_week", "same weekday last week")
        )
    elif period.kind == "weekly":
        comparisons.append(
            await _compared(session, period, scope, "previous_period", "previous week")
        )
    else:
        comparisons.append(
            await _compared(session, period, scope, "previous_month", "previous month")
        )

    heat = await stats.peak_hours(session, _Discard(), StatsFilters(**base), period.tz)
    failed_ips: list[FailedLoginIp] | None = None
    if scope.source is None and scope.module is None:
        failed_ips = [
            FailedLoginIp(ip=ip, failed=n, users=users)
            for ip, n, users in await stats.failed_logins_by_ip(
                session,
                period.start,
                period.end,
                tenant_id=scope.tenant_id,
                above=failed_login_threshold,
            )
        ]
    revisions = []
    for r in earlier:
        now = await stats.summary(
            session, _Discard(), SummaryQuery(**_filters(period, scope, r.start, r.end)), period.tz
        )
        if now.figures.events != r.events:
            revisions.append(
                Revision(
                    start=_local(r.start, period.tz),
                    end=_local(r.end, period.tz),
                    reported=r.events,
                    now=now.figures.events,
                )
            )
    report = Report(
        kind=period.kind,
        period=PeriodOut(
            start=_local(period.start, period.tz), end=_local(period.end, period.tz), tz=period.tz
        ),
        scope=scope.filters(),
        figures=summary.figures,
        comparisons=comparisons,
        top_users=await _top(session, period, scope, "actor", TOP),
        top_actions=await _top(session, period, scope, "action", TOP),
        top_modules=await _top(session, period, scope, "module", TOP),
        peak=heat.busiest[0] if heat.busiest else None,
        failed_login_threshold=failed_login_threshold,
        failed_login_ips=failed_ips,
        revisions=sorted(revisions, key=lambda r: r.start),
    )
    if period.kind == "weekly":
        report.per_day = await _bars(session, period, scope, "day", period.start, "%a %d %b")
        actions = await _top(session, period, scope, "action", MOVER_CANDIDATES)
        report.top_movers = [
            Mover(
                action=a.key or "",
                count=a.count,
                previous=a.previous,
                change_abs=a.change_abs,
                change_pct=a.change_pct,
            )
            for a in sorted(actions, key=lambda a: (-abs(a.change_abs), a.key or ""))[:TOP]
            if a.change_abs
        ]
        total = sum(map(sum, heat.heatmap))
        off = sum(
            heat.heatmap[d][h]
            for d in range(7)
            for h in range(24)
            if d not in BUSINESS_DAYS or h not in BUSINESS_HOURS
        )
        report.off_hours_share = round(off / total, 4) if total else None
    if period.kind == "monthly":
        since = _months_back(period.start, period.tz, TREND_MONTHS - 1)
        report.trend = await _bars(session, period, scope, "month", since, "%b %Y")
        report.heatmap = heat.heatmap
        modules = await _top(session, period, scope, "module", 10)
        report.module_mix = [Share(key=m.key or "", count=m.count, share=m.share) for m in modules]
    return report
