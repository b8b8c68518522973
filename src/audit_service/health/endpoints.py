"""/healthz and /readyz: for orchestrators; public and not recorded."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from audit_service.core.db import ping
from audit_service.core.errors import ServiceUnavailable, problem_responses

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


@router.get("/healthz", response_model=Health, operation_id="healthz")
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get(
    "/readyz", response_model=Health, operation_id="readyz", responses=problem_responses(503)
)
async def readyz(request: Request) -> Health:
    """The database answers."""
    if not await ping(request.app.state.engine):
        raise ServiceUnavailable("database unreachable")
    return Health(status="ok")
