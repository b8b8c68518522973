"""/admin/activity: the history, for admins and auditors."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from audit_service.activity import service
from audit_service.activity.schemas import ActivityQuery, EventOut, EventPage, ExportQuery
from audit_service.audit_log.context import audited
from audit_service.audit_log.dependencies import RecorderDep, SessionDep
from audit_service.auth.dependencies import AdminOrAuditor
from audit_service.core.dependencies import EngineDep, SigningKeyDep
from audit_service.core.errors import problem_responses
from audit_service.core.routing import SafeJSONRoute

router = APIRouter(prefix="/admin/activity", tags=["activity"], route_class=SafeJSONRoute)


class ExportResponse(StreamingResponse):
    """Streams an export and always releases its database connection, even when the body
    is never sent (client gone, response replaced)."""

    def __init__(self, opened: service.OpenExport) -> None:
        super().__init__(
            opened.chunks(),
            media_type=opened.media_type,
            headers={
                **opened.meta.headers(),
                "Content-Disposition": f'attachment; filename="{opened.filename}"',
                "Cache-Control": "no-store",
            },
        )
        self._opened = opened

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._opened.close()


_EXPORT_CONTENT = {
    "text/csv": {"schema": {"type": "string"}},
    "application/json": {"schema": {"type": "object"}},
    "application/x-ndjson": {"schema": {"type": "string"}},
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {
        "schema": {"type": "string", "format": "binary"}
    },
    "application/gzip": {"schema": {"type": "string", "format": "binary"}},
}


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
    key: SigningKeyDep,
) -> EventPage:
    """Page through recorded events, newest first, with any combination of filters."""
    return await service.list_activity(session, audit, query, key)


@router.get(
    "/export",
    response_class=ExportResponse,
    status_code=200,
    operation_id="export_activity",
    responses={
        200: {"content": _EXPORT_CONTENT, "description": "The export file, streamed"},
        **problem_responses(401, 403, 422),
    },
    openapi_extra=audited("activity.exported", "activity"),
)
async def export_activity(
    query: Annotated[ExportQuery, Query()],
    user: AdminOrAuditor,
    engine: EngineDep,
    audit: RecorderDep,
) -> ExportResponse:
    """Download every matching event (no cap) as CSV, XLSX, JSON or NDJSON, streamed."""
    return ExportResponse(await service.open_export(engine, audit, query, user.username))


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
