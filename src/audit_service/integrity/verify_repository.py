"""All SQL of verification runs (integrity_verify_run, integrity_verify_task)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.core.db import lock_for_transaction, upsert_for
from audit_service.integrity.models import (
    IntegrityCheckpoint,
    IntegrityVerifyRun,
    IntegrityVerifyTask,
)
from audit_service.kit.models import utcnow

QUEUED, RUNNING, FINISHED = "queued", "running", "finished"
_tasks = cast(Table, IntegrityVerifyTask.__table__)
_runs = cast(Table, IntegrityVerifyRun.__table__)


async def lock_requests(session: AsyncSession) -> None:
    """Serialise "is a run in progress? else queue one" across requests and processes."""
    await lock_for_transaction(session, "integrity.verify-request", _runs)


async def unfinished_run(session: AsyncSession) -> IntegrityVerifyRun | None:
    """The oldest run not finished yet (a running one first: it was cut short)."""
    stmt = (
        select(IntegrityVerifyRun)
        .where(IntegrityVerifyRun.status.in_((QUEUED, RUNNING)))
        .order_by(IntegrityVerifyRun.id)
        .limit(1)
    )
    return (await session.scalars(stmt)).first()


async def create_run(session: AsyncSession, trigger: str, requested_by: str) -> IntegrityVerifyRun:
    run = IntegrityVerifyRun(
        status=QUEUED,
        trigger=trigger,
        requested_by=requested_by,
        requested_at=utcnow(),
        attempts=0,
        tasks_total=0,
        tasks_done=0,
        positions_done=0,
        problem_count=0,
    )
    session.add(run)
    await session.flush()
    return run


async def get_run(session: AsyncSession, run_id: int) -> IntegrityVerifyRun | None:
    return await session.get(IntegrityVerifyRun, run_id)


async def last_requested(session: AsyncSession, trigger: str) -> datetime | None:
    stmt = select(func.max(IntegrityVerifyRun.requested_at)).where(
        IntegrityVerifyRun.trigger == trigger
    )
    return (await session.execute(stmt)).scalar()


async def first_checkpoint_at(session: AsyncSession) -> datetime | None:
    stmt = select(func.min(IntegrityCheckpoint.signed_at))
    return (await session.execute(stmt)).scalar()


async def save_task(session: AsyncSession, run_id: int, index: int, result: dict[str, Any]) -> None:
    insert = upsert_for(session)(_tasks)
    await session.execute(
        insert.values(run_id=run_id, task_index=index, result=result).on_conflict_do_nothing()
    )


async def task_results(session: AsyncSession, run_id: int) -> dict[int, dict[str, Any]]:
    stmt = select(_tasks.c.task_index, _tasks.c.result).where(_tasks.c.run_id == run_id)
    return {int(r.task_index): r.result for r in (await session.execute(stmt)).all()}


async def drop_tasks(session: AsyncSession, run_id: int) -> None:
    await session.execute(delete(_tasks).where(_tasks.c.run_id == run_id))


async def latest_runs(session: AsyncSession, limit: int) -> list[IntegrityVerifyRun]:
    """The newest runs, newest requested first (the console's integrity page)."""
    stmt = select(IntegrityVerifyRun).order_by(IntegrityVerifyRun.id.desc()).limit(limit)
    return list((await session.scalars(stmt)).all())
