"""What background jobs need from the record: their own `system` events."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.audit_log import repository
from audit_service.audit_log.context import Actor, system_event


def job_actor(job: str) -> Actor:
    """The actor of what a job does: `system`, named after the job so it can be traced."""
    return Actor(type="system", id=f"job:{job}", name="audit-service", role=None)


async def record_job_event(
    session: AsyncSession,
    job: str,
    action: str,
    module: str,
    description: str,
    *,
    outcome: str = "success",
    target_type: str | None = None,
    target_id: str | None = None,
    **metadata: Any,
) -> None:
    """Insert the event in the job's own transaction, so the work and its record commit
    together (or neither does)."""
    await repository.insert_events(
        session,
        [
            system_event(
                action,
                module,
                description,
                actor=job_actor(job),
                outcome=outcome,
                target_type=target_type,
                target_id=target_id,
                job=job,
                **metadata,
            )
        ],
    )
