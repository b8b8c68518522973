"""/events and /events/batch (service API keys) and /admin/actions (action schemas)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path, Response, status

from audit_service.audit_log.context import audited
from audit_service.audit_log.dependencies import RecorderDep, SessionDep
from audit_service.auth.dependencies import AdminOrAuditor, AdminUser, EventWriter
from audit_service.core.dependencies import SettingsDep
from audit_service.core.errors import problem_responses
from audit_service.core.routing import SafeJSONRoute
from audit_service.ingestion import service
from audit_service.ingestion.schemas import (
    ACTION_PATTERN,
    IDEMPOTENCY_KEY_PATTERN,
    ActionList,
    ActionSchemaOut,
    BatchAccepted,
    EventAccepted,
    EventBatch,
    EventIn,
)

router = APIRouter(tags=["ingestion"], route_class=SafeJSONRoute)
admin_router = APIRouter(prefix="/admin/actions", tags=["actions"], route_class=SafeJSONRoute)

ActionName = Annotated[str, Path(max_length=100, pattern=ACTION_PATTERN)]
_INGEST_ERRORS = problem_responses(401, 403, 413, 422, 429)


@router.post(
    "/events",
    response_model=EventAccepted,
    status_code=status.HTTP_201_CREATED,
    operation_id="ingest_event",
    responses={
        200: {"model": EventAccepted, "description": "A replay: the event was already stored"},
        **_INGEST_ERRORS,
    },
    openapi_extra=audited("ingestion.event_posted", "ingestion"),
)
async def ingest_event(
    event: EventIn,
    key: EventWriter,
    session: SessionDep,
    audit: RecorderDep,
    response: Response,
    settings: SettingsDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=IDEMPOTENCY_KEY_PATTERN,
            description="Alternative to the body's `idempotency_key` (they must agree)",
        ),
    ] = None,
) -> EventAccepted:
    """Store one event from a service (201); a replayed idempotency key answers 200 with the
    original event."""
    accepted = await service.ingest_one(
        session, audit, key, event, idempotency_key, max_actions=settings.max_actions_per_source
    )
    if accepted.duplicate:
        response.status_code = status.HTTP_200_OK
    return accepted


@router.post(
    "/events/batch",
    response_model=BatchAccepted,
    operation_id="ingest_event_batch",
    responses=_INGEST_ERRORS,
    openapi_extra=audited("ingestion.batch_posted", "ingestion"),
)
async def ingest_event_batch(
    batch: EventBatch,
    key: EventWriter,
    session: SessionDep,
    audit: RecorderDep,
    settings: SettingsDep,
) -> BatchAccepted:
    """Store up to 1,000 events (5 MiB) atomically: any invalid event → 422, nothing stored."""
    return await service.ingest_batch(
        session, audit, key, batch.events, max_actions=settings.max_actions_per_source
    )


@admin_router.get(
    "",
    response_model=ActionList,
    operation_id="list_actions",
    responses=problem_responses(401, 403),
    openapi_extra=audited("action.listed", "ingestion"),
)
async def list_actions(_: AdminOrAuditor, session: SessionDep, audit: RecorderDep) -> ActionList:
    """Every known action with its module, event count and metadata schema."""
    return await service.list_actions(session, audit)


@admin_router.get(
    "/{action}/schema",
    response_model=ActionSchemaOut,
    operation_id="get_action_schema",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=audited("action.viewed", "ingestion"),
)
async def get_action_schema(
    action: ActionName, _: AdminOrAuditor, session: SessionDep, audit: RecorderDep
) -> ActionSchemaOut:
    """The JSON Schema registered for an action's metadata."""
    return await service.get_schema(session, audit, action)


@admin_router.put(
    "/{action}/schema",
    response_model=ActionSchemaOut,
    operation_id="put_action_schema",
    responses=problem_responses(401, 403, 409, 413, 422),
    openapi_extra=audited("config.changed", "ingestion"),
)
async def put_action_schema(
    action: ActionName,
    schema: Annotated[
        dict[str, Any],
        Body(
            description="A JSON Schema (draft 2020-12 unless `$schema` says otherwise)",
            examples=[
                {
                    "type": "object",
                    "required": ["answers"],
                    "properties": {"answers": {"type": "integer", "minimum": 0}},
                }
            ],
        ),
    ],
    admin: AdminUser,
    session: SessionDep,
    audit: RecorderDep,
) -> ActionSchemaOut:
    """Register or replace the schema an action's event metadata must match (admin only)."""
    return await service.put_schema(session, audit, admin, action, schema)


@admin_router.delete(
    "/{action}/schema",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    operation_id="delete_action_schema",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=audited("config.changed", "ingestion"),
)
async def delete_action_schema(
    action: ActionName, _: AdminUser, session: SessionDep, audit: RecorderDep
) -> None:
    """Stop checking an action's metadata against a schema (admin only)."""
    await service.delete_schema(session, audit, action)
