"""/admin/stats: statistics from the rollups, for admins and auditors; each view recorded
as `stats.viewed`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from audit_service.audit_log.context import audited
from audit_service.audit_log.dependencies import RecorderDep, SessionDep
from audit_service.auth.dependencies import AdminOrAuditor
from audit_service.core.dependencies import SettingsDep
from audit_service.core.errors import problem_responses
from audit_service.core.routing import SafeJSONRoute
from audit_service.stats import service
from audit_service.stats.schemas import (
    Freshness,
    PeakHours,
    StatsFilters,
    Summary,
    SummaryQuery,
    Timeseries,
    TimeseriesQuery,
    TopList,
    TopQuery,
)

router = APIRouter(prefix="/admin/stats", tags=["stats"], route_class=SafeJSONRoute)
_VIEWED = audited("stats.viewed", "stats")
_ERRORS = problem_responses(401, 403, 422)


@router.get(
    "/summary",
    response_model=Summary,
    operation_id="stats_summary",
    responses=_ERRORS,
    openapi_extra=_VIEWED,
)
async def stats_summary(
    query: Annotated[SummaryQuery, Query()],
    _: AdminOrAuditor,
    session: SessionDep,
    audit: RecorderDep,
    settings: SettingsDep,
) -> Summary:
    """Totals, distinct actors, logins ok/failed and the failure rate, denied and errors;
    with `compare`, the same for the comparison span and the deltas."""
    return await service.summary(session, audit, query, settings.stats_default_tz)


@router.get(
    "/timeseries",
    response_model=Timeseries,
    operation_id="stats_timeseries",
    responses=_ERRORS,
    openapi_extra=_VIEWED,
)
async def stats_timeseries(
    query: Annotated[TimeseriesQuery, Query()],
    _: AdminOrAuditor,
    session: SessionDep,
    audit: RecorderDep,
    settings: SettingsDep,
) -> Timeseries:
    """Event counts per local hour, day, ISO week or month in `tz`, every interval of the
    period present (zeros included); optionally split by action, module, outcome or
    source. Local days are 23 to 25 hours long across DST."""
    return await service.timeseries(session, audit, query, settings.stats_default_tz)


@router.get(
    "/top",
    response_model=TopList,
    operation_id="stats_top",
    responses=_ERRORS,
    openapi_extra=_VIEWED,
)
async def stats_top(
    query: Annotated[TopQuery, Query()],
    _: AdminOrAuditor,
    session: SessionDep,
    audit: RecorderDep,
    settings: SettingsDep,
) -> TopList:
    """The most frequent actors, actions, modules, IP addresses, sources or tenants, with
    their share of the total and the change against the previous period of equal length."""
    return await service.top(session, audit, query, settings.stats_default_tz)


@router.get(
    "/peak-hours",
    response_model=PeakHours,
    operation_id="stats_peak_hours",
    responses=_ERRORS,
    openapi_extra=_VIEWED,
)
async def stats_peak_hours(
    query: Annotated[StatsFilters, Query()],
    _: AdminOrAuditor,
    session: SessionDep,
    audit: RecorderDep,
    settings: SettingsDep,
) -> PeakHours:
    """An hour-of-week heatmap (7 x 24, local to `tz`) and the busiest hours."""
    return await service.peak_hours(session, audit, query, settings.stats_default_tz)


@router.get(
    "/freshness",
    response_model=Freshness,
    operation_id="stats_freshness",
    responses=problem_responses(401, 403),
    openapi_extra=_VIEWED,
)
async def stats_freshness(_: AdminOrAuditor, session: SessionDep, audit: RecorderDep) -> Freshness:
    """The log position the statistics reflect, what is still to be counted, and the lag."""
    return await service.freshness(session, audit)
