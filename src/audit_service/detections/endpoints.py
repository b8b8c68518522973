"""/admin/alerts and /admin/detections/rules (admin; auditors read)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from audit_service.audit_log.context import audited
from audit_service.audit_log.dependencies import RecorderDep, SessionDep
from audit_service.auth.dependencies import AdminOrAuditor, AdminUser
from audit_service.core.dependencies import SigningKeyDep
from audit_service.core.errors import problem_responses
from audit_service.core.routing import SafeJSONRoute
from audit_service.detections import service
from audit_service.detections.schemas import (
    AlertOut,
    AlertPage,
    AlertQuery,
    ResolveIn,
    RuleList,
    RuleOut,
    RuleUpdate,
)

router = APIRouter(prefix="/admin", tags=["detections"], route_class=SafeJSONRoute)
AlertId = Annotated[int, Path(ge=1, le=2**63 - 1)]
RuleId = Annotated[str, Path(min_length=1, max_length=64)]


@router.get(
    "/alerts",
    response_model=AlertPage,
    operation_id="list_alerts",
    responses=problem_responses(401, 403, 422),
    openapi_extra=audited("alert.listed", "detections"),
)
async def list_alerts(
    query: Annotated[AlertQuery, Query()],
    _: AdminOrAuditor,
    session: SessionDep,
    audit: RecorderDep,
    key: SigningKeyDep,
) -> AlertPage:
    """Alerts, newest opened first, filtered; follow `next_cursor` for older ones."""
    return await service.list_alerts(session, audit, query, key)


@router.get(
    "/alerts/{alert_id}",
    response_model=AlertOut,
    operation_id="get_alert",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=audited("alert.viewed", "detections"),
)
async def get_alert(
    alert_id: AlertId, _: AdminOrAuditor, session: SessionDep, audit: RecorderDep
) -> AlertOut:
    """One alert with its evidence and drill-down filter."""
    return await service.get_alert(session, audit, alert_id)


@router.post(
    "/alerts/{alert_id}/acknowledge",
    response_model=AlertOut,
    operation_id="acknowledge_alert",
    responses=problem_responses(401, 403, 404, 409, 422),
    openapi_extra=audited("alert.acknowledged", "detections"),
)
async def acknowledge_alert(
    alert_id: AlertId, _: AdminUser, session: SessionDep, audit: RecorderDep
) -> AlertOut:
    """Someone is on it (admin only): open → acknowledged; 409 for any other status."""
    return await service.acknowledge(session, audit, alert_id)


@router.post(
    "/alerts/{alert_id}/resolve",
    response_model=AlertOut,
    operation_id="resolve_alert",
    responses=problem_responses(401, 403, 404, 409, 422),
    openapi_extra=audited("alert.resolved", "detections"),
)
async def resolve_alert(
    alert_id: AlertId, data: ResolveIn, _: AdminUser, session: SessionDep, audit: RecorderDep
) -> AlertOut:
    """Close an alert with a resolution and a note (admin only); 409 when resolved already.
    The next finding of the same key opens a new alert."""
    return await service.resolve(session, audit, alert_id, data)


@router.get(
    "/detections/rules",
    response_model=RuleList,
    operation_id="list_detection_rules",
    responses=problem_responses(401, 403),
    openapi_extra=audited("detection.rules_listed", "detections"),
)
async def list_detection_rules(
    _: AdminOrAuditor, session: SessionDep, audit: RecorderDep
) -> RuleList:
    """The rule catalogue: defaults, bounds, guide, effective settings and overrides."""
    return await service.list_rules(session, audit)


@router.patch(
    "/detections/rules/{rule_id}",
    response_model=RuleOut,
    operation_id="update_detection_rule",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=audited("config.changed", "detections"),
)
async def update_detection_rule(
    rule_id: RuleId, data: RuleUpdate, _: AdminUser, session: SessionDep, audit: RecorderDep
) -> RuleOut:
    """Enable or disable a rule, change its severity or thresholds (admin only), for every
    tenant or, with `tenant_id`, for one. Thresholds are checked against the catalogue's
    bounds (422)."""
    return await service.update_rule(session, audit, rule_id, data)
