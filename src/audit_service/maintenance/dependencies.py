"""The maintenance gate: a router dependency, so it runs inside the recorder's scope and
every refused request is still recorded."""

from __future__ import annotations

from fastapi import Request

from audit_service.auth.dependencies import CurrentUser
from audit_service.core.errors import ServiceUnavailable
from audit_service.maintenance.service import RETRY_AFTER_SECONDS, MaintenanceCache


async def maintenance_gate(request: Request, user: CurrentUser) -> None:
    """503 while maintenance is on, except for admins and the /admin routes (which need a
    role anyway). Health, login and ingestion are mounted without this gate."""
    # The scope's path: `request.url` would build a URL object on every request.
    if user.role == "admin" or request.scope["path"].startswith("/admin/"):
        return
    cache: MaintenanceCache = request.app.state.maintenance
    state = await cache.current()
    if state.enabled:
        raise ServiceUnavailable(
            state.client_message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        )
