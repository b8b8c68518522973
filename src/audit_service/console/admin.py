"""/console/admin: administration, for administrators only (auditors and users get the polite
403 page): users, API keys, action schemas, report schedules, forwarding destinations and
alert channels — each a list and its main actions, through the same services as the API's
/admin/* routes (auth/, ingestion/, reports/, forwarding/, notifications/), recorded alike.
Retention (which auditors may read, as in the API) is console/retention.py.

A change is a POST with the CSRF token, then a redirect back to the list with a fixed notice
code (never text from the address); an answer to read once (a new API key's secret, a test
delivery's result) is rendered directly."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import Response
from starlette.responses import RedirectResponse

from audit_service.audit_log.context import audited
from audit_service.audit_log.dependencies import RecorderDep, SessionDep
from audit_service.auth import service as auth_service
from audit_service.auth.schemas import SCOPES, ApiKeyCreate, UserCreate, UserUpdate
from audit_service.console import auth
from audit_service.console.auth import Admin
from audit_service.console.forms import validated_form
from audit_service.console.routing import ConsoleRoute
from audit_service.console.templating import render
from audit_service.core.dependencies import SettingsDep
from audit_service.forwarding import service as forwarding
from audit_service.forwarding.schemas import ReplayIn, StatusOut
from audit_service.ingestion import service as ingestion
from audit_service.notifications import service as notifications
from audit_service.reports import service as reports

router = APIRouter(
    prefix="/console/admin",
    route_class=ConsoleRoute,
    include_in_schema=False,
    dependencies=[Depends(auth.console_guard)],
)
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
PAGE_SIZE = 50
SECTIONS = (
    ("users", "Users", "/console/admin/users", "Accounts, roles, sign-in sessions"),
    ("api-keys", "API keys", "/console/admin/api-keys", "Keys of the services that send events"),
    ("actions", "Action schemas", "/console/admin/actions", "Actions seen and their schemas"),
    ("reports", "Report schedules", "/console/admin/reports", "Scheduled e-mail reports"),
    ("forwarding", "Forwarding", "/console/admin/forwarding", "Destinations, lag, test, replay"),
    ("channels", "Alert channels", "/console/admin/channels", "Where alerts are sent"),
    ("retention", "Retention", "/console/admin/retention", "Rules, preview, legal holds, archives"),
)
# Notices after a change, by code: the address carries a code, never the text.
NOTICES = {
    "user-created": "The user was created.",
    "user-updated": "The user was updated.",
    "sessions-revoked": "Every session of the user was revoked.",
    "key-revoked": "The API key was revoked.",
    "paused": "The destination was paused.",
    "resumed": "The destination was resumed.",
    "replay-started": "The replay was started.",
}
VIEWED = audited("console.viewed", "console")


def _back(section: str, notice: str) -> Response:
    return RedirectResponse(f"/console/admin/{section}?notice={notice}", status_code=303)


def _notice(notice: str | None) -> str | None:
    return NOTICES.get(notice or "")


def _page(request: Request, template: str, section: str, **context: Any) -> Response:
    return render(
        request,
        template,
        {"active": "admin", "section": section, "sections": SECTIONS, "notice": None, **context},
    )


@router.get("", openapi_extra=VIEWED)
async def index(request: Request, _: Admin, audit: RecorderDep) -> Response:
    audit.describe(description="Viewed the console's administration")
    return _page(request, "admin_index.html", "")


# --- users -----------------------------------------------------------------------------------


@router.get("/users", openapi_extra=audited("user.listed", "users"))
async def users(
    request: Request,
    admin: Admin,
    session: SessionDep,
    audit: RecorderDep,
    page: Annotated[int, Query(ge=1, le=10**6)] = 1,
    notice: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    actor = auth_service.actor_of(admin.user)
    listed = await auth_service.list_users(session, audit, actor, page, PAGE_SIZE)
    return _page(request, "admin_users.html", "users", users=listed, notice=_notice(notice))


@router.post("/users", openapi_extra=audited("user.created", "users"))
async def create_user(
    admin: Admin,
    session: SessionDep,
    audit: RecorderDep,
    username: Annotated[str, Form(max_length=200)],
    password: Annotated[str, Form(max_length=1024)],
    role: Annotated[str, Form(max_length=20)],
    full_name: Annotated[str, Form(max_length=200)] = "",
    email: Annotated[str, Form(max_length=320)] = "",
) -> Response:
    data = validated_form(
        UserCreate,
        {
            "username": username,
            "password": password,
            "role": role,
            "full_name": full_name or None,
            "email": email or None,
        },
    )
    await auth_service.create_user(session, audit, auth_service.actor_of(admin.user), data)
    return _back("users", "user-created")


@router.post("/users/{user_id}", openapi_extra=audited("user.updated", "users"))
async def update_user(
    user_id: Id,
    admin: Admin,
    session: SessionDep,
    audit: RecorderDep,
    role: Annotated[str | None, Form(max_length=20)] = None,
    is_active: Annotated[str | None, Form(max_length=5)] = None,
) -> Response:
    values: dict[str, Any] = {}
    if role:
        values["role"] = role
    if is_active in ("true", "false"):
        values["is_active"] = is_active == "true"
    data = validated_form(UserUpdate, values)
    actor = auth_service.actor_of(admin.user)
    await auth_service.update_user(session, audit, actor, user_id, data)
    return _back("users", "user-updated")


@router.post(
    "/users/{user_id}/revoke-sessions", openapi_extra=audited("user.sessions_revoked", "users")
)
async def revoke_sessions(
    user_id: Id, admin: Admin, session: SessionDep, audit: RecorderDep
) -> Response:
    actor = auth_service.actor_of(admin.user)
    await auth_service.revoke_sessions(session, audit, actor, user_id)
    return _back("users", "sessions-revoked")


# --- API keys --------------------------------------------------------------------------------


@router.get("/api-keys", openapi_extra=audited("api_key.listed", "auth"))
async def api_keys(
    request: Request,
    admin: Admin,
    session: SessionDep,
    audit: RecorderDep,
    page: Annotated[int, Query(ge=1, le=10**6)] = 1,
    notice: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    actor = auth_service.actor_of(admin.user)
    listed = await auth_service.list_api_keys(session, audit, actor, page, PAGE_SIZE)
    return _page(
        request,
        "admin_api_keys.html",
        "api-keys",
        keys=listed,
        scopes=SCOPES,
        created=None,
        notice=_notice(notice),
    )


@router.post("/api-keys", openapi_extra=audited("api_key.created", "auth"))
async def create_api_key(
    request: Request,
    admin: Admin,
    session: SessionDep,
    audit: RecorderDep,
    name: Annotated[str, Form(max_length=200)],
    scopes: Annotated[list[str] | None, Form()] = None,
) -> Response:
    data = validated_form(ApiKeyCreate, {"name": name, "scopes": scopes or list(SCOPES)})
    actor = auth_service.actor_of(admin.user)
    created = await auth_service.create_api_key(session, audit, actor, data)
    # The secret is shown once, on this answer (no-store), and never again.
    return _page(request, "admin_api_key_created.html", "api-keys", created=created)


@router.post("/api-keys/{key_id}/revoke", openapi_extra=audited("api_key.revoked", "auth"))
async def revoke_api_key(
    key_id: Id, admin: Admin, session: SessionDep, audit: RecorderDep
) -> Response:
    actor = auth_service.actor_of(admin.user)
    await auth_service.revoke_api_key(session, audit, actor, key_id)
    return _back("api-keys", "key-revoked")


# --- action schemas --------------------------------------------------------------------------


@router.get("/actions", openapi_extra=audited("action.listed", "ingestion"))
async def actions(request: Request, _: Admin, session: SessionDep, audit: RecorderDep) -> Response:
    listed = await ingestion.list_actions(session, audit)
    return _page(request, "admin_actions.html", "actions", actions=listed.items)


# --- report schedules ------------------------------------------------------------------------


@router.get("/reports", openapi_extra=audited("report.schedules_listed", "reports"))
async def report_schedules(
    request: Request, _: Admin, session: SessionDep, audit: RecorderDep
) -> Response:
    listed = await reports.list_schedules(session, audit)
    return _page(request, "admin_reports.html", "reports", schedules=listed.items, sent=None)


@router.post("/reports/{schedule_id}/send-now", openapi_extra=audited("report.sent", "reports"))
async def send_report_now(
    request: Request,
    schedule_id: Id,
    _: Admin,
    session: SessionDep,
    audit: RecorderDep,
    settings: SettingsDep,
) -> Response:
    sent = await reports.send_now(session, audit, schedule_id, settings)
    listed = await reports.list_schedules(session, audit)
    return _page(request, "admin_reports.html", "reports", schedules=listed.items, sent=sent)


# --- forwarding ------------------------------------------------------------------------------


@router.get("/forwarding", openapi_extra=audited("forwarding.destinations_listed", "forwarding"))
async def destinations(
    request: Request,
    _: Admin,
    session: SessionDep,
    audit: RecorderDep,
    notice: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    listed = await forwarding.list_destinations(session, audit)
    statuses: dict[int, StatusOut] = {}
    for d in listed.items:
        statuses[d.id] = await forwarding.status(session, audit, d.id)
    audit.describe(description="Viewed the forwarding destinations", returned=len(listed.items))
    return _page(
        request,
        "admin_forwarding.html",
        "forwarding",
        destinations=listed.items,
        statuses=statuses,
        tested=None,
        notice=_notice(notice),
    )


@router.post(
    "/forwarding/{destination_id}/test", openapi_extra=audited("forwarding.tested", "forwarding")
)
async def test_destination(
    request: Request,
    destination_id: Id,
    _: Admin,
    session: SessionDep,
    audit: RecorderDep,
    settings: SettingsDep,
) -> Response:
    result = await forwarding.test_destination(session, audit, settings, destination_id)
    return _page(
        request,
        "admin_test_result.html",
        "forwarding",
        result=result,
        what=f"forwarding destination {destination_id}",
        back="/console/admin/forwarding",
    )


@router.post(
    "/forwarding/{destination_id}/pause", openapi_extra=audited("config.changed", "forwarding")
)
async def pause_destination(
    destination_id: Id, _: Admin, session: SessionDep, audit: RecorderDep
) -> Response:
    await forwarding.set_state(session, audit, destination_id, paused=True)
    return _back("forwarding", "paused")


@router.post(
    "/forwarding/{destination_id}/resume", openapi_extra=audited("config.changed", "forwarding")
)
async def resume_destination(
    destination_id: Id, _: Admin, session: SessionDep, audit: RecorderDep
) -> Response:
    await forwarding.set_state(session, audit, destination_id, paused=False)
    return _back("forwarding", "resumed")


@router.post(
    "/forwarding/{destination_id}/replay",
    openapi_extra=audited("forwarding.replay_started", "forwarding"),
)
async def replay_destination(
    destination_id: Id,
    _: Admin,
    session: SessionDep,
    audit: RecorderDep,
    since: Annotated[str, Form(max_length=40)] = "",
    until: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    data = validated_form(ReplayIn, {"since": since or None, "until": until or None})
    await forwarding.start_replay(session, audit, destination_id, data)
    return _back("forwarding", "replay-started")


# --- alert channels --------------------------------------------------------------------------


@router.get("/channels", openapi_extra=audited("alert.channels_listed", "notifications"))
async def channels(request: Request, _: Admin, session: SessionDep, audit: RecorderDep) -> Response:
    listed = await notifications.list_channels(session, audit)
    return _page(request, "admin_channels.html", "channels", channels=listed.items)


@router.post(
    "/channels/{channel_id}/test", openapi_extra=audited("alert.channel_tested", "notifications")
)
async def test_channel(
    request: Request,
    channel_id: Id,
    _: Admin,
    session: SessionDep,
    audit: RecorderDep,
    settings: SettingsDep,
) -> Response:
    result = await notifications.test_channel(session, audit, settings, channel_id)
    return _page(
        request,
        "admin_test_result.html",
        "channels",
        result=result,
        what=f"alert channel {channel_id}",
        back="/console/admin/channels",
    )
