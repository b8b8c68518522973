"""All SQL of retention: policies, holds, archive segments, and the event clauses built
from them (which rule an event belongs to, whether a hold covers it, whether it is archived)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    case,
    delete,
    false,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from audit_service.audit_log.models import AuditEvent, AuditLeaf
from audit_service.audit_log.repository import EventFilters
from audit_service.kit.net import parse_ip_or_network
from audit_service.retention.models import RetentionArchive, RetentionHold, RetentionPolicy
from audit_service.retention.policy import Policy

Bind = AsyncSession | AsyncConnection
_policies = cast(Table, RetentionPolicy.__table__)
_holds = cast(Table, RetentionHold.__table__)
_archives = cast(Table, RetentionArchive.__table__)


def _like_prefix(prefix: str) -> ColumnElement[bool]:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return AuditEvent.action.like(f"{escaped}%", escape="\\")


def match_clause(match: dict[str, str] | Any) -> ColumnElement[bool]:
    """SQL of policy.matches: every key of the rule's match (none: true)."""
    e = AuditEvent
    where: list[ColumnElement[bool]] = []
    for key, value in dict(match).items():
        if key == "action_prefix":
            where.append(_like_prefix(str(value)))
        else:
            where.append(getattr(e, key) == value)
    return and_(literal(True), *where)


def policy_case(policies: Sequence[Policy]) -> ColumnElement[Any]:
    """The id of the policy an event belongs to (policy.assign as SQL): a CASE over the
    rules in position order; NULL when none matches."""
    ordered = sorted(policies, key=lambda p: p.position)
    if not ordered:
        return null()
    return case(*((match_clause(p.match), literal(p.id)) for p in ordered), else_=null())


def policy_clause(policies: Sequence[Policy], policy_id: int) -> ColumnElement[bool]:
    """True for the events that belong to rule `policy_id` (first match): its own match and
    none of the rules before it. Plain ANDs and NOTs, so the planner can use the indexes
    a rule's columns lead (action, module, outcome, source, tenant)."""
    ordered = sorted(policies, key=lambda p: p.position)
    where: list[ColumnElement[bool]] = []
    for p in ordered:
        if p.id == policy_id:
            where.append(match_clause(p.match))
            return and_(*where)
        where.append(~match_clause(p.match))
    return false()


