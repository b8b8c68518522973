"""/admin/jobs: what the background jobs are doing, for admins and auditors."""

from __future__ import annotations

from fastapi import APIRouter

from audit_service.audit_log.context import audited
from audit_service.audit_log.dependencies import RecorderDep, SessionDep
from audit_service.auth.dependencies import AdminOrAuditor
from audit_service.core.errors import problem_responses
from audit_service.core.routing import SafeJSONRoute
from audit_service.jobs import service
from audit_service.jobs.schemas import JobList

router = APIRouter(prefix="/admin/jobs", tags=["jobs"], route_class=SafeJSONRoute)


@router.get(
    "",
    response_model=JobList,
    operation_id="list_jobs",
    responses=problem_responses(401, 403),
    openapi_extra=audited("jobs.viewed", "jobs"),
)
async def list_jobs(_: AdminOrAuditor, session: SessionDep, audit: RecorderDep) -> JobList:
    """Every background job: who runs it, its last run and error, its counts and lag."""
    return await service.list_jobs(session, audit)
