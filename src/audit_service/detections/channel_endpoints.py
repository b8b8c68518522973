"""/admin/alerts/channels: where alert notifications go (e-mail, signed webhook). Admins
manage them; auditors may list and read them. The rules are notifications/service.py's
(floor 3, below auth): the routes live here, with the alerts they belong to."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from audit_service.audit_log.context import audited
from audit_service.audit_log.dependencies import RecorderDep, SessionDep
from audit_service.auth.dependencies import AdminOrAuditor, AdminUser
from audit_service.core.dependencies import SettingsDep
from audit_service.core.errors import problem_responses
from audit_service.core.routing import SafeJSONRoute
from audit_service.notifications import service
from audit_service.notifications.schemas import (
    ChannelCreated,
    ChannelIn,
    ChannelList,
    ChannelOut,
    ChannelTestOut,
    ChannelUpdate,
)

router = APIRouter(prefix="/admin/alerts/channels", tags=["detections"], route_class=SafeJSONRoute)
_CHANGED = audited("config.changed", "notifications")
ChannelId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ChannelCreated,
    operation_id="create_alert_channel",
    responses=problem_responses(401, 403, 409, 422),
    openapi_extra=_CHANGED,
)
async def create_alert_channel(
    data: ChannelIn, _: AdminUser, session: SessionDep, audit: RecorderDep, settings: SettingsDep
) -> ChannelCreated:
    """Add an e-mail or webhook channel (admin only). A webhook without secrets gets a
    generated one, shown once in this response; secrets are never shown again."""
    return await service.create_channel(session, audit, settings, data)


@router.get(
    "",
    response_model=ChannelList,
    operation_id="list_alert_channels",
    responses=problem_responses(401, 403),
    openapi_extra=audited("alert.channels_listed", "notifications"),
)
async def list_alert_channels(
    _: AdminOrAuditor, session: SessionDep, audit: RecorderDep
) -> ChannelList:
    """Every alert channel (admin, auditor)."""
    return await service.list_channels(session, audit)


@router.get(
    "/{channel_id}",
    response_model=ChannelOut,
    operation_id="get_alert_channel",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=audited("alert.channel_viewed", "notifications"),
)
async def get_alert_channel(
    channel_id: ChannelId, _: AdminOrAuditor, session: SessionDep, audit: RecorderDep
) -> ChannelOut:
    """One channel with its delivery status: last success, last error, pending groups."""
    return await service.get_channel(session, audit, channel_id)


@router.patch(
    "/{channel_id}",
    response_model=ChannelOut,
    operation_id="update_alert_channel",
    responses=problem_responses(401, 403, 404, 409, 422),
    openapi_extra=_CHANGED,
)
async def update_alert_channel(
    channel_id: ChannelId,
    data: ChannelUpdate,
    _: AdminUser,
    session: SessionDep,
    audit: RecorderDep,
    settings: SettingsDep,
) -> ChannelOut:
    """Change a channel: only the fields given (admin only). `secrets` replaces the
    webhook secrets (give two to rotate)."""
    return await service.update_channel(session, audit, settings, channel_id, data)


@router.delete(
    "/{channel_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    operation_id="delete_alert_channel",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=_CHANGED,
)
async def delete_alert_channel(
    channel_id: ChannelId, _: AdminUser, session: SessionDep, audit: RecorderDep
) -> None:
    """Delete a channel and its unsent notifications (admin only)."""
    await service.delete_channel(session, audit, channel_id)


@router.post(
    "/{channel_id}/test",
    response_model=ChannelTestOut,
    operation_id="test_alert_channel",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=audited("alert.channel_tested", "notifications"),
)
async def test_alert_channel(
    channel_id: ChannelId,
    _: AdminUser,
    session: SessionDep,
    audit: RecorderDep,
    settings: SettingsDep,
) -> ChannelTestOut:
    """Send a synthetic notification to this channel now and report the outcome
    (admin only); a failure is a 200 with `delivered: false` and the error."""
    return await service.test_channel(session, audit, settings, channel_id)
