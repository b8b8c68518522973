"""All SQL that writes or reads audit events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from audit_service.audit_log.models import AuditEvent
from audit_service.kit.models import utcnow
from audit_service.kit.net import IPAddress, IPNetwork, ip_key, network_key_range

_table = AuditEvent.__table__


async def insert_events(bind: AsyncConnection | AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Append events. One statement for the whole batch (a multi-row INSERT on both dialects)."""
    if rows:
        recorded_at = utcnow()
        await bind.execute(insert(_table), [{**row, "recorded_at": recorded_at} for row in rows])


@dataclass(frozen=True, slots=True)
class EventFilters:
    actor: str | None = None
    actions: tuple[str, ...] = ()
    module: str | None = None
    outcome: str | None = None
    source: str | None = None
    tenant_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    ip: IPAddress | IPNetwork | None = None
    q: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    extra: tuple[ColumnElement[bool], ...] = field(default=())

    def conditions(self) -> list[ColumnElement[bool]]:
        e = AuditEvent
        where: list[ColumnElement[bool]] = list(self.extra)
        if self.actor is not None:
            where.append(or_(e.actor_id == self.actor, e.actor_name == self.actor))
        if self.actions:
            where.append(e.action.in_(self.actions))
        for column, value in (
            (e.module, self.module), (e.outcome, self.outcome), (e.source, self.source),
            (e.tenant_id, self.tenant_id), (e.target_type, self.target_type),
            (e.target_id, self.target_id),
        ):
            if value is not None:
                where.append(column == value)
        if self.since is not None:
            where.append(e.occurred_at >= self.since)
        if self.until is not None:
            where.append(e.occurred_at < self.until)
        if self.ip is not None:
            if isinstance(self.ip, IPNetwork):
                low, high = network_key_range(self.ip)
                where.append(e.ip_bytes.between(low, high))
            else:
                where.append(e.ip_bytes == ip_key(self.ip))
        if self.q:
            # autoescape makes %, _ and the escape character literal: no wildcard injection.
            where.append(e.description.icontains(self.q, autoescape=True))
        return where


def _filtered(filters: EventFilters) -> Select[tuple[AuditEvent]]:
    return select(AuditEvent).where(and_(True, *filters.conditions()))


async def list_events(
    session: AsyncSession, filters: EventFilters, *, offset: int, limit: int
) -> list[AuditEvent]:
    stmt = (
        _filtered(filters)
        .order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return list((await session.scalars(stmt)).all())


async def count_events(session: AsyncSession, filters: EventFilters) -> int:
    stmt = select(func.count()).select_from(AuditEvent).where(and_(True, *filters.conditions()))
    return int((await session.scalar(stmt)) or 0)


async def get_event(session: AsyncSession, event_id: int) -> AuditEvent | None:
    return await session.get(AuditEvent, event_id)


async def count_recent(
    session: AsyncSession, *, action: str, actor_name: str, since: datetime
) -> tuple[int, datetime | None]:
    """How many `action` events `actor_name` produced since `since`, and the oldest one's time."""
    stmt = select(func.count(), func.min(AuditEvent.occurred_at)).where(
        AuditEvent.action == action,
        AuditEvent.actor_name == actor_name,
        AuditEvent.occurred_at >= since,
    )
    count, oldest = (await session.execute(stmt)).one()
    return int(count), _aware(oldest)


async def latest_time(
    session: AsyncSession, *, action: str, actor_name: str, outcome: str, since: datetime
) -> datetime | None:
    stmt = select(func.max(AuditEvent.occurred_at)).where(
        AuditEvent.action == action,
        AuditEvent.actor_name == actor_name,
        AuditEvent.outcome == outcome,
        AuditEvent.occurred_at >= since,
    )
    return _aware(await session.scalar(stmt))


def _aware(value: Any) -> datetime | None:
    """Aggregates lose the column type on SQLite: parse and tag UTC there."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
