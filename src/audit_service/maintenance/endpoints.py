"""/admin/maintenance: see and switch maintenance mode (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from audit_service.audit_log.context import audited
from audit_service.audit_log.dependencies import RecorderDep, SessionDep
from audit_service.auth.dependencies import AdminUser
from audit_service.core.errors import problem_responses
from audit_service.maintenance import service
from audit_service.maintenance.schemas import MaintenanceIn, MaintenanceOut
from audit_service.maintenance.service import MaintenanceCache, MaintenanceState

router = APIRouter(prefix="/admin/maintenance", tags=["maintenance"])


def _out(state: MaintenanceState) -> MaintenanceOut:
    return MaintenanceOut(
        enabled=state.enabled,
        message=state.message,
        changed_at=state.changed_at,
        changed_by=state.changed_by,
    )


@router.get(
    "",
    response_model=MaintenanceOut,
    operation_id="get_maintenance",
    responses=problem_responses(401, 403),
    openapi_extra=audited("system.maintenance_viewed", "system"),
)
async def get_maintenance(_: AdminUser, session: SessionDep) -> MaintenanceOut:
    """Whether maintenance mode is on, and its message (admin only)."""
    return _out(await service.get_state(session))


@router.put(
    "",
    response_model=MaintenanceOut,
    operation_id="put_maintenance",
    responses=problem_responses(401, 403, 422),
    openapi_extra=audited("config.changed", "system"),
)
async def put_maintenance(
    body: MaintenanceIn, _: AdminUser, session: SessionDep, audit: RecorderDep, request: Request
) -> MaintenanceOut:
    """Turn maintenance mode on or off (admin only). While on, everything but health, login,
    admins and ingestion answers 503 with the message and Retry-After."""
    audit.describe(target_type="setting", target_id=service.KEY, setting=service.KEY)
    before, after = await service.set_state(
        session, audit.actor, enabled=body.enabled, message=body.message
    )
    audit.describe(
        description=f"Maintenance mode {'on' if after.enabled else 'off'}",
        before=before.public(),
        after=after.public(),
    )
    # Re-read on the next request (after this commit) rather than trust an uncommitted value.
    cache: MaintenanceCache = request.app.state.maintenance
    cache.invalidate()
    return _out(after)
