"""/console/admin/retention: the retention rules in evaluation order, the preview of the next
run, legal holds and archive segments, through retention/service.py exactly as the API's
/admin/retention routes use it (same validation, same events). Reading mirrors the API's
roles: admins and auditors; every change: admins only, a POST with the CSRF token.

A refused change (the input model's or the service's own rule: a shadowed rule, a taken
name or position) is shown on the page next to its form, with the values sent, and the
request is recorded as the failure it is (the status is the API's: 422 or 409)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse

from audit_service.audit_log.context import Actor, audited
from audit_service.audit_log.dependencies import RecorderDep, SessionDep
from audit_service.audit_log.sink import EventSink
from audit_service.console import auth
from audit_service.console.admin import SECTIONS
from audit_service.console.auth import Admin, ConsolePrincipal, Viewer
from audit_service.console.forms import validated_form
from audit_service.console.routing import ConsoleRoute
from audit_service.console.templating import render
from audit_service.core.errors import AppError, Conflict, FieldError, ValidationFailed
from audit_service.retention import service
from audit_service.retention.policy import MATCH_KEYS
from audit_service.retention.schemas import HoldIn, PolicyIn, PolicyOut, PolicyUpdate

router = APIRouter(
    prefix="/console/admin/retention",
    route_class=ConsoleRoute,
    include_in_schema=False,
    dependencies=[Depends(auth.console_guard)],
)
PAGE = "/console/admin/retention"
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]
ARCHIVES_SHOWN = 20
OUTCOMES = ("success", "failure", "denied", "error")
# The HoldFilter fields the hold form offers, by their /admin/activity names.
HOLD_FIELDS = (
    ("actor", "Actor id or name"),
    ("actor_id", "Actor id"),
    ("action", "Actions (comma-separated)"),
    ("module", "Module"),
    ("source", "Source"),
    ("tenant_id", "Tenant"),
    ("since", "From (ISO 8601)"),
    ("until", "Until (exclusive)"),
    ("ip", "IP or CIDR"),
    ("target_type", "Target type"),
    ("target_id", "Target id"),
)
NOTICES = {
    "policy-created": "The retention rule was created.",
    "policy-updated": "The retention rule was changed.",
    "policy-moved": "The retention rule was moved.",
    "policy-deleted": "The retention rule was deleted (its archive segments stay).",
    "hold-created": "The legal hold was placed.",
    "hold-released": "The legal hold was released.",
}
_CHANGED = audited("config.changed", "retention")


class _Aside:
    """A sink for the reads that re-render the page after a refused change: the request's
    event is the refused change, not a listing."""

    actor: Actor = Actor()

    def describe(self, **_: Any) -> None:
        pass


@dataclass(slots=True)
class Refused:
    """A refused change, shown at its form: which form, why, and what was sent."""

    form: str
    title: str
    detail: str | None
    errors: list[FieldError]
    values: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Ordered:
    """A rule with the positions that would move it one place up or down (None: no free
    position between its neighbours; the edit form's position field still can)."""

    policy: PolicyOut
    up: int | None
    down: int | None


def _moves(policies: list[PolicyOut]) -> list[Ordered]:
    ordered = sorted(policies, key=lambda p: p.position)
    positions = [p.position for p in ordered]
    rows = []
    for i, p in enumerate(ordered):
        up = down = None
        if i >= 1:
            low, high = (positions[i - 2] if i >= 2 else -1), positions[i - 1]
            up = (low + high) // 2 if high - low >= 2 else None
        if i + 1 < len(ordered):
            low = positions[i + 1]
            high = positions[i + 2] if i + 2 < len(ordered) else low + 20
            down = (low + high) // 2 if high - low >= 2 else None
        rows.append(Ordered(p, up, down))
    return rows


async def _page(
    request: Request,
    session: AsyncSession,
    sink: EventSink,
    principal: ConsolePrincipal,
    *,
    notice: str | None = None,
    refused: Refused | None = None,
    before_id: int | None = None,
    status_code: int = 200,
) -> Response:
    policies = await service.list_policies(session, sink)
    preview = await service.preview(session, sink)
    holds = await service.list_holds(session, sink, active=False)
    archives = await service.list_archives(
        session, sink, policy_id=None, limit=ARCHIVES_SHOWN, before_id=before_id
    )
    sink.describe(
        target_type="retention_policy",
        description="Viewed the console's retention administration",
        returned=len(policies.items),
    )
    # Auditors may read this page (as the API lets them) but no other admin section.
    sections = SECTIONS if principal.can_change else [s for s in SECTIONS if s[0] == "retention"]
    next_position = max((p.position for p in policies.items), default=0) + 10
    return render(
        request,
        "admin_retention.html",
        {
            "active": "admin",
            "section": "retention",
            "sections": sections,
            "notice": NOTICES.get(notice or ""),
            "rules": _moves(policies.items),
            "preview": preview,
            "holds": holds.items,
            "archives": archives,
            "refused": refused,
            "can_change": principal.can_change,
            "next_position": next_position,
            "match_keys": MATCH_KEYS,
            "outcomes": OUTCOMES,
            "hold_fields": HOLD_FIELDS,
        },
        status_code=status_code,
    )


def _back(notice: str) -> Response:
    return RedirectResponse(f"{PAGE}?notice={notice}", status_code=303)


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def _policy_values(form: FormData) -> dict[str, Any]:
    """A rule form's fields as the API's JSON body. The full forms (create, edit) send every
    field: an empty match field is no condition, empty days are null ("keep forever"), an
    unticked box is false. The move buttons send only a position."""
    values: dict[str, Any] = {}
    for name in ("name", "position"):
        text = _text(form, name)
        if text is not None:
            values[name] = text.strip()
    if _text(form, "form") == "full":
        values["match"] = {k: v for k in MATCH_KEYS if (v := (_text(form, k) or "").strip())}
        for name in ("archive_after_days", "delete_after_days"):
            values[name] = (_text(form, name) or "").strip() or None
        values["critical"] = _text(form, "critical") == "true"
    return values


def _hold_values(form: FormData) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    for name, _ in HOLD_FIELDS:
        text = (_text(form, name) or "").strip()
        if not text:
            continue
        if name == "action":
            filters[name] = [a for a in re.split(r"[,\s]+", text) if a]
        else:
            filters[name] = text
    outcome = (_text(form, "outcome") or "").strip()
    if outcome:
        filters["outcome"] = outcome
    return {"reason": _text(form, "reason") or "", "filter": filters}


def _sent(form: FormData) -> dict[str, str]:
    """What the refused form sent, to fill it in again (never the CSRF token)."""
    return {k: v for k, v in form.items() if isinstance(v, str) and k != auth.CSRF_FIELD}


async def _refused(
    request: Request,
    session: AsyncSession,
    principal: ConsolePrincipal,
    form_name: str,
    exc: AppError,
    form: FormData,
) -> Response:
    errors = [
        FieldError(loc=[p for p in e.loc if p != "body"], msg=e.msg, type=e.type)
        for e in exc.errors or []
    ]
    refused = Refused(form_name, exc.title, exc.detail, errors, _sent(form))
    return await _page(
        request, session, _Aside(), principal, refused=refused, status_code=exc.status_code
    )


@router.get("", openapi_extra=audited("retention.policies_listed", "retention"))
async def retention_page(
    request: Request,
    principal: Viewer,
    session: SessionDep,
    audit: RecorderDep,
    notice: Annotated[str | None, Query(max_length=40)] = None,
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> Response:
    return await _page(request, session, audit, principal, notice=notice, before_id=before_id)


@router.post("/policies", openapi_extra=_CHANGED)
async def create_policy(
    request: Request, admin: Admin, session: SessionDep, audit: RecorderDep
) -> Response:
    form = await request.form()
    try:
        data = validated_form(PolicyIn, _policy_values(form))
        await service.create_policy(session, audit, data)
    except (ValidationFailed, Conflict) as exc:
        return await _refused(request, session, admin, "new-policy", exc, form)
    return _back("policy-created")


@router.post("/policies/{policy_id}", openapi_extra=_CHANGED)
async def update_policy(
    request: Request, policy_id: Id, admin: Admin, session: SessionDep, audit: RecorderDep
) -> Response:
    """The edit form (every field) or a move button (only the position): one PATCH's worth."""
    form = await request.form()
    values = _policy_values(form)
    try:
        data = validated_form(PolicyUpdate, values)
        await service.update_policy(session, audit, policy_id, data)
    except (ValidationFailed, Conflict) as exc:
        return await _refused(request, session, admin, f"policy-{policy_id}", exc, form)
    return _back("policy-updated" if "match" in values else "policy-moved")


@router.post("/policies/{policy_id}/delete", openapi_extra=_CHANGED)
async def delete_policy(
    policy_id: Id, _: Admin, session: SessionDep, audit: RecorderDep
) -> Response:
    await service.delete_policy(session, audit, policy_id)
    return _back("policy-deleted")


@router.post("/holds", openapi_extra=audited("retention.hold_created", "retention"))
async def create_hold(
    request: Request, admin: Admin, session: SessionDep, audit: RecorderDep
) -> Response:
    form = await request.form()
    try:
        data = validated_form(HoldIn, _hold_values(form))
        await service.create_hold(session, audit, data)
    except ValidationFailed as exc:
        return await _refused(request, session, admin, "new-hold", exc, form)
    return _back("hold-created")


@router.post(
    "/holds/{hold_id}/release", openapi_extra=audited("retention.hold_released", "retention")
)
async def release_hold(hold_id: Id, _: Admin, session: SessionDep, audit: RecorderDep) -> Response:
    await service.release_hold(session, audit, hold_id)
    return _back("hold-released")
