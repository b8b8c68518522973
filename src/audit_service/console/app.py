"""Mounting the console on the app: static files first, then the pages, then the
fallback (a 404 page for any other /console path)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from starlette.staticfiles import StaticFiles

from audit_service.console import admin, alerts, dashboard, integrity, retention
from audit_service.console.endpoints import fallback_router
from audit_service.console.endpoints import router as pages_router
from audit_service.console.templating import STATIC

# Every console router; pages of other parts (dashboard, alerts, …) are added here.
ROUTERS: tuple[APIRouter, ...] = (
    pages_router,
    dashboard.router,
    alerts.router,
    integrity.router,
    retention.router,
    admin.router,
)


def install_console(app: FastAPI) -> None:
    # check_dir=False: vendor/ is built by scripts/build-assets.sh; a missing file is a 404.
    app.mount("/console/static", StaticFiles(directory=STATIC, check_dir=False), name="console")
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(fallback_router)
