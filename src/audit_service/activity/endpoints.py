"""/admin/activity: the history, for admins and auditors."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from audit_service.activity import service
from audit_service.activity.schemas import ActivityQuery, EventOut, EventPage
from audit_service.audit_log.dependencies import RecorderDep, SessionDep
from audit_service.audit_log.recorder import audited
from audit_service.auth.dependencies import AdminOrAuditor
from audit_service.core.errors import problem_responses

router = APIRouter(prefix="/admin/activity", tags=["activity"])


@router.get(
    "",
    response_model=EventPage,
    operation_id="list_activity",
    responses=problem_responses(401, 403, 422),
    openapi_extra=audited("activity.viewed", "activity"),
)
async def list_activity(
    query: Annotated[ActivityQuery, Query()],
    _: AdminOrAuditor,
    session: SessionDep,
    audit: RecorderDep,
) -> EventPage:
    """Page through recorded events, newest first, with any combination of filters."""
    return await service.list_activity(session, audit, query)


@router.get(
    "/{event_id}",
    response_model=EventOut,
    operation_id="get_activity",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=audited("activity.viewed", "activity"),
)
async def get_activity(
    event_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    _: AdminOrAuditor,
    session: SessionDep,
    audit: RecorderDep,
) -> EventOut:
    """One recorded event."""
    return await service.get_activity(session, audit, event_id)
