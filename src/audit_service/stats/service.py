"""Statistics from the rollups: summary, timeseries, top lists, peak hours, freshness, and
the facets of the activity filters."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from typing import Literal, cast
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.audit_log import log
from audit_service.audit_log import repository as events_repo
from audit_service.audit_log.repository import EventFilters
from audit_service.audit_log.sink import EventSink
from audit_service.core.db import within_budget
from audit_service.core.errors import FieldError, ValidationFailed
from audit_service.kit.models import utcnow
from audit_service.stats import buckets as b
from audit_service.stats import repository as repo
from audit_service.stats.models import BUCKET_SECONDS
from audit_service.stats.rollup import FACETS, LOGIN_ACTIONS, ROLLUP, lag_seconds
from audit_service.stats.schemas import (
    Comparison,
    Delta,
    Facets,
    FacetsQuery,
    FacetValue,
    Figures,
    Freshness,
    Histogram,
    HistogramBar,
    HistogramStep,
    PeakCell,
    PeakHours,
    Period,
    SeriesBucket,
    StatsFilters,
    Summary,
    SummaryQuery,
    Timeseries,
    TimeseriesQuery,
    TopItem,
    TopList,
    TopQuery,
)

DEFAULT_SPAN = timedelta(days=7)
MAX_SPAN = timedelta(days=366 * 100)
MAX_HOURLY_SPAN = timedelta(days=3653)  # 10 years
# Timeseries without `since`: this many intervals back from `until`.
SERIES_DEFAULTS = {
    "hour": timedelta(hours=24),
    "day": timedelta(days=30),
    "week": timedelta(weeks=12),
    "month": timedelta(days=365),
}


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        message, errors=[FieldError(loc=["query", field], msg=message, type="value_error")]
    )


class Resolved:
    """A query's period and zone, defaults applied and checked."""

    def __init__(
        self, query: StatsFilters, default_tz: str, default_span: timedelta = DEFAULT_SPAN
    ) -> None:
        self.tz_name = query.tz or default_tz
        self.tz = ZoneInfo(self.tz_name)
        until = query.until or datetime.fromtimestamp(
            b.ceil_bucket(int(utcnow().timestamp()) + 1), UTC
        )
        since = query.since or until - default_span
        if since > until:
            raise _invalid("since", "since must not be after until")
        if until - since > MAX_SPAN:
            raise _invalid("since", "the period may span at most 100 years")
        self.since, self.until = since.astimezone(UTC), until.astimezone(UTC)
        self.scope = repo.Scope(
            b.epoch(self.since),
            b.epoch(self.until),
            tenant_id=query.tenant_id,
            source=query.source,
            module=query.module,
            actions=tuple(query.action),
            outcome=query.outcome,
            actor=query.actor,
        )

    def period(self, since: datetime | None = None, until: datetime | None = None) -> Period:
        return Period(
            since=(since or self.since).astimezone(self.tz),
            until=(until or self.until).astimezone(self.tz),
            tz=self.tz_name,
        )


def _describe(audit: EventSink, endpoint: str, query: StatsFilters, r: Resolved) -> None:
    audit.describe(
        description=f"Viewed statistics: {endpoint}",
        endpoint=endpoint,
        filters=query.applied(),
        since=r.since.isoformat(),
        until=r.until.isoformat(),
        tz=r.tz_name,
    )


# --- summary ---------------------------------------------------------------------------------


async def _figures(session: AsyncSession, scope: repo.Scope) -> Figures:
    sums = await repo.outcome_totals(session, scope, LOGIN_ACTIONS)
    actors, users = await repo.distinct_actors(session, scope)
    selected = [scope.outcome] if scope.outcome else list(repo.OUTCOME_COLUMNS)

    def total(prefix: str, outcomes: list[str]) -> int:
        return sum(sums[prefix + repo.OUTCOME_COLUMNS[o]] for o in outcomes if o in selected)

    ok = total("login_", ["success"])
    failed = total("login_", ["failure", "denied"])
    return Figures(
        events=total("", selected),
        distinct_actors=actors,
        distinct_users=users,
        logins_ok=ok,
        logins_failed=failed,
        login_failure_rate=round(failed / (ok + failed), 6) if ok + failed else None,
        failures=total("", ["failure"]),
        denied=total("", ["denied"]),
        errors=total("", ["error"]),
    )


