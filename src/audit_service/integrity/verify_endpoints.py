"""/admin/integrity/verify: verify the whole log on demand (admin) and follow the run
(admin, auditor). The `integrity.verify` job does the work, in any process."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from audit_service.audit_log.context import audited
from audit_service.audit_log.dependencies import RecorderDep, SessionDep
from audit_service.auth.dependencies import AdminOrAuditor, AdminUser
from audit_service.core.errors import problem_responses
from audit_service.core.routing import SafeJSONRoute
from audit_service.integrity import verify_service as service
from audit_service.integrity.verify_schemas import VerifyRunOut

router = APIRouter(prefix="/admin/integrity/verify", tags=["integrity"], route_class=SafeJSONRoute)

RunId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The run's id")]


@router.post(
    "",
    response_model=VerifyRunOut,
    status_code=202,
    operation_id="start_verify_run",
    responses={
        200: {"model": VerifyRunOut, "description": "A run is already queued or running"},
        **problem_responses(401, 403),
    },
    openapi_extra=audited("integrity.verify_requested", "integrity"),
)
async def start_verify_run(
    _: AdminUser, session: SessionDep, audit: RecorderDep, response: Response
) -> VerifyRunOut:
    """Verify the whole log (recompute every entry, check leaves, tiles and signed
    checkpoints): queues a run (202) unless one is queued or running (200, that one).
    Follow it at the `Location` given."""
    run, created = await service.request_run(session, audit.actor, audit)
    if not created:
        response.status_code = 200
    response.headers["Location"] = f"{router.prefix}/{run.id}"
    return run


@router.get(
    "/{run_id}",
    response_model=VerifyRunOut,
    operation_id="get_verify_run",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=audited("integrity.verify_viewed", "integrity"),
)
async def get_verify_run(
    run_id: RunId, _: AdminOrAuditor, session: SessionDep, audit: RecorderDep
) -> VerifyRunOut:
    """A verification run: its progress, then its outcome and the problems found."""
    return await service.read_run(session, run_id, audit)
