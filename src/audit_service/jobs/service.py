"""Reading the state of the background jobs (the runtime itself is core/jobs.py)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.audit_log.context import RequestAudit
from audit_service.core import jobs_repository
from audit_service.jobs.schemas import JobList, JobOut


async def list_jobs(session: AsyncSession, audit: RequestAudit) -> JobList:
    now, leases = await jobs_repository.list_leases(session)
    audit.describe(description="Viewed the background jobs", count=len(leases))
    return JobList(
        items=[
            JobOut(
                name=j.name,
                running=j.lease_until is not None and j.lease_until > now,
                holder=j.holder,
                interval_seconds=j.interval_seconds,
                lease_until=j.lease_until,
                next_run_at=j.next_run_at,
                last_started_at=j.last_started_at,
                last_finished_at=j.last_finished_at,
                last_error=j.last_error,
                last_error_at=j.last_error_at,
                runs=j.runs,
                failures=j.failures,
                consecutive_failures=j.consecutive_failures,
                lag_seconds=j.lag_seconds,
            )
            for j in leases
        ]
    )