def _delta(now: float, before: float) -> Delta:
    return Delta(abs=now - before, pct=round((now - before) / before * 100, 2) if before else None)


def comparison_span(r: Resolved, compare: str) -> tuple[datetime, datetime]:
    if compare == "previous_period":
        return r.since - (r.until - r.since), r.since
    if compare == "previous_week":
        return r.since - timedelta(days=7), r.until - timedelta(days=7)
    since, until = b.shift_months(r.since, -1, r.tz), b.shift_months(r.until, -1, r.tz)
    # A local time moved by a month is on a quarter hour unless DST moved it by a
    # non-quarter amount (none today); floor it so the buckets stay whole.
    return (
        datetime.fromtimestamp(b.floor_bucket(b.epoch(since)), UTC),
        datetime.fromtimestamp(b.floor_bucket(b.epoch(until)), UTC),
    )


async def summary(
    session: AsyncSession, audit: EventSink, query: SummaryQuery, default_tz: str
) -> Summary:
    r = Resolved(query, default_tz)
    _describe(audit, "summary", query, r)
    figures = await _figures(session, r.scope)
    comparison = None
    if query.compare is not None:
        since, until = comparison_span(r, query.compare)
        before = await _figures(session, r.scope.shifted(b.epoch(since), b.epoch(until)))
        delta = {
            name: _delta(float(value or 0), float(getattr(before, name) or 0))
            for name, value in figures.model_dump().items()
        }
        comparison = Comparison(
            compare=query.compare,
            period=r.period(since, until),
            figures=before,
            delta=delta,
        )
    return Summary(
        period=r.period(), filters=query.applied(), figures=figures, comparison=comparison
    )


# --- timeseries ------------------------------------------------------------------------------


async def timeseries(
    session: AsyncSession, audit: EventSink, query: TimeseriesQuery, default_tz: str
) -> Timeseries:
    r = Resolved(query, default_tz, SERIES_DEFAULTS[query.interval])
    if query.since is None:
        # The default period starts with a whole local interval.
        first = b.interval_starts(r.scope.start, r.scope.start + 900, r.tz, query.interval)[0]
        r = Resolved(
            query.model_copy(update={"since": datetime.fromtimestamp(b.floor_bucket(first), UTC)}),
            default_tz,
        )
    if query.interval == "hour" and r.until - r.since > MAX_HOURLY_SPAN:
        raise _invalid("interval", "hourly buckets span at most 10 years: use interval=day")
    _describe(audit, "timeseries", query, r)
    starts = b.interval_starts(r.scope.start, r.scope.end, r.tz, query.interval)
    totals = [0] * len(starts)
    groups: list[dict[str, int]] = [defaultdict(int) for _ in starts]
    for i, value, n in await repo.per_interval(session, r.scope, starts, query.group_by):
        totals[i] += n
        if value is not None:
            groups[i][value] += n
    ends: list[int | None] = [*starts[1:], None] if starts else []
    return Timeseries(
        period=r.period(),
        interval=query.interval,
        group_by=query.group_by,
        buckets=[
            SeriesBucket(
                start=b.label(start, r.tz),
                end=b.label(end, r.tz) if end is not None else _interval_end(start, r, query),
                count=totals[i],
                groups=dict(sorted(groups[i].items())) if query.group_by else None,
            )
            for i, (start, end) in enumerate(zip(starts, ends, strict=True))
        ],
    )


# Longer than any local interval (a DST day is 25 h, a month 31 days): the next interval
# starts within it.
_LONGEST = {"hour": 3 * 3600, "day": 3 * 86400, "week": 9 * 86400, "month": 33 * 86400}


def _interval_end(start: int, r: Resolved, query: TimeseriesQuery) -> datetime:
    # The last interval's end: the start of the interval after it.
    probe = b.interval_starts(start, start + _LONGEST[query.interval], r.tz, query.interval)
    following = [s for s in probe if s > start]
    return b.label(following[0], r.tz)


# --- top -------------------------------------------------------------------------------------


