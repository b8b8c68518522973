"""/admin/activity: the history, for admins and auditors, and the facets of its filters
(from the statistics rollups, floor 4); /admin/export-recipients."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response, status
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from audit_service.activity import export, service
from audit_service.activity.schemas import (
    MAX_RECIPIENT_ID,
    ActivityExport,
    ActivityQuery,
    EventDetail,
    EventPage,
    EventRef,
    ExportQuery,
    RecipientIn,
    RecipientList,
    RecipientOut,
)
from audit_service.audit_log.context import audited
from audit_service.audit_log.dependencies import RecorderDep, SessionDep
from audit_service.auth.dependencies import AdminOrAuditor, AdminUser
from audit_service.core.dependencies import EngineDep, SettingsDep, SigningKeyDep
from audit_service.core.errors import problem_responses
from audit_service.core.routing import SafeJSONRoute
from audit_service.integrity.jobs import log_signer
from audit_service.stats import service as stats_service
from audit_service.stats.schemas import Facets, FacetsQuery

router = APIRouter(prefix="/admin/activity", tags=["activity"], route_class=SafeJSONRoute)
recipients_router = APIRouter(
    prefix="/admin/export-recipients", tags=["export-recipients"], route_class=SafeJSONRoute
)


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
            try:
                # A stream cut short leaves its generators suspended mid-query; closed later
                # by the garbage collector they would run their cleanup (closing the server
                # cursor, the XLSX temp file) on a connection already back in the pool.
                await export.aclose(self.body_iterator)
            finally:
                await self._opened.close()


def _binary(media_type: str) -> dict[str, Any]:
    # format: binary for OpenAPI 3.0 generators, contentMediaType as FastAPI emits for 3.1:
    # either way a generated client hands back bytes instead of decoding text.
    return {"schema": {"type": "string", "format": "binary", "contentMediaType": media_type}}


_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_EXPORT_CONTENT = {
    # application/json gets ActivityExport's schema from the response's `model`.
    "text/csv": {"schema": {"type": "string"}},
    "application/x-ndjson": {"schema": {"type": "string"}},
    _XLSX: _binary(_XLSX),
    "application/x-tar": _binary("application/x-tar"),
    "application/gzip": _binary("application/gzip"),
    "application/octet-stream": _binary("application/octet-stream"),
}
_EXPORT_HEADERS = {
    "Content-Disposition": "attachment; filename=activity-<UTC time>.<format, tar for a "
    "bundle>[.gz][.age]",
    "X-Export-Exported-By": "Username of who exported (JSON string escapes)",
    "X-Export-Exported-At": "When the export's snapshot was taken (ISO 8601, UTC)",
    "X-Export-Filters": "The filters applied, as compact JSON",
    "X-Export-Row-Count": "Exactly the number of events in the file",
    "X-Export-Service-Version": "The version of the service that wrote the file",
}
_EXPORT_BUSY = {
    "description": "Too many exports in flight on this instance; retry after Retry-After",
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


# Declared before /{event_id}: Starlette takes the first route that matches, and "facets"
# must not reach the event-id parameter (it would be a 422 there, not this route).
@router.get(
    "/facets",
    response_model=Facets,
    operation_id="activity_facets",
    responses=problem_responses(401, 403, 422),
    # The rollups answer it, as they answer /admin/stats: one action for every read of them.
    openapi_extra=audited("stats.viewed", "stats"),
)
async def activity_facets(
    query: Annotated[FacetsQuery, Query()],
    _: AdminOrAuditor,
    session: SessionDep,
    audit: RecorderDep,
) -> Facets:
    """The values of an activity filter (`action`, `module`, `source`, `actor`,
    `tenant_id`) with their event counts, most frequent first, for filter dropdowns;
    `prefix` narrows them as the user types. Counts are all-time (no period or other
    filters) and kept by the `stats.rollup` job, so they lag the log by its freshness
    (`GET /admin/stats/freshness`)."""
    return await stats_service.facets(session, audit, query)


@router.get(
    "/export",
    response_class=ExportResponse,
    status_code=200,
    operation_id="export_activity",
    responses={
        200: {
            "model": ActivityExport,
            "content": _EXPORT_CONTENT,
            "description": "The export file, streamed",
            "headers": {
                name: {
                    "description": text,
                    "schema": {"type": "string"},
                    "required": True,
                }
                for name, text in _EXPORT_HEADERS.items()
            },
        },
        **problem_responses(401, 403, 409, 422),
        503: {**problem_responses(503)[503], **_EXPORT_BUSY},
    },
    openapi_extra=audited("activity.exported", "activity"),
)
async def export_activity(
    query: Annotated[ExportQuery, Query()],
    user: AdminOrAuditor,
    engine: EngineDep,
    audit: RecorderDep,
    settings: SettingsDep,
    request: Request,
) -> ExportResponse:
    """Download every matching event (no cap) as CSV, XLSX, JSON, NDJSON or a signed
    bundle (checkable offline with `audit-service verify-bundle`), streamed; optionally
    encrypted to a registered recipient (age).

    A bundle holds the events the newest signed checkpoint covers (409 while there is
    none). Each export holds a database connection while it streams, so an instance runs
    at most `AUDIT_MAX_CONCURRENT_EXPORTS` at once; past that the answer is 503 with
    Retry-After."""
    slots = service.export_slots(request.app)
    return ExportResponse(
        await service.open_export(engine, audit, query, user.username, slots, log_signer(settings))
    )


@router.get(
    "/{event_id}",
    response_model=EventDetail,
    operation_id="get_activity",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=audited("activity.viewed", "activity"),
)
async def get_activity(
    event_id: Annotated[
        EventRef, Path(description="The event's `event_id` (UUID), or its numeric `id`")
    ],
    _: AdminOrAuditor,
    session: SessionDep,
    audit: RecorderDep,
) -> EventDetail:
    """One recorded event, with its log position."""
    return await service.get_activity(session, audit, event_id)


@recipients_router.post(
    "",
    response_model=RecipientOut,
    status_code=status.HTTP_201_CREATED,
    operation_id="create_export_recipient",
    responses=problem_responses(401, 403, 409, 422),
    openapi_extra=audited("config.changed", "activity"),
)
async def create_export_recipient(
    data: RecipientIn, _: AdminUser, session: SessionDep, audit: RecorderDep
) -> RecipientOut:
    """Register an age X25519 public key that exports can be encrypted to (admin only)."""
    return await service.create_recipient(session, audit, data)


@recipients_router.get(
    "",
    response_model=RecipientList,
    operation_id="list_export_recipients",
    responses=problem_responses(401, 403),
    openapi_extra=audited("export_recipient.listed", "activity"),
)
async def list_export_recipients(
    _: AdminOrAuditor, session: SessionDep, audit: RecorderDep
) -> RecipientList:
    """The registered export recipients, oldest first (admins and auditors, who pick one
    with `?recipient=<id>` on an export)."""
    return await service.list_recipients(session, audit)


@recipients_router.delete(
    "/{recipient_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    operation_id="delete_export_recipient",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=audited("config.changed", "activity"),
)
async def delete_export_recipient(
    recipient_id: Annotated[int, Path(ge=1, le=MAX_RECIPIENT_ID)],
    _: AdminUser,
    session: SessionDep,
    audit: RecorderDep,
) -> None:
    """Remove an export recipient: exports can no longer be encrypted to it (admin only)."""
    await service.delete_recipient(session, audit, recipient_id)
