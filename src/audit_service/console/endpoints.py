"""/console: sign-in, sign-out and the activity pages. Thin: one service call each, then a
template. Every route is recorded like the API's (`audited(...)`); none is in the OpenAPI
document (pages, not API)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.responses import RedirectResponse

from audit_service.activity import service as activity_service
from audit_service.activity.endpoints import ExportResponse
from audit_service.activity.schemas import ActivityFilters, EventRef, ExportQuery
from audit_service.audit_log.context import audited
from audit_service.audit_log.dependencies import RecorderDep, SessionDep
from audit_service.console import auth
from audit_service.console import service as console_service
from audit_service.console.auth import Viewer
from audit_service.console.routing import ConsoleRoute, safe_next
from audit_service.console.tail import tail_response
from audit_service.console.templating import render
from audit_service.core.dependencies import (
    EngineDep,
    RateLimiterDep,
    SettingsDep,
    SigningKeyDep,
)
from audit_service.core.errors import NotFound
from audit_service.integrity.jobs import log_signer
from audit_service.stats.schemas import MAX_PREFIX, FacetField

router = APIRouter(
    prefix="/console",
    route_class=ConsoleRoute,
    include_in_schema=False,
    dependencies=[Depends(auth.console_guard)],
)
VIEWED = audited("console.viewed", "console")


@router.get("", openapi_extra=VIEWED)
async def index(_: Viewer) -> Response:
    return RedirectResponse("/console/activity", status_code=303)


@router.get("/login", openapi_extra=VIEWED)
async def login_page(request: Request, settings: SettingsDep, next: str | None = None) -> Response:
    return _login_form(request, settings, next)


def _login_form(
    request: Request,
    settings: SettingsDep,
    next: str | None,
    *,
    message: str | None = None,
    username: str = "",
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    policy = auth.cookie_policy(request, settings)
    pre = auth.new_pre_session(request)
    response = render(
        request,
        "login.html",
        {"next": safe_next(next), "message": message, "username": username},
        status_code=status_code,
        headers=headers,
    )
    response.set_cookie(
        policy.csrf, pre, httponly=True, secure=policy.secure, samesite="strict", path="/"
    )
    return response


@router.post("/login", openapi_extra=audited("auth.login", "auth"))
async def login(
    request: Request,
    session: SessionDep,
    audit: RecorderDep,
    settings: SettingsDep,
    key: SigningKeyDep,
    limiter: RateLimiterDep,
    username: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    next: Annotated[str | None, Form(max_length=2000)] = None,
) -> Response:
    result = await console_service.sign_in(
        session, audit, settings, key, limiter, username=username, password=password
    )
    if result.token is None:
        headers = {"Retry-After": str(result.retry_after)} if result.retry_after else None
        return _login_form(
            request,
            settings,
            next,
            message=result.message,
            username=username[:200],
            status_code=result.status,
            headers=headers,
        )
    policy = auth.cookie_policy(request, settings)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        policy.session,
        result.token.access_token,
        max_age=result.token.expires_in,
        httponly=True,
        secure=policy.secure,
        samesite="strict",
        path="/",
    )
    response.delete_cookie(policy.csrf, path="/", secure=policy.secure, httponly=True)
    return response


@router.post("/logout", openapi_extra=audited("auth.logout", "auth"))
async def logout(
    request: Request,
    principal: Viewer,
    session: SessionDep,
    audit: RecorderDep,
    settings: SettingsDep,
) -> Response:
    await console_service.sign_out(session, audit, principal.user, principal.claims)
    policy = auth.cookie_policy(request, settings)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(policy.session, path="/", secure=policy.secure, httponly=True)
    return response


@router.get("/activity", openapi_extra=audited("activity.viewed", "activity"))
async def activity(
    request: Request, _: Viewer, session: SessionDep, audit: RecorderDep, key: SigningKeyDep
) -> Response:
    query = console_service.parse_activity(request.query_params.multi_items())
    view = await console_service.activity_view(session, audit, query, key)
    return render(request, "activity.html", {"view": view, "active": "activity"})


@router.get("/activity/suggest", openapi_extra=audited("stats.viewed", "stats"))
async def suggest(
    _: Viewer,
    session: SessionDep,
    audit: RecorderDep,
    field: Annotated[FacetField, Query()],
    prefix: Annotated[str | None, Query(max_length=MAX_PREFIX)] = None,
) -> JSONResponse:
    values = await console_service.suggestions(session, audit, field, prefix)
    return JSONResponse(values, headers={"Cache-Control": "no-store"})


@router.get("/activity/histogram", openapi_extra=audited("stats.viewed", "stats"))
async def histogram(
    request: Request,
    _: Viewer,
    session: SessionDep,
    audit: RecorderDep,
    settings: SettingsDep,
) -> JSONResponse:
    """The volume bars above the activity rows (fetched by histogram.js): event counts over
    time for exactly the page's filters."""
    query = console_service.parse_activity(
        request.query_params.multi_items(), console_service.HistogramQuery
    )
    found = await console_service.histogram(session, audit, query, settings.stats_default_tz)
    return JSONResponse(found, headers={"Cache-Control": "no-store"})


@router.get("/activity/export", openapi_extra=audited("activity.exported", "activity"))
async def export(
    request: Request,
    principal: Viewer,
    engine: EngineDep,
    audit: RecorderDep,
    settings: SettingsDep,
) -> Response:
    """The API's export (same formats, counts, headers and event) of the page's filters."""
    query = console_service.parse_activity(request.query_params.multi_items(), ExportQuery)
    slots = activity_service.export_slots(request.app)
    opened = await activity_service.open_export(
        engine, audit, query, principal.username, slots, log_signer(settings)
    )
    return ExportResponse(opened)


@router.get("/activity/stream", openapi_extra=audited("activity.viewed", "activity"))
async def stream(
    request: Request,
    principal: Viewer,
    session: SessionDep,
    audit: RecorderDep,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> Response:
    """Server-sent events: each matching event as a row, its log position as the SSE id,
    so the browser's reconnect (Last-Event-ID) resumes with no gap and no duplicate."""
    items = [(k, v) for k, v in request.query_params.multi_items() if k != "after"]
    filters = console_service.parse_activity(items, ActivityFilters)
    after = console_service.parse_position(last_event_id or request.query_params.get("after"))
    state = await console_service.tail_begin(session, audit, filters, after)
    token = request.cookies[auth.cookie_policy(request, request.app.state.settings).session]
    sessions = request.app.state.sessionmaker
    return tail_response(request, sessions, state, token, principal.claims)


@router.get("/activity/{event_ref}", openapi_extra=audited("activity.viewed", "activity"))
async def event_page(
    request: Request,
    _: Viewer,
    session: SessionDep,
    audit: RecorderDep,
    event_ref: Annotated[EventRef, Path()],
) -> Response:
    view = await console_service.detail_view(session, audit, event_ref)
    return render(request, "event.html", {"d": view, "active": "activity"})


@router.get("/activity/{event_ref}/drawer", openapi_extra=audited("activity.viewed", "activity"))
async def event_drawer(
    request: Request,
    _: Viewer,
    session: SessionDep,
    audit: RecorderDep,
    event_ref: Annotated[EventRef, Path()],
) -> Response:
    view = await console_service.detail_view(session, audit, event_ref)
    return render(request, "_drawer.html", {"d": view, "active": "activity"})


# Included after every other console router (console/app.py): a page that does not exist.
fallback_router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)


@fallback_router.get("/{rest:path}", openapi_extra=VIEWED)
async def not_found(rest: str) -> Response:
    raise NotFound(f"There is no console page at /console/{rest}.")