async def top(session: AsyncSession, audit: EventSink, query: TopQuery, default_tz: str) -> TopList:
    if query.dimension == "ip":
        unsupported = [f for f in ("source", "module", "action") if getattr(query, f)]
        if unsupported:
            raise _invalid(
                unsupported[0],
                "dimension=ip can be filtered by tenant_id, actor and outcome only "
                "(IP statistics are kept without source, module and action)",
            )
    r = Resolved(query, default_tz)
    _describe(audit, "top", query, r)
    audit.describe(dimension=query.dimension, limit=query.limit)
    rows, total = await repo.top(session, r.scope, query.dimension, query.limit)
    length = r.scope.end - r.scope.start
    previous = await repo.counts_for(
        session,
        r.scope.shifted(r.scope.start - length, r.scope.start),
        query.dimension,
        [key for key, _ in rows],
    )
    items = []
    for key, n in rows:
        before = previous.get(key, 0)
        actor = query.dimension == "actor"
        value = key[-1] if actor else key[0]
        items.append(
            TopItem(
                key=None if query.dimension == "tenant" and value == "" else value,
                actor_type=key[0] if actor else None,
                count=n,
                share=round(n / total, 6) if total else 0.0,
                previous=before,
                change_abs=n - before,
                change_pct=round((n - before) / before * 100, 2) if before else None,
            )
        )
    return TopList(period=r.period(), dimension=query.dimension, total=total, items=items)


# --- peak hours ------------------------------------------------------------------------------


async def peak_hours(
    session: AsyncSession, audit: EventSink, query: StatsFilters, default_tz: str
) -> PeakHours:
    r = Resolved(query, default_tz)
    _describe(audit, "peak-hours", query, r)
    heat = [[0] * 24 for _ in range(7)]
    # Per local hour (in SQL, from hour rows where the zone's hours are UTC hours), then
    # folded into weekday x hour here.
    starts = b.interval_starts(r.scope.start, r.scope.end, r.tz, "hour")
    for i, _, n in await repo.per_interval(session, r.scope, starts):
        wall = b.local(max(starts[i], r.scope.start), r.tz)
        heat[wall.weekday()][wall.hour] += n
    cells = sorted(
        (PeakCell(weekday=d, hour=h, count=heat[d][h]) for d in range(7) for h in range(24)),
        key=lambda c: (-c.count, c.weekday, c.hour),
    )
    return PeakHours(period=r.period(), heatmap=heat, busiest=[c for c in cells[:5] if c.count])


# --- freshness -------------------------------------------------------------------------------


async def freshness(session: AsyncSession, audit: EventSink) -> Freshness:
    audit.describe(description="Viewed statistics: freshness", endpoint="freshness")
    watermark, updated_at = await repo.read_watermark(session, ROLLUP)
    size = await log.tree_size(session)
    return Freshness(
        watermark=watermark,
        tree_size=size,
        pending=max(0, size - (watermark + 1)),
        lag_seconds=await lag_seconds(session, watermark),
        updated_at=updated_at,
    )


async def rollup_state(session: AsyncSession) -> tuple[int, float | None]:
    """The statistics' watermark and their lag (see `freshness`), for reports."""
    watermark, _ = await repo.read_watermark(session, ROLLUP)
    return watermark, await lag_seconds(session, watermark)


# --- facets ----------------------------------------------------------------------------------


async def facets(session: AsyncSession, audit: EventSink, query: FacetsQuery) -> Facets:
    """The values of one activity filter with their all-time event counts (filter
    dropdowns and typeahead)."""
    audit.describe(
        description=f"Viewed statistics: facets of {query.field}",
        endpoint="facets",
        filters=query.model_dump(mode="json", exclude_defaults=True),
    )
    rows = await repo.facet_values(session, query.field, query.prefix, query.limit)
    watermark, _ = await repo.read_watermark(session, FACETS)
    return Facets(
        field=query.field,
        prefix=query.prefix,
        watermark=watermark,
        items=[
            FacetValue(
                value=value,
                actor_type=actor_type if query.field == "actor" else None,
                events=n,
                last_seen=seen,
            )
            for value, actor_type, n, seen in rows
        ],
    )


async def failed_logins_by_ip(
    session: AsyncSession,
    since: datetime,
    until: datetime,
    *,
    tenant_id: str | None,
    above: int,
    limit: int = 20,
) -> list[tuple[str, int, int]]:
    """The IPs with more than `above` failed logins in [since, until) (quarter hours), for
    reports: (ip, failed logins, distinct users tried)."""
    scope = repo.Scope(b.epoch(since), b.epoch(until), tenant_id=tenant_id)
    return await repo.failed_logins_by_ip(session, scope, above, limit)


