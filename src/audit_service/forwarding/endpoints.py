"""/admin/forwarding: destinations that receive the log (webhook, syslog, Splunk HEC),
their status, test sends, dead letters and replays (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from audit_service.audit_log.context import audited
from audit_service.audit_log.dependencies import RecorderDep, SessionDep
from audit_service.auth.dependencies import AdminUser
from audit_service.core.dependencies import SettingsDep
from audit_service.core.errors import problem_responses
from audit_service.core.routing import SafeJSONRoute
from audit_service.forwarding import service
from audit_service.forwarding.schemas import (
    DeadLetterList,
    DestinationCreated,
    DestinationIn,
    DestinationList,
    DestinationOut,
    DestinationUpdate,
    ReplayIn,
    ReplayList,
    ReplayOut,
    RetryOut,
    StatusOut,
    TestOut,
)

router = APIRouter(
    prefix="/admin/forwarding/destinations", tags=["forwarding"], route_class=SafeJSONRoute
)
_CHANGED = audited("config.changed", "forwarding")
DestinationId = Annotated[int, Path(ge=1, le=2**31 - 1)]
DeadLetterId = Annotated[int, Path(ge=1, le=2**62)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DestinationCreated,
    operation_id="create_forward_destination",
    responses=problem_responses(401, 403, 409, 422),
    openapi_extra=_CHANGED,
)
async def create_forward_destination(
    data: DestinationIn,
    _: AdminUser,
    session: SessionDep,
    audit: RecorderDep,
    settings: SettingsDep,
) -> DestinationCreated:
    """Add a destination (admin only). Secrets are write-only; a webhook without secrets
    gets a generated one, shown once in this response. Delivery starts at the current end
    of the log unless `start` is `beginning`."""
    return await service.create_destination(session, audit, settings, data)


@router.get(
    "",
    response_model=DestinationList,
    operation_id="list_forward_destinations",
    responses=problem_responses(401, 403),
    openapi_extra=audited("forwarding.destinations_listed", "forwarding"),
)
async def list_forward_destinations(
    _: AdminUser, session: SessionDep, audit: RecorderDep
) -> DestinationList:
    """Every destination (admin only)."""
    return await service.list_destinations(session, audit)


@router.get(
    "/{destination_id}",
    response_model=DestinationOut,
    operation_id="get_forward_destination",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=audited("forwarding.destination_viewed", "forwarding"),
)
async def get_forward_destination(
    destination_id: DestinationId, _: AdminUser, session: SessionDep, audit: RecorderDep
) -> DestinationOut:
    """One destination (admin only)."""
    return await service.get_destination(session, audit, destination_id)


@router.patch(
    "/{destination_id}",
    response_model=DestinationOut,
    operation_id="update_forward_destination",
    responses=problem_responses(401, 403, 404, 409, 422),
    openapi_extra=_CHANGED,
)
async def update_forward_destination(
    destination_id: DestinationId,
    data: DestinationUpdate,
    _: AdminUser,
    session: SessionDep,
    audit: RecorderDep,
    settings: SettingsDep,
) -> DestinationOut:
    """Change a destination: only the fields given; config and secrets fields merge
    (admin only)."""
    return await service.update_destination(session, audit, settings, destination_id, data)


@router.post(
    "/{destination_id}/pause",
    response_model=DestinationOut,
    operation_id="pause_forward_destination",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=_CHANGED,
)
async def pause_forward_destination(
    destination_id: DestinationId, _: AdminUser, session: SessionDep, audit: RecorderDep
) -> DestinationOut:
    """Stop delivering (the cursor stays: resume picks up where it stopped)."""
    return await service.set_state(session, audit, destination_id, paused=True)


@router.post(
    "/{destination_id}/resume",
    response_model=DestinationOut,
    operation_id="resume_forward_destination",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=_CHANGED,
)
async def resume_forward_destination(
    destination_id: DestinationId, _: AdminUser, session: SessionDep, audit: RecorderDep
) -> DestinationOut:
    """Deliver again (also after `failing` or `disabled`), retrying at once."""
    return await service.set_state(session, audit, destination_id, paused=False)


@router.delete(
    "/{destination_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    operation_id="delete_forward_destination",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=_CHANGED,
)
async def delete_forward_destination(
    destination_id: DestinationId, _: AdminUser, session: SessionDep, audit: RecorderDep
) -> None:
    """Delete a destination with its dead letters and replays (admin only)."""
    await service.delete_destination(session, audit, destination_id)


@router.get(
    "/{destination_id}/status",
    response_model=StatusOut,
    operation_id="get_forward_destination_status",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=audited("forwarding.status_viewed", "forwarding"),
)
async def get_forward_destination_status(
    destination_id: DestinationId, _: AdminUser, session: SessionDep, audit: RecorderDep
) -> StatusOut:
    """State, lag (age of the oldest event not yet delivered), backlog, totals, last
    success and last error (admin only)."""
    return await service.status(session, audit, destination_id)


@router.post(
    "/{destination_id}/test",
    response_model=TestOut,
    operation_id="test_forward_destination",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=audited("forwarding.tested", "forwarding"),
)
async def test_forward_destination(
    destination_id: DestinationId,
    _: AdminUser,
    session: SessionDep,
    audit: RecorderDep,
    settings: SettingsDep,
) -> TestOut:
    """Send one synthetic `forwarding.test` event now and report the receiver's answer
    (status code, time, error): 200 either way (admin only)."""
    return await service.test_destination(session, audit, settings, destination_id)


@router.get(
    "/{destination_id}/dead-letters",
    response_model=DeadLetterList,
    operation_id="list_forward_dead_letters",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=audited("forwarding.dead_letters_listed", "forwarding"),
)
async def list_forward_dead_letters(
    destination_id: DestinationId,
    _: AdminUser,
    session: SessionDep,
    audit: RecorderDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeadLetterList:
    """Events the destination rejected for good, oldest first (admin only)."""
    return await service.list_dead_letters(session, audit, destination_id, limit)


@router.post(
    "/{destination_id}/dead-letters/{dead_letter_id}/retry",
    response_model=RetryOut,
    operation_id="retry_forward_dead_letter",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=audited("forwarding.dead_letter_retried", "forwarding"),
)
async def retry_forward_dead_letter(
    destination_id: DestinationId,
    dead_letter_id: DeadLetterId,
    _: AdminUser,
    session: SessionDep,
    audit: RecorderDep,
    settings: SettingsDep,
) -> RetryOut:
    """Send a dead-lettered event again now; delivered: it leaves the list (admin only)."""
    return await service.retry_dead_letter(session, audit, settings, destination_id, dead_letter_id)


@router.delete(
    "/{destination_id}/dead-letters/{dead_letter_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    operation_id="discard_forward_dead_letter",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=audited("forwarding.dead_letter_discarded", "forwarding"),
)
async def discard_forward_dead_letter(
    destination_id: DestinationId,
    dead_letter_id: DeadLetterId,
    _: AdminUser,
    session: SessionDep,
    audit: RecorderDep,
) -> None:
    """Drop a dead letter (the event stays in the log) (admin only)."""
    await service.discard_dead_letter(session, audit, destination_id, dead_letter_id)


@router.post(
    "/{destination_id}/replays",
    status_code=status.HTTP_201_CREATED,
    response_model=ReplayOut,
    operation_id="start_forward_replay",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=audited("forwarding.replay_started", "forwarding"),
)
async def start_forward_replay(
    destination_id: DestinationId,
    data: ReplayIn,
    _: AdminUser,
    session: SessionDep,
    audit: RecorderDep,
) -> ReplayOut:
    """Send a range of the log again (positions, or recorded_at times), beside live
    delivery; the destination's filter and format apply (admin only)."""
    return await service.start_replay(session, audit, destination_id, data)


@router.get(
    "/{destination_id}/replays",
    response_model=ReplayList,
    operation_id="list_forward_replays",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=audited("forwarding.replays_listed", "forwarding"),
)
async def list_forward_replays(
    destination_id: DestinationId,
    _: AdminUser,
    session: SessionDep,
    audit: RecorderDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ReplayList:
    """The destination's replays, newest first, with their progress (admin only)."""
    return await service.list_replays(session, audit, destination_id, limit)
