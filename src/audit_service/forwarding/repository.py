"""All SQL of forwarding: destinations, their per-destination leases, dead letters, replays."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.audit_log.models import AuditEvent, AuditLeaf
from audit_service.forwarding.models import ForwardDeadLetter, ForwardDestination, ForwardReplay

ACTIVE, PAUSED, FAILING, DISABLED = "active", "paused", "failing", "disabled"
RUNNING, DONE, FAILED = "running", "done", "failed"
DELIVERING = (ACTIVE, FAILING)


async def add_destination(session: AsyncSession, **values: Any) -> ForwardDestination:
    destination = ForwardDestination(**values)
    session.add(destination)
    await session.flush()
    return destination


async def name_taken(session: AsyncSession, name: str, except_id: int | None = None) -> bool:
    stmt = select(ForwardDestination.id).where(ForwardDestination.name == name)
    if except_id is not None:
        stmt = stmt.where(ForwardDestination.id != except_id)
    return (await session.execute(stmt)).first() is not None


async def get_destination(session: AsyncSession, destination_id: int) -> ForwardDestination | None:
    return await session.get(ForwardDestination, destination_id, populate_existing=True)


async def list_destinations(session: AsyncSession) -> Sequence[ForwardDestination]:
    return (await session.scalars(select(ForwardDestination).order_by(ForwardDestination.id))).all()


async def delete_destination(session: AsyncSession, destination: ForwardDestination) -> None:
    await session.execute(
        delete(ForwardDeadLetter).where(ForwardDeadLetter.destination_id == destination.id)
    )
    await session.execute(
        delete(ForwardReplay).where(ForwardReplay.destination_id == destination.id)
    )
    await session.delete(destination)
    await session.flush()


def _claimable(now: datetime) -> Any:
    return or_(ForwardDestination.lease_until.is_(None), ForwardDestination.lease_until < now)


async def due_destinations(session: AsyncSession, now: datetime) -> list[int]:
    stmt = (
        select(ForwardDestination.id)
        .where(
            ForwardDestination.state.in_(DELIVERING),
            or_(
                ForwardDestination.next_attempt_at.is_(None),
                ForwardDestination.next_attempt_at <= now,
            ),
            _claimable(now),
        )
        .order_by(ForwardDestination.id)
    )
    return [int(i) for i in (await session.scalars(stmt)).all()]


async def claim_destination(
    session: AsyncSession, destination_id: int, holder: str, now: datetime, until: datetime
) -> bool:
    """Compare-and-set: of several deliverers only one gets a destination whose lease ran
    out (a crashed holder's included)."""
    result = await session.execute(
        update(ForwardDestination)
        .where(
            ForwardDestination.id == destination_id,
            ForwardDestination.state.in_(DELIVERING),
            _claimable(now),
        )
        .values(lease_until=until, lease_holder=holder)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def release_destination(session: AsyncSession, destination_id: int, holder: str) -> None:
    await session.execute(
        update(ForwardDestination)
        .where(ForwardDestination.id == destination_id, ForwardDestination.lease_holder == holder)
        .values(lease_until=None, lease_holder=None)
        .execution_options(synchronize_session=False)
    )


async def update_held(
    session: AsyncSession,
    destination_id: int,
    holder: str,
    now: datetime,
    *,
    expect_cursor: int | None = None,
    **values: Any,
) -> bool:
    """Write the delivery state of a destination this holder still leases (and, when
    `expect_cursor` is given, whose cursor nobody moved meanwhile); False: lease lost."""
    where = [
        ForwardDestination.id == destination_id,
        ForwardDestination.lease_holder == holder,
        ForwardDestination.lease_until >= now,
    ]
    if expect_cursor is not None:
        where.append(ForwardDestination.cursor == expect_cursor)
    result = await session.execute(
        update(ForwardDestination)
        .where(*where)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def set_values(session: AsyncSession, destination_id: int, **values: Any) -> None:
    await session.execute(
        update(ForwardDestination)
        .where(ForwardDestination.id == destination_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


# --- the log, as forwarding reads it ---------------------------------------------------------


async def oldest_after(session: AsyncSession, position: int) -> datetime | None:
    """recorded_at of the event at the first position after `position` (lag)."""
    stmt = (
        select(AuditEvent.recorded_at)
        .select_from(AuditLeaf)
        .join(AuditEvent, AuditEvent.id == AuditLeaf.event_pk)
        .where(AuditLeaf.position > position)
        .order_by(AuditLeaf.position)
        .limit(1)
    )
    value = (await session.execute(stmt)).scalar()
    return value if isinstance(value, datetime) else None


async def positions_between(
    session: AsyncSession, since: datetime, until: datetime
) -> tuple[int | None, int | None]:
    """The first and last position of events recorded in [since, until)."""
    stmt = (
        select(func.min(AuditLeaf.position), func.max(AuditLeaf.position))
        .select_from(AuditLeaf)
        .join(AuditEvent, AuditEvent.id == AuditLeaf.event_pk)
        .where(AuditEvent.recorded_at >= since, AuditEvent.recorded_at < until)
    )
    row = (await session.execute(stmt)).one()
    return (
        None if row[0] is None else int(row[0]),
        None if row[1] is None else int(row[1]),
    )


async def event_at(session: AsyncSession, position: int) -> dict[str, Any] | None:
    from audit_service.audit_log import log

    items = await log.follow(session, after=position - 1, limit=1)
    if not items or items[0].position != position or items[0].event is None:
        return None
    return dict(items[0].event)


async def events_by_pk(session: AsyncSession, pks: Sequence[int]) -> dict[int, tuple[str, str]]:
    """(event_id, action) of event rows by id, for the dead-letter list."""
    if not pks:
        return {}
    stmt = select(AuditEvent.id, AuditEvent.event_id, AuditEvent.action).where(
        AuditEvent.id.in_(list(pks))
    )
    return {int(r[0]): (str(r[1]), str(r[2])) for r in (await session.execute(stmt)).all()}


# --- dead letters ----------------------------------------------------------------------------


async def add_dead_letters(
    session: AsyncSession, destination_id: int, rows: Sequence[tuple[int, int, str]], now: datetime
) -> None:
    for position, event_pk, reason in rows:
        session.add(
            ForwardDeadLetter(
                destination_id=destination_id,
                position=position,
                event_pk=event_pk,
                reason=reason,
                attempts=1,
                created_at=now,
                updated_at=now,
            )
        )
    await session.flush()


async def dead_letters(
    session: AsyncSession, destination_id: int, limit: int
) -> Sequence[ForwardDeadLetter]:
    stmt = (
        select(ForwardDeadLetter)
        .where(ForwardDeadLetter.destination_id == destination_id)
        .order_by(ForwardDeadLetter.position)
        .limit(limit)
    )
    return (await session.scalars(stmt)).all()


async def count_dead_letters(session: AsyncSession, destination_id: int) -> int:
    stmt = select(func.count()).where(ForwardDeadLetter.destination_id == destination_id)
    return int((await session.execute(stmt)).scalar() or 0)


async def get_dead_letter(
    session: AsyncSession, destination_id: int, dead_letter_id: int
) -> ForwardDeadLetter | None:
    row = await session.get(ForwardDeadLetter, dead_letter_id)
    return row if row is not None and row.destination_id == destination_id else None


async def delete_dead_letter(session: AsyncSession, row: ForwardDeadLetter) -> None:
    await session.delete(row)
    await session.flush()


# --- replays ---------------------------------------------------------------------------------


async def add_replay(session: AsyncSession, **values: Any) -> ForwardReplay:
    replay = ForwardReplay(**values)
    session.add(replay)
    await session.flush()
    return replay


async def replays_of(
    session: AsyncSession, destination_id: int, limit: int
) -> Sequence[ForwardReplay]:
    stmt = (
        select(ForwardReplay)
        .where(ForwardReplay.destination_id == destination_id)
        .order_by(ForwardReplay.id.desc())
        .limit(limit)
    )
    return (await session.scalars(stmt)).all()


async def due_replays(session: AsyncSession, now: datetime) -> list[int]:
    stmt = (
        select(ForwardReplay.id)
        .join(ForwardDestination, ForwardDestination.id == ForwardReplay.destination_id)
        .where(
            ForwardReplay.state == RUNNING,
            ForwardDestination.state.in_(DELIVERING),
            or_(ForwardReplay.next_attempt_at.is_(None), ForwardReplay.next_attempt_at <= now),
            or_(ForwardReplay.lease_until.is_(None), ForwardReplay.lease_until < now),
        )
        .order_by(ForwardReplay.id)
    )
    return [int(i) for i in (await session.scalars(stmt)).all()]


async def claim_replay(
    session: AsyncSession, replay_id: int, holder: str, now: datetime, until: datetime
) -> bool:
    result = await session.execute(
        update(ForwardReplay)
        .where(
            ForwardReplay.id == replay_id,
            ForwardReplay.state == RUNNING,
            or_(ForwardReplay.lease_until.is_(None), ForwardReplay.lease_until < now),
        )
        .values(lease_until=until, lease_holder=holder)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def get_replay(session: AsyncSession, replay_id: int) -> ForwardReplay | None:
    return await session.get(ForwardReplay, replay_id, populate_existing=True)


async def update_replay_held(
    session: AsyncSession,
    replay_id: int,
    holder: str,
    now: datetime,
    *,
    expect_cursor: int | None = None,
    **values: Any,
) -> bool:
    where = [
        ForwardReplay.id == replay_id,
        ForwardReplay.lease_holder == holder,
        ForwardReplay.lease_until >= now,
    ]
    if expect_cursor is not None:
        where.append(ForwardReplay.cursor == expect_cursor)
    result = await session.execute(
        update(ForwardReplay)
        .where(and_(*where))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]
