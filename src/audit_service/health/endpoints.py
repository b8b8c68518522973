"""/healthz, /readyz and /metrics: for orchestrators and Prometheus; public, not recorded."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from audit_service.core.config import Settings
from audit_service.core.db import ping
from audit_service.core.errors import ServiceUnavailable, Unauthorized, problem_responses
from audit_service.core.metrics import CONTENT_TYPE, Metrics

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


def _authorized(request: Request, settings: Settings) -> bool:
    if settings.metrics_token is None:
        return True
    scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
    expected = settings.metrics_token.get_secret_value().encode()
    # Bytes, not str: compare_digest refuses non-ASCII str, and a client chooses the header.
    ok = hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), expected)
    return scheme.lower() == "bearer" and ok


@router.get(
    "/metrics",
    operation_id="metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **problem_responses(401),
    },
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics (bearer `AUDIT_METRICS_TOKEN` when set)."""
    if not _authorized(request, request.app.state.settings):
        raise Unauthorized("This needs the metrics token")
    registry: Metrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE)
