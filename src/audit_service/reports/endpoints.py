"""/admin/reports: scheduled e-mail reports (schedules: admin; preview: admin, auditor)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from audit_service.audit_log.context import audited
from audit_service.audit_log.dependencies import RecorderDep, SessionDep
from audit_service.auth.dependencies import AdminOrAuditor, AdminUser
from audit_service.core.dependencies import SettingsDep
from audit_service.core.errors import problem_responses
from audit_service.core.routing import SafeJSONRoute
from audit_service.reports import service
from audit_service.reports.schemas import (
    PreviewIn,
    PreviewOut,
    RunList,
    ScheduleIn,
    ScheduleList,
    ScheduleOut,
    ScheduleUpdate,
    SendOut,
)

router = APIRouter(prefix="/admin/reports", tags=["reports"], route_class=SafeJSONRoute)
_CHANGED = audited("config.changed", "reports")
ScheduleId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.post(
    "/schedules",
    status_code=status.HTTP_201_CREATED,
    response_model=ScheduleOut,
    operation_id="create_report_schedule",
    responses=problem_responses(401, 403, 422),
    openapi_extra=_CHANGED,
)
async def create_report_schedule(
    data: ScheduleIn, _: AdminUser, session: SessionDep, audit: RecorderDep
) -> ScheduleOut:
    """Schedule a daily, weekly or monthly report by e-mail (admin only)."""
    return await service.create_schedule(session, audit, data)


@router.get(
    "/schedules",
    response_model=ScheduleList,
    operation_id="list_report_schedules",
    responses=problem_responses(401, 403),
    openapi_extra=audited("report.schedules_listed", "reports"),
)
async def list_report_schedules(
    _: AdminUser, session: SessionDep, audit: RecorderDep
) -> ScheduleList:
    """Every report schedule, with the next period each will send (admin only)."""
    return await service.list_schedules(session, audit)


@router.get(
    "/schedules/{schedule_id}",
    response_model=ScheduleOut,
    operation_id="get_report_schedule",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=audited("report.schedule_viewed", "reports"),
)
async def get_report_schedule(
    schedule_id: ScheduleId, _: AdminUser, session: SessionDep, audit: RecorderDep
) -> ScheduleOut:
    """One report schedule (admin only)."""
    return await service.get_schedule(session, audit, schedule_id)


@router.patch(
    "/schedules/{schedule_id}",
    response_model=ScheduleOut,
    operation_id="update_report_schedule",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=_CHANGED,
)
async def update_report_schedule(
    schedule_id: ScheduleId,
    data: ScheduleUpdate,
    _: AdminUser,
    session: SessionDep,
    audit: RecorderDep,
) -> ScheduleOut:
    """Change a schedule: only the fields given (admin only). A new kind, time or zone
    applies from the next period it makes due."""
    return await service.update_schedule(session, audit, schedule_id, data)


@router.delete(
    "/schedules/{schedule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    operation_id="delete_report_schedule",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=_CHANGED,
)
async def delete_report_schedule(
    schedule_id: ScheduleId, _: AdminUser, session: SessionDep, audit: RecorderDep
) -> None:
    """Delete a schedule and its run history (admin only); sent reports stay recorded as
    `report.sent` events."""
    await service.delete_schedule(session, audit, schedule_id)


@router.get(
    "/schedules/{schedule_id}/runs",
    response_model=RunList,
    operation_id="list_report_runs",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=audited("report.runs_listed", "reports"),
)
async def list_report_runs(
    schedule_id: ScheduleId,
    _: AdminUser,
    session: SessionDep,
    audit: RecorderDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> RunList:
    """The schedule's periods, newest first: pending, sending, sent or failed, with the
    attempts, the error of the last failed one and what was sent (admin only)."""
    return await service.list_runs(session, audit, schedule_id, limit)


@router.post(
    "/schedules/{schedule_id}/send-now",
    response_model=SendOut,
    operation_id="send_report_now",
    responses=problem_responses(401, 403, 404, 422, 502, 503),
    openapi_extra=audited("report.sent", "reports"),
)
async def send_report_now(
    schedule_id: ScheduleId,
    _: AdminUser,
    session: SessionDep,
    audit: RecorderDep,
    settings: SettingsDep,
) -> SendOut:
    """Send the schedule's latest complete period now, to its recipients (admin only).
    Recorded as `report.sent`, or `report.failed` with the reason: 503 when no SMTP server
    is configured, 502 when the server refuses or cannot be reached."""
    return await service.send_now(session, audit, schedule_id, settings)


@router.post(
    "/preview",
    response_model=PreviewOut,
    operation_id="preview_report",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=audited("report.previewed", "reports"),
)
async def preview_report(
    data: PreviewIn,
    _: AdminOrAuditor,
    session: SessionDep,
    audit: RecorderDep,
    settings: SettingsDep,
) -> PreviewOut:
    """Render a report (HTML and text, and its figures) for a period without sending it."""
    return await service.preview(session, audit, data, settings)
