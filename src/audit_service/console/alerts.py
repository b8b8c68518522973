"""/console/alerts: the detections' alerts (detections/service.py, as /admin/alerts): the list
with the API's filters, one alert with its evidence and a link to its events, and — admins
only, POST with the CSRF token — acknowledge and resolve. Auditors read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, get_args
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import Response
from starlette.responses import RedirectResponse

from audit_service.audit_log.context import audited
from audit_service.audit_log.dependencies import RecorderDep, SessionDep
from audit_service.console import auth
from audit_service.console.auth import Admin, Viewer
from audit_service.console.forms import parse_query
from audit_service.console.routing import ConsoleRoute
from audit_service.console.templating import render
from audit_service.core.dependencies import SigningKeyDep
from audit_service.detections import service as detections
from audit_service.detections.schemas import (
    AlertOut,
    AlertQuery,
    Resolution,
    ResolveIn,
    Severity,
    Status,
)

router = APIRouter(
    prefix="/console",
    route_class=ConsoleRoute,
    include_in_schema=False,
    dependencies=[Depends(auth.console_guard)],
)
AlertId = Annotated[int, Path(ge=1, le=2**63 - 1)]
RESOLUTIONS: tuple[tuple[str, str], ...] = (
    ("true_positive", "True positive"),
    ("false_positive", "False positive"),
    ("benign", "Benign"),
)
assert {r for r, _ in RESOLUTIONS} == set(get_args(Resolution))


def console_activity_url(evidence: dict[str, Any]) -> str | None:
    """The alert's drill-down (/admin/activity?… with the activity filters) as the console's
    activity page: the same parameters, so the same rows."""
    url = evidence.get("activity_url")
    if isinstance(url, str) and url.startswith("/admin/activity?"):
        return "/console/activity?" + url.split("?", 1)[1]
    return None


@dataclass(frozen=True, slots=True)
class AlertList:
    query: AlertQuery
    alerts: list[AlertOut]
    older: str | None
    statuses: tuple[str, ...]
    severities: tuple[str, ...]


@router.get("/alerts", openapi_extra=audited("alert.listed", "detections"))
async def alerts(
    request: Request, _: Viewer, session: SessionDep, audit: RecorderDep, key: SigningKeyDep
) -> Response:
    query = parse_query(request, AlertQuery)
    page = await detections.list_alerts(session, audit, query, key)
    older = None
    if page.next_cursor:
        params = query.model_dump(mode="json", exclude_none=True, exclude={"cursor"})
        older = "/console/alerts?" + urlencode({**params, "cursor": page.next_cursor})
    view = AlertList(
        query=query,
        alerts=page.items,
        older=older,
        statuses=get_args(Status),
        severities=get_args(Severity),
    )
    return render(request, "alerts.html", {"view": view, "active": "alerts"})


@router.get("/alerts/{alert_id}", openapi_extra=audited("alert.viewed", "detections"))
async def alert(
    request: Request, alert_id: AlertId, _: Viewer, session: SessionDep, audit: RecorderDep
) -> Response:
    found = await detections.get_alert(session, audit, alert_id)
    return render(
        request,
        "alert_detail.html",
        {
            "alert": found,
            "activity_href": console_activity_url(found.evidence),
            "resolutions": RESOLUTIONS,
            "active": "alerts",
        },
    )


def _back(alert_id: int) -> Response:
    return RedirectResponse(f"/console/alerts/{alert_id}", status_code=303)


@router.post(
    "/alerts/{alert_id}/acknowledge", openapi_extra=audited("alert.acknowledged", "detections")
)
async def acknowledge(
    alert_id: AlertId, _: Admin, session: SessionDep, audit: RecorderDep
) -> Response:
    await detections.acknowledge(session, audit, alert_id)
    return _back(alert_id)


@router.post("/alerts/{alert_id}/resolve", openapi_extra=audited("alert.resolved", "detections"))
async def resolve(
    alert_id: AlertId,
    resolution: Annotated[Resolution, Form()],
    _: Admin,
    session: SessionDep,
    audit: RecorderDep,
    note: Annotated[str | None, Form(max_length=2000)] = None,
) -> Response:
    data = ResolveIn(resolution=resolution, note=note or None)
    await detections.resolve(session, audit, alert_id, data)
    return _back(alert_id)
