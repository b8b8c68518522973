"""All SQL of retention: policies, holds, archive segments, and the event clauses built
from them (which rule an event belongs to, whether a hold covers it, whether it is archived)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    case,
    false,
    literal,
    null,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from audit_service.audit_log.models import AuditEvent
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
