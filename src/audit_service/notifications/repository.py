"""All SQL of alert channels and the notification outbox (flushes, never commits)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Table, and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.core.db import upsert_for, write_lock_for_update
from audit_service.notifications.models import (
    AlertChannel,
    NotificationGroup,
    NotificationSubject,
)

_groups = cast(Table, NotificationGroup.__table__)
_subjects = cast(Table, NotificationSubject.__table__)


def _rows(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


# --- channels ----------------------------------------------------------------------------------


async def add_channel(session: AsyncSession, **values: Any) -> AlertChannel:
    channel = AlertChannel(**values)
    session.add(channel)
    await session.flush()
    return channel


async def get_channel(session: AsyncSession, channel_id: int) -> AlertChannel | None:
    return await session.get(AlertChannel, channel_id, populate_existing=True)


async def list_channels(
    session: AsyncSession, *, enabled_only: bool = False
) -> Sequence[AlertChannel]:
    stmt = select(AlertChannel).order_by(AlertChannel.id)
    if enabled_only:
        stmt = stmt.where(AlertChannel.enabled.is_(True))
    return (await session.scalars(stmt)).all()


async def name_taken(session: AsyncSession, name: str, except_id: int | None = None) -> bool:
    stmt = select(AlertChannel.id).where(AlertChannel.name == name)
    if except_id is not None:
        stmt = stmt.where(AlertChannel.id != except_id)
    return (await session.execute(stmt.limit(1))).first() is not None


async def delete_channel(session: AsyncSession, channel: AlertChannel) -> None:
    await session.execute(
        delete(NotificationSubject).where(NotificationSubject.channel_id == channel.id)
    )
    await session.execute(
        delete(NotificationGroup).where(NotificationGroup.channel_id == channel.id)
    )
    await session.delete(channel)
    await session.flush()


async def channel_counts(session: AsyncSession, channel_id: int) -> tuple[int, int]:
    """(groups with unsent changes, groups whose last attempt failed)."""
    pending = await session.scalar(
        select(func.count())
        .select_from(NotificationGroup)
        .where(NotificationGroup.channel_id == channel_id, NotificationGroup.pending.is_(True))
    )
    failing = await session.scalar(
        select(func.count())
        .select_from(NotificationGroup)
        .where(NotificationGroup.channel_id == channel_id, NotificationGroup.attempts > 0)
    )
    return int(pending or 0), int(failing or 0)


async def channel_outcome(
    session: AsyncSession, channel_id: int, *, ok: bool, at: datetime, error: str | None
) -> None:
    values: dict[str, Any] = (
        {"last_success_at": at} if ok else {"last_error": error, "last_error_at": at}
    )
    await session.execute(
        update(AlertChannel)
        .where(AlertChannel.id == channel_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


# --- enqueueing ----------------------------------------------------------------------------------


async def subject_exists(session: AsyncSession, channel_id: int, alert_id: int) -> bool:
    stmt = select(NotificationSubject.alert_id).where(
        NotificationSubject.channel_id == channel_id, NotificationSubject.alert_id == alert_id
    )
    return (await session.execute(stmt)).first() is not None


async def reset_backoff(session: AsyncSession, channel_id: int) -> None:
    """A changed channel is tried again at once (its URL or recipients may be fixed)."""
    await session.execute(
        update(NotificationGroup)
        .where(NotificationGroup.channel_id == channel_id)
        .values(next_attempt_at=None)
        .execution_options(synchronize_session=False)
    )


async def get_subject(
    session: AsyncSession, channel_id: int, alert_id: int
) -> NotificationSubject | None:
    await write_lock_for_update(session, _subjects)
    return await session.get(
        NotificationSubject, (channel_id, alert_id), populate_existing=True, with_for_update=True
    )


async def insert_subject(session: AsyncSession, **values: Any) -> bool:
    """A new subject; False when one exists already (a concurrent enqueue)."""
    insert = upsert_for(session)(_subjects)
    result = await session.execute(
        insert.values(**values)
        .on_conflict_do_nothing(index_elements=["channel_id", "alert_id"])
        .returning(_subjects.c.alert_id)
    )
    return result.first() is not None


async def get_group(
    session: AsyncSession, channel_id: int, group_key: str, *, lock: bool = False
) -> NotificationGroup | None:
    if lock:
        await write_lock_for_update(session, _groups)
    return await session.get(
        NotificationGroup, (channel_id, group_key), populate_existing=True, with_for_update=lock
    )


async def insert_group(session: AsyncSession, **values: Any) -> bool:
    """A new group; False when it exists already."""
    insert = upsert_for(session)(_groups)
    result = await session.execute(
        insert.values(**values)
        .on_conflict_do_nothing(index_elements=["channel_id", "group_key"])
        .returning(_groups.c.group_key)
    )
    return result.first() is not None


# --- delivering ----------------------------------------------------------------------------------


def _due(now: datetime, wait: timedelta, interval: timedelta) -> Any:
    """Pending changes of a group never sent: group_wait after the first; of a group sent
    before: group_interval after the last send. Or a repeat that is due."""
    g = NotificationGroup
    return and_(
        or_(
            and_(
                g.pending.is_(True),
                or_(
                    and_(g.last_sent_at.is_(None), g.pending_since <= now - wait),
                    and_(g.last_sent_at.is_not(None), g.last_sent_at <= now - interval),
                ),
            ),
            and_(g.pending.is_(False), g.repeat_at <= now),
        ),
        or_(NotificationGroup.next_attempt_at.is_(None), NotificationGroup.next_attempt_at <= now),
        or_(NotificationGroup.claim_until.is_(None), NotificationGroup.claim_until < now),
    )


async def due_groups(
    session: AsyncSession, now: datetime, wait: timedelta, interval: timedelta, limit: int
) -> list[tuple[int, str]]:
    stmt = (
        select(NotificationGroup.channel_id, NotificationGroup.group_key)
        .join(AlertChannel, AlertChannel.id == NotificationGroup.channel_id)
        .where(AlertChannel.enabled.is_(True), _due(now, wait, interval))
        .order_by(NotificationGroup.pending_since)
        .limit(limit)
    )
    return [(int(r[0]), str(r[1])) for r in (await session.execute(stmt)).all()]


async def claim_group(
    session: AsyncSession,
    channel_id: int,
    group_key: str,
    now: datetime,
    until: datetime,
    holder: str,
    wait: timedelta,
    interval: timedelta,
) -> bool:
    """Take a due group for one deliverer. The UPDATE re-checks that it is due and not
    claimed, so of two deliverers that read it only one gets it (both dialects)."""
    result = await session.execute(
        update(NotificationGroup)
        .where(
            NotificationGroup.channel_id == channel_id,
            NotificationGroup.group_key == group_key,
            _due(now, wait, interval),
        )
        .values(claim_until=until, claim_holder=holder)
        .execution_options(synchronize_session=False)
    )
    return _rows(result) == 1


async def group_subjects(
    session: AsyncSession, channel_id: int, group_key: str
) -> Sequence[NotificationSubject]:
    """What a send of the group carries: every changed alert, and every unresolved one."""
    stmt = (
        select(NotificationSubject)
        .where(
            NotificationSubject.channel_id == channel_id,
            NotificationSubject.group_key == group_key,
            or_(NotificationSubject.pending.is_(True), NotificationSubject.status != "resolved"),
        )
        .order_by(NotificationSubject.alert_id)
    )
    return (await session.scalars(stmt)).all()


async def mark_sent(
    session: AsyncSession,
    channel_id: int,
    group_key: str,
    holder: str,
    *,
    version: int,
    now: datetime,
    repeat_at: datetime | None,
) -> bool:
    """The group version `version` was sent. A change made meanwhile (a higher version)
    stays pending (due group_interval from now). False if our claim was lost."""
    g = NotificationGroup
    result = await session.execute(
        update(g)
        .where(g.channel_id == channel_id, g.group_key == group_key, g.claim_holder == holder)
        .values(
            sent_version=version,
            sends=g.sends + 1,
            last_sent_at=now,
            attempts=0,
            last_error=None,
            next_attempt_at=None,
            claim_until=None,
            claim_holder=None,
            pending=g.version != version,
            repeat_at=repeat_at,
        )
        .execution_options(synchronize_session=False)
    )
    return _rows(result) == 1


async def mark_subjects_sent(
    session: AsyncSession, channel_id: int, sent: Sequence[tuple[int, int, str]], now: datetime
) -> None:
    """(alert id, version, status) as sent: pending ends only where the version is still the
    one sent (CAS); a resolved alert that was told is done and forgotten."""
    s = NotificationSubject
    for alert_id, version, status in sent:
        where = (s.channel_id == channel_id, s.alert_id == alert_id, s.version == version)
        if status == "resolved":
            await session.execute(delete(s).where(*where))
            continue
        await session.execute(
            update(s)
            .where(*where)
            .values(pending=False, pending_since=None, notified_at=now, notified_status=status)
            .execution_options(synchronize_session=False)
        )


async def mark_failed(
    session: AsyncSession,
    channel_id: int,
    group_key: str,
    holder: str,
    *,
    error: str,
    next_attempt_at: datetime,
) -> None:
    g = NotificationGroup
    await session.execute(
        update(g)
        .where(g.channel_id == channel_id, g.group_key == group_key, g.claim_holder == holder)
        .values(
            attempts=g.attempts + 1,
            last_error=error,
            next_attempt_at=next_attempt_at,
            claim_until=None,
            claim_holder=None,
        )
        .execution_options(synchronize_session=False)
    )


async def release(
    session: AsyncSession, channel_id: int, group_key: str, holder: str, version: int
) -> None:
    """Nothing to send after all (e.g. a repeat of alerts resolved meanwhile)."""
    g = NotificationGroup
    await session.execute(
        update(g)
        .where(g.channel_id == channel_id, g.group_key == group_key, g.claim_holder == holder)
        .values(claim_until=None, claim_holder=None, repeat_at=None, pending=g.version != version)
        .execution_options(synchronize_session=False)
    )