# --- histogram -------------------------------------------------------------------------------

# Bar widths, narrowest first: the first that gives at most HISTOGRAM_BARS bars is used
# (50 to 200 bars for any period from 50 minutes to 16 years; months beyond that).
HISTOGRAM_STEPS: tuple[tuple[HistogramStep, int], ...] = (
    ("minute", 60),
    ("15 minutes", 900),
    ("hour", 3600),
    ("day", 86400),
    ("week", 7 * 86400),
    ("month", 31 * 86400),  # past 200 weeks (about 4 years)
)
HISTOGRAM_BARS = 200
# What counting over the events may cost, at most (a statement timeout on Postgres); past
# it the histogram is "not available" rather than the page slow. The rollups have no budget:
# they answer any period in milliseconds.
HISTOGRAM_BUDGET_MS = 250
# Finding the first and last match where the rollups will count: a combination of filters
# that no (column, occurred_at) index serves alone (a source with an action it never has)
# walks one column's index to its end. Past this the whole log's extent is drawn instead.
HISTOGRAM_EXTENT_MS = 50
HISTOGRAM_EMPTY_SPAN = timedelta(hours=24)
# The rollups answer while at most this far behind the log (seconds; the job runs every few).
HISTOGRAM_ROLLUP_LAG = 60.0  # the period shown when nothing matches
_LOCAL_STEPS: dict[str, b.Interval] = {
    "hour": "hour",
    "day": "day",
    "week": "week",
    "month": "month",
}
# The bars are drawn for the matching events' extent inside a longer period (since=1900…):
# only the first bar reaches back to `since`, and at most this many are ever drawn.
MAX_HISTOGRAM_BARS = 1000


# What the rollups keep. Any other filter set (IP, text, target, request id, excludes, an
# actor: the rollups key on the id, the activity filter matches the id or the name) is
# counted over the events; a filter added to EventFilters later falls there by itself.
_ROLLUP_FILTERS = frozenset(
    {"actions", "module", "outcome", "source", "tenant_id", "since", "until"}
)


def rollups_answer(filters: EventFilters) -> bool:
    """Whether the rollups carry every filter given."""
    return all(
        getattr(filters, f.name) == f.default
        for f in fields(filters)
        if f.name not in _ROLLUP_FILTERS
    )


def histogram_step(seconds: float) -> tuple[HistogramStep, int]:
    for name, size in HISTOGRAM_STEPS:
        if seconds <= size * HISTOGRAM_BARS:
            return name, size
    return HISTOGRAM_STEPS[-1]


def histogram_starts(start: int, end: int, step: int, name: str, tz: ZoneInfo) -> list[int]:
    """The bars' starts (epoch seconds, ascending; the first at or before `start`): minutes
    and quarter hours on the UTC grid (the same in every zone: offsets are multiples of 15
    minutes), hours, days and ISO weeks local to `tz` (a DST day is 23 or 25 hours)."""
    if name in _LOCAL_STEPS:
        return b.interval_starts(start, end, tz, _LOCAL_STEPS[name])
    return list(range(start - start % step, end, step))


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _unavailable(audit: EventSink, tz_name: str, since: datetime, until: datetime) -> Histogram:
    audit.describe(histogram="timed_out")
    return Histogram(
        available=False,
        message="The histogram is not available for this filter: counting its events "
        f"takes longer than {HISTOGRAM_BUDGET_MS} ms. The rows below are complete.",
        tz=tz_name,
        since=since,
        until=until,
    )


