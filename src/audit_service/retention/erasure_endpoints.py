"""/admin/retention/erasures: data-subject erasures (admin only)."""

from __future__ import annotations

from fastapi import APIRouter, status

from audit_service.audit_log.context import audited
from audit_service.audit_log.dependencies import RecorderDep, SessionDep
from audit_service.auth.dependencies import AdminUser
from audit_service.core.dependencies import SettingsDep
from audit_service.core.errors import problem_responses
from audit_service.core.routing import SafeJSONRoute
from audit_service.retention import erasure
from audit_service.retention.privacy_schemas import ErasureIn, ErasureList, ErasureOut

router = APIRouter(prefix="/admin/retention", tags=["retention"], route_class=SafeJSONRoute)


@router.post(
    "/erasures",
    status_code=status.HTTP_201_CREATED,
    response_model=ErasureOut,
    operation_id="create_retention_erasure",
    responses=problem_responses(401, 403, 409, 422),
    openapi_extra=audited("retention.erasure_requested", "retention"),
)
async def create_retention_erasure(
    data: ErasureIn, _: AdminUser, session: SessionDep, audit: RecorderDep, settings: SettingsDep
) -> ErasureOut:
    """Pseudonymise one user's actor id and name, IPs and user agents in every event (admin
    only). Every proof stays valid; an active legal hold on the subject's events refuses it
    (409). The recorded events name only the pseudonym."""
    return await erasure.erase(session, audit, settings, data)


@router.get(
    "/erasures",
    response_model=ErasureList,
    operation_id="list_retention_erasures",
    responses=problem_responses(401, 403),
    openapi_extra=audited("retention.erasures_listed", "retention"),
)
async def list_retention_erasures(
    _: AdminUser, session: SessionDep, audit: RecorderDep
) -> ErasureList:
    """The erasures done, newest first (admin only)."""
    return await erasure.list_erasures(session, audit)
