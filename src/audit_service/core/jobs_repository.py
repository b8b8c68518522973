"""All SQL of the job runtime: claiming, renewing, fencing and releasing leases.

Every statement is one short transaction of its own and takes no session-level lock, so it
works behind PgBouncer in transaction pooling mode, where consecutive statements of one
client may run on different server connections.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from audit_service.core.db import db_clock, upsert_for
from audit_service.core.jobs_models import JobLease

_T = JobLease.__table__.c


@dataclass(frozen=True, slots=True)
class Claim:
    generation: int
    consecutive_failures: int


@dataclass(frozen=True, slots=True)
class LeaseState:
    now: datetime
    holder: str | None
    lease_until: datetime | None
    next_run_at: datetime | None


async def register(conn: AsyncConnection, name: str, interval: float) -> None:
    """Make the job's row exist (so it is listed before its first run); keep its stats."""
    insert = upsert_for(conn)(JobLease).values(name=name, interval_seconds=interval)
    await conn.execute(
        insert.on_conflict_do_update(
            index_elements=[_T.name], set_={"interval_seconds": insert.excluded.interval_seconds}
        )
    )


async def claim(
    conn: AsyncConnection, name: str, holder: str, interval: float, lease: timedelta
) -> Claim | None:
    """Take the lease if it is free (expired, released, or already ours) and the job is due.

    One atomic statement: Postgres locks the conflicting row and re-checks the WHERE against
    its latest version, SQLite has one writer, so of any number of claimants one wins.
    """
    now, until = db_clock(conn), db_clock(conn, lease)
    insert = upsert_for(conn)(JobLease).values(
        name=name,
        holder=holder,
        generation=1,
        lease_until=until,
        interval_seconds=interval,
        last_started_at=now,
    )
    statement = insert.on_conflict_do_update(
        index_elements=[_T.name],
        set_={
            "holder": holder,
            "generation": _T.generation + 1,
            "lease_until": until,
            "interval_seconds": interval,
            "last_started_at": now,
        },
        where=and_(
            or_(_T.lease_until.is_(None), _T.lease_until <= now, _T.holder == holder),
            or_(_T.next_run_at.is_(None), _T.next_run_at <= now),
        ),
    ).returning(_T.generation, _T.consecutive_failures)
    row = (await conn.execute(statement)).first()
    return None if row is None else Claim(row.generation, row.consecutive_failures)


async def state(conn: AsyncConnection, name: str) -> LeaseState:
    """When the lease frees up and when the job is due, by the database's clock."""
    row = (
        await conn.execute(
            select(db_clock(conn).label("now"), _T.holder, _T.lease_until, _T.next_run_at).where(
                _T.name == name
            )
        )
    ).first()
    if row is None:  # not registered (yet, or the row was deleted): due now
        now = (await conn.execute(select(db_clock(conn)))).scalar_one()
        return LeaseState(now, None, None, None)
    return LeaseState(row.now, row.holder, row.lease_until, row.next_run_at)


def _ours(name: str, holder: str, generation: int) -> list[ColumnElement[bool]]:
    return [_T.name == name, _T.holder == holder, _T.generation == generation]


async def renew(
    conn: AsyncConnection,
    name: str,
    holder: str,
    generation: int,
    lease: timedelta,
    lag: float | None,
) -> bool:
    """Extend our lease; False if it is no longer ours (expired and claimed by another)."""
    result = await conn.execute(
        update(JobLease)
        .where(*_ours(name, holder, generation))
        .values(lease_until=db_clock(conn, lease), lag_seconds=lag)
        .returning(_T.name)
    )
    return result.first() is not None


async def fence(
    bind: AsyncSession | AsyncConnection, name: str, holder: str, generation: int
) -> bool:
    """Inside a job's own write transaction: whether the lease is still ours, keeping it so
    until that transaction ends.

    A no-op UPDATE rather than a SELECT: it row-locks on Postgres and takes the write lock on
    SQLite, so a claimant cannot take the lease between this check and the job's commit.
    """
    result = await bind.execute(
        update(JobLease)
        .where(*_ours(name, holder, generation))
        .values(generation=_T.generation)
        .returning(_T.name)
    )
    return result.first() is not None


async def finish(
    conn: AsyncConnection,
    name: str,
    holder: str,
    generation: int,
    *,
    next_run_in: timedelta,
    error: str | None,
    lag: float | None,
) -> bool:
    """Release the lease after a run, count it, and schedule the next one."""
    now = db_clock(conn)
    values: dict[str, object] = {
        "lease_until": now,
        "last_finished_at": now,
        "next_run_at": db_clock(conn, next_run_in),
        "runs": _T.runs + 1,
        "lag_seconds": lag,
    }
    if error is None:
        values["consecutive_failures"] = 0
    else:
        values.update(
            failures=_T.failures + 1,
            consecutive_failures=_T.consecutive_failures + 1,
            last_error=error,
            last_error_at=now,
        )
    result = await conn.execute(
        update(JobLease).where(*_ours(name, holder, generation)).values(values).returning(_T.name)
    )
    return result.first() is not None


async def release_all(conn: AsyncConnection, holder: str) -> int:
    """At shutdown: free every lease this process still holds (runs cut short are not
    counted), due at once so another process picks them up without waiting."""
    now = db_clock(conn)
    result = await conn.execute(
        update(JobLease)
        .where(_T.holder == holder, _T.lease_until > now)
        .values(lease_until=now, next_run_at=now)
    )
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


async def list_leases(session: AsyncSession) -> tuple[datetime, list[JobLease]]:
    """Every job's row, by name, with the database's "now" to tell which are running."""
    now = (await session.execute(select(db_clock(await session.connection())))).scalar_one()
    return now, list((await session.scalars(select(JobLease).order_by(JobLease.name))).all())