async def histogram(
    session: AsyncSession, audit: EventSink, filters: EventFilters, tz_name: str
) -> Histogram:
    """Events per minute, 15 minutes, local hour, day or week for exactly `filters` (the
    activity history's), over [since, until), or the matching events' extent where not
    given. From the rollups where they carry the filters (the ragged edges of a period off
    their 15-minute grid counted over the events), else counted over the matching events
    within HISTOGRAM_BUDGET_MS."""
    tz = ZoneInfo(tz_name)
    audit.describe(description="Viewed statistics: histogram", endpoint="histogram", tz=tz_name)
    now = utcnow()
    since, until = filters.since, filters.until
    if since is None or until is None:

        async def extent() -> tuple[datetime | None, datetime | None]:
            return await events_repo.occurred_extent(session, filters)

        cheap = rollups_answer(filters)
        budget = HISTOGRAM_EXTENT_MS if cheap else HISTOGRAM_BUDGET_MS
        found = await within_budget(session, budget, extent)
        if found is None:
            if not cheap:
                # Finding the first and last match took the whole budget: counting them
                # all would take longer still.
                return _unavailable(audit, tz_name, since or now, until or now)
            # The rollups count cheaply whatever the period: the whole log's (index ends).
            found = await events_repo.occurred_extent(session, EventFilters())
        first, last = found
        if until is None:
            # Past the latest match (an ingested event may be dated ahead of our clock).
            until = max(now, last + timedelta(microseconds=1)) if last else now
        if since is None:
            since = min(first, until) if first else until - HISTOGRAM_EMPTY_SPAN
    window = replace(filters, since=since, until=until)
    start, end = math.floor(since.timestamp()), math.ceil(until.timestamp())
    end = max(end, start + 1)
    if (end - start) / HISTOGRAM_STEPS[-1][1] > HISTOGRAM_BARS:
        # Decades asked for: bars over the years that have matching events (each end of an
        # index; the whole log's when the filters make that slow).
        found = await within_budget(
            session, HISTOGRAM_EXTENT_MS, lambda: events_repo.occurred_extent(session, window)
        )
        first, last = found or await events_repo.occurred_extent(session, EventFilters())
        if first is not None and last is not None:
            start = max(start, math.floor(first.timestamp()))
            end = min(end, max(start + 1, math.ceil(last.timestamp()) + 1))
        if (end - start) / HISTOGRAM_STEPS[-1][1] > MAX_HISTOGRAM_BARS:
            start = end - MAX_HISTOGRAM_BARS * 28 * 86400  # the newest ~77 years
    name, size = histogram_step(end - start)
    starts = histogram_starts(start, end, size, name, tz)
    counts = [0] * len(starts)
    source: Literal["rollups", "events"] = "events"
    watermark: int | None = None
    # The part of the period on the rollups' grid, and what lies beside it.
    lo = b.ceil_bucket(math.ceil(since.timestamp()))
    hi = b.floor_bucket(math.floor(until.timestamp()))
    use_rollups = rollups_answer(filters) and size >= BUCKET_SECONDS and lo < hi
    if use_rollups:
        watermark, _ = await repo.read_watermark(session, ROLLUP)
        # Rollups far behind the log (the job stopped, a bulk load not counted yet) would
        # draw a history with holes: count over the events instead, within the budget.
        behind = await lag_seconds(session, watermark)
        if behind is not None and behind > HISTOGRAM_ROLLUP_LAG:
            use_rollups, watermark = False, None
            audit.describe(rollup_lag_seconds=round(behind, 1))
    if use_rollups:
        source = "rollups"
        scope = repo.Scope(
            lo,
            hi,
            tenant_id=filters.tenant_id,
            source=filters.source,
            module=filters.module,
            actions=filters.actions,
            outcome=filters.outcome,
        )
        for i, _, n in await repo.per_interval(session, scope, starts):
            counts[max(i, 0)] += n  # before the first bar's start: still bar 0 (from since)
        edges = [replace(window, until=_at(lo)), replace(window, since=_at(hi))]
        edges = [e for e in edges if cast(datetime, e.since) < cast(datetime, e.until)]
    else:
        edges = [window]
    for edge in edges:

        async def count(edge: EventFilters = edge) -> list[tuple[int, int]]:
            return await repo.events_per_interval(session, edge, starts, end)

        rows = await within_budget(session, HISTOGRAM_BUDGET_MS, count)
        if rows is None:
            return _unavailable(audit, tz_name, since, until)
        for i, n in rows:
            counts[max(i, 0)] += n
    ends = [*starts[1:], end]
    bars = [
        HistogramBar(
            start=since if i == 0 else _at(s),
            end=until if i == len(starts) - 1 else _at(e),
            count=counts[i],
        )
        for i, (s, e) in enumerate(zip(starts, ends, strict=True))
    ]
    audit.describe(histogram=source, step=name, bars=len(bars))
    return Histogram(
        available=True,
        source=source,
        step=name,
        tz=tz_name,
        since=since,
        until=until,
        total=sum(counts),
        watermark=watermark,
        bars=bars,
    )