def _policy(row: Any) -> Policy:
    return Policy(
        id=row.id,
        position=row.position,
        name=row.name,
        match=dict(row.match or {}),
        archive_after_days=row.archive_after_days,
        delete_after_days=row.delete_after_days,
        critical=bool(row.critical),
        created_at=row.created_at,
        created_by=row.created_by,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


async def list_policies(bind: Bind) -> list[Policy]:
    stmt = select(_policies).order_by(_policies.c.position)
    return [_policy(row) for row in (await bind.execute(stmt)).all()]


def hold_filters(spec: dict[str, Any]) -> EventFilters:
    """A hold's stored filter (the `/admin/activity` names) as the activity query's filters."""
    actions = spec.get("action") or ()
    ip = spec.get("ip")
    since = spec.get("since")
    until = spec.get("until")
    extra: list[ColumnElement[bool]] = []
    if spec.get("actor_id") is not None:
        extra.append(AuditEvent.actor_id == spec["actor_id"])
    return EventFilters(
        actor=spec.get("actor"),
        actions=tuple([actions] if isinstance(actions, str) else actions),
        module=spec.get("module"),
        outcome=spec.get("outcome"),
        source=spec.get("source"),
        tenant_id=spec.get("tenant_id"),
        since=datetime.fromisoformat(since) if since else None,
        until=datetime.fromisoformat(until) if until else None,
        ip=parse_ip_or_network(ip) if ip else None,
        target_type=spec.get("target_type"),
        target_id=spec.get("target_id"),
        extra=tuple(extra),
    )


async def active_hold_filters(bind: Bind) -> list[dict[str, Any]]:
    stmt = select(_holds.c.filter).where(_holds.c.released_at.is_(None)).order_by(_holds.c.id)
    return [dict(row.filter) for row in (await bind.execute(stmt)).all()]


async def held_clause(session: Bind) -> ColumnElement[bool]:
    """True for the audit_event rows under any active legal hold (false when none is)."""
    specs = await active_hold_filters(session)
    if not specs:
        return false()
    return or_(*(and_(literal(True), *hold_filters(s).conditions()) for s in specs))


async def archived_clause(session: Bind, policy_id: int | None = None) -> ColumnElement[bool]:
    """True for the audit_event rows that are in a written archive segment. A segment holds
    every event of its policy recorded in its UTC day, so an event is archived when the
    segment of its own policy (first match, `policy_case`) whose day and id range hold it
    exists: an EXISTS over retention_archive (one row per policy and day; its unique
    (policy_id, day) index). `policy_id` narrows it to that policy's segments."""
    policies = await list_policies(session)
    a = _archives.alias("archived")
    e = AuditEvent
    cond = [
        a.c.policy_id == policy_case(policies),
        e.recorded_at >= a.c.recorded_from,
        e.recorded_at < a.c.recorded_until,
        e.id >= a.c.first_id,
        e.id <= a.c.last_id,
    ]
    if policy_id is not None:
        cond.append(a.c.policy_id == policy_id)
    return select(literal(1)).select_from(a).where(*cond).exists()


# --- policies --------------------------------------------------------------------------


class Conflict(Exception):
    """A unique column (position, name) is taken."""


async def get_policy(bind: Bind, policy_id: int) -> Policy | None:
    row = (await bind.execute(select(_policies).where(_policies.c.id == policy_id))).first()
    return None if row is None else _policy(row)


async def add_policy(session: AsyncSession, values: dict[str, Any]) -> Policy:
    try:
        async with session.begin_nested():
            row = (
                await session.execute(insert(_policies).values(values).returning(_policies))
            ).one()
    except IntegrityError:
        raise Conflict from None
    return _policy(row)


async def update_policy(session: AsyncSession, policy_id: int, values: dict[str, Any]) -> Policy:
    stmt = update(_policies).where(_policies.c.id == policy_id).values(values).returning(_policies)
    try:
        async with session.begin_nested():
            row = (await session.execute(stmt)).one()
    except IntegrityError:
        raise Conflict from None
    return _policy(row)


async def delete_policy(session: AsyncSession, policy_id: int) -> None:
    await session.execute(delete(_policies).where(_policies.c.id == policy_id))


# --- holds -----------------------------------------------------------------------------


async def add_hold(session: AsyncSession, values: dict[str, Any]) -> Any:
    return (await session.execute(insert(_holds).values(values).returning(_holds))).one()


async def list_holds(bind: Bind, *, active_only: bool = False) -> list[Any]:
    stmt = select(_holds).order_by(_holds.c.id.desc()).limit(1000)
    if active_only:
        stmt = stmt.where(_holds.c.released_at.is_(None))
    return list((await bind.execute(stmt)).all())


async def get_hold(bind: Bind, hold_id: int) -> Any:
    return (await bind.execute(select(_holds).where(_holds.c.id == hold_id))).first()


async def release_hold(
    session: AsyncSession, hold_id: int, released_at: datetime, released_by: str | None
) -> Any:
    """Release an active hold; None when it is unknown or released already."""
    stmt = (
        update(_holds)
        .where(_holds.c.id == hold_id, _holds.c.released_at.is_(None))
        .values(released_at=released_at, released_by=released_by)
        .returning(_holds)
    )
    return (await session.execute(stmt)).first()


# --- archive segments ------------------------------------------------------------------


class ChainMoved(Exception):
    """Another segment was added (or this one exists) since this one was signed."""


async def chain_head(bind: Bind) -> str | None:
    """The manifest hash of the newest segment: what the next one chains to."""
    stmt = select(_archives.c.manifest_hash).order_by(_archives.c.id.desc()).limit(1)
    return cast(str | None, await bind.scalar(stmt))


async def archived_until(bind: Bind, policy_id: int) -> date | None:
    """The last UTC day written for the policy: its archive proceeds day by day from the
    oldest, so every earlier day with events of the policy is written."""
    stmt = select(func.max(_archives.c.day)).where(_archives.c.policy_id == policy_id)
    return cast(date | None, await bind.scalar(stmt))


async def archive_exists(bind: Bind, policy_id: int, day: date) -> bool:
    stmt = select(_archives.c.id).where(_archives.c.policy_id == policy_id, _archives.c.day == day)
    return (await bind.scalar(stmt)) is not None


async def add_archive(session: AsyncSession, values: dict[str, Any]) -> None:
    """Insert a segment's row, chained to the current head (checked in this transaction;
    the unique previous_manifest_hash refuses a fork from a concurrent writer)."""
    head = await chain_head(session)
    if head != values["previous_manifest_hash"]:
        raise ChainMoved
    try:
        async with session.begin_nested():
            await session.execute(insert(_archives).values(values))
    except IntegrityError:
        raise ChainMoved from None


async def list_archives(
    bind: Bind, *, policy_id: int | None = None, limit: int = 100, before_id: int | None = None
) -> list[Any]:
    stmt = select(_archives).order_by(_archives.c.id.desc()).limit(limit)
    if policy_id is not None:
        stmt = stmt.where(_archives.c.policy_id == policy_id)
    if before_id is not None:
        stmt = stmt.where(_archives.c.id < before_id)
    return list((await bind.execute(stmt)).all())


# --- archive uploads (retention/upload.py) ---------------------------------------------


async def pending_uploads(bind: Bind, limit: int) -> list[Any]:
    """Segments not yet confirmed in the bucket, oldest first."""
    a = _archives
    stmt = (
        select(a.c.id, a.c.path, a.c.sha256, a.c.manifest_hash)
        .where(a.c.uploaded_at.is_(None))
        .order_by(a.c.id)
        .limit(limit)
    )
    return list((await bind.execute(stmt)).all())


async def count_pending_uploads(bind: Bind) -> int:
    stmt = select(func.count()).select_from(_archives).where(_archives.c.uploaded_at.is_(None))
    return int(await bind.scalar(stmt) or 0)


async def mark_uploaded(session: AsyncSession, archive_id: int, key: str, at: datetime) -> None:
    stmt = (
        update(_archives)
        .where(_archives.c.id == archive_id)
        .values(s3_key=key, uploaded_at=at, s3_error=None)
    )
    await session.execute(stmt)


async def mark_upload_failed(session: AsyncSession, archive_id: int, error: str) -> None:
    stmt = update(_archives).where(_archives.c.id == archive_id).values(s3_error=error[:500])
    await session.execute(stmt)


# --- events ----------------------------------------------------------------------------

_events = cast(Table, AuditEvent.__table__)
_leaves = cast(Table, AuditLeaf.__table__)


async def next_recorded_at(
    bind: Bind, clause: ColumnElement[bool], after: datetime | None, before: datetime
) -> datetime | None:
    """The oldest recorded_at in [after, before) of the events `clause` selects: a walk of
    ix_audit_event_recorded_at_id from `after` to the first match."""
    where = [clause, _events.c.recorded_at < before]
    if after is not None:
        where.append(_events.c.recorded_at >= after)
    stmt = select(func.min(_events.c.recorded_at)).where(*where)
    value = await bind.scalar(stmt)
    return None if value is None else _aware(value)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def day_events(
    bind: Bind, clause: ColumnElement[bool], start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """The events `clause` selects recorded in [start, end), in log order, each a dict of
    audit_event columns plus `position` and `leaf_hash` (None until sequenced)."""
    stmt = (
        select(_leaves.c.position, _leaves.c.leaf_hash, *_events.columns)
        .select_from(_events.outerjoin(_leaves, _leaves.c.event_pk == _events.c.id))
        .where(clause, _events.c.recorded_at >= start, _events.c.recorded_at < end)
        .order_by(_leaves.c.position, _events.c.id)
    )
    return [dict(r._mapping) for r in (await bind.execute(stmt)).all()]


async def count_events(
    bind: Bind,
    clause: ColumnElement[bool],
    after: datetime | None,
    before: datetime,
    *extra: ColumnElement[bool],
) -> int:
    """Events `clause` selects recorded in [after, before): a range of
    ix_audit_event_recorded_at_id (see service.preview)."""
    where = [clause, _events.c.recorded_at < before, *extra]
    if after is not None:
        where.append(_events.c.recorded_at >= after)
    return int(await bind.scalar(select(func.count()).select_from(_events).where(*where)) or 0)


def count_statement(
    clause: ColumnElement[bool], after: datetime | None, before: datetime
) -> Select[Any]:
    """The statement `count_events` runs (for EXPLAIN in the tests)."""
    where = [clause, _events.c.recorded_at < before]
    if after is not None:
        where.append(_events.c.recorded_at >= after)
    return select(func.count()).select_from(_events).where(*where)
