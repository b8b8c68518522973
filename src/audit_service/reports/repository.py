"""All SQL of report schedules and runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.core.db import upsert_for
from audit_service.reports.models import ReportRun, ReportSchedule

PENDING, SENDING, SENT, FAILED = "pending", "sending", "sent", "failed"
_runs = cast(Table, ReportRun.__table__)


async def add_schedule(session: AsyncSession, **values: Any) -> ReportSchedule:
    schedule = ReportSchedule(**values)
    session.add(schedule)
    await session.flush()
    return schedule


async def get_schedule(session: AsyncSession, schedule_id: int) -> ReportSchedule | None:
    return await session.get(ReportSchedule, schedule_id)


async def list_schedules(
    session: AsyncSession, *, enabled_only: bool = False
) -> Sequence[ReportSchedule]:
    stmt = select(ReportSchedule).order_by(ReportSchedule.id)
    if enabled_only:
        stmt = stmt.where(ReportSchedule.enabled.is_(True))
    return (await session.scalars(stmt)).all()


async def delete_schedule(session: AsyncSession, schedule: ReportSchedule) -> None:
    await session.execute(delete(ReportRun).where(ReportRun.schedule_id == schedule.id))
    await session.delete(schedule)
    await session.flush()


async def latest_run(session: AsyncSession, schedule_id: int) -> ReportRun | None:
    stmt = (
        select(ReportRun)
        .where(ReportRun.schedule_id == schedule_id)
        .order_by(ReportRun.period_start.desc())
        .limit(1)
    )
    return (await session.scalars(stmt)).first()


async def add_runs(
    session: AsyncSession,
    schedule_id: int,
    periods: Sequence[tuple[datetime, datetime]],
    at: datetime,
) -> None:
    """Owed periods, once each: a period another scheduler added already is left alone."""
    if not periods:
        return
    insert = upsert_for(session)(_runs)
    await session.execute(
        insert.values(
            [
                {
                    "schedule_id": schedule_id,
                    "period_start": start,
                    "period_end": end,
                    "status": PENDING,
                    "attempts": 0,
                    "next_attempt_at": at,
                    "created_at": at,
                }
                for start, end in periods
            ]
        ).on_conflict_do_nothing(index_elements=["schedule_id", "period_start"])
    )


async def claim_next(session: AsyncSession, now: datetime, lease_until: datetime) -> int | None:
    """Take the oldest due run for one sender: pending and due, or sending by a sender
    whose claim ran out (it crashed). The UPDATE re-checks the state, so of two senders
    that read the same row only one gets it (on SQLite, where FOR UPDATE does not exist)."""
    claimable = or_(
        and_(ReportRun.status == PENDING, ReportRun.next_attempt_at <= now),
        and_(ReportRun.status == SENDING, ReportRun.claimed_until < now),
    )
    stmt = (
        select(ReportRun.id)
        .where(claimable)
        .order_by(ReportRun.next_attempt_at, ReportRun.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    run_id = (await session.execute(stmt)).scalar()
    if run_id is None:
        return None
    result = await session.execute(
        update(ReportRun)
        .where(ReportRun.id == run_id, claimable)
        .values(status=SENDING, claimed_until=lease_until, attempts=ReportRun.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    claimed: bool = result.rowcount == 1  # type: ignore[attr-defined]
    return int(run_id) if claimed else None


async def get_run(session: AsyncSession, run_id: int) -> ReportRun | None:
    return await session.get(ReportRun, run_id, populate_existing=True)


async def finish_run(session: AsyncSession, run_id: int, **values: Any) -> None:
    await session.execute(
        update(ReportRun)
        .where(ReportRun.id == run_id)
        .values(claimed_until=None, **values)
        .execution_options(synchronize_session=False)
    )


async def runs_of(session: AsyncSession, schedule_id: int, limit: int) -> Sequence[ReportRun]:
    stmt = (
        select(ReportRun)
        .where(ReportRun.schedule_id == schedule_id)
        .order_by(ReportRun.period_start.desc())
        .limit(limit)
    )
    return (await session.scalars(stmt)).all()


async def sent_before(
    session: AsyncSession, schedule_id: int, before: datetime, limit: int
) -> Sequence[ReportRun]:
    """The latest sent runs of a schedule before a period (for late-event revisions)."""
    stmt = (
        select(ReportRun)
        .where(
            ReportRun.schedule_id == schedule_id,
            ReportRun.status == SENT,
            ReportRun.period_start < before,
            ReportRun.events.is_not(None),
        )
        .order_by(ReportRun.period_start.desc())
        .limit(limit)
    )
    return (await session.scalars(stmt)).all()
