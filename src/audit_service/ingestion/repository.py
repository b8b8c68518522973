"""All SQL about action schemas (events themselves are written by `audit_log.repository`)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import JSON, CursorResult, Table, delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.core.cache import MISS, usable
from audit_service.core.db import is_postgres, lock_for_transaction
from audit_service.ingestion.models import ActionSchema, SourceAction
from audit_service.kit.models import UTCDateTime, utcnow


async def get_schema(session: AsyncSession, action: str) -> ActionSchema | None:
    return await session.get(ActionSchema, action)


_SCHEMA_COLUMNS = tuple(c.key for c in ActionSchema.__mapper__.column_attrs)


async def get_schemas(session: AsyncSession, actions: Collection[str]) -> dict[str, ActionSchema]:
    """The registered schemas of these actions (most have none). From the process's cache
    when it knows every one of them, absent schemas included (core/cache.py); cached rows are
    session-less, for reading."""
    if not actions:
        return {}
    cache = usable(session, "action_schema")
    if cache is not None:
        known = {action: cache.get("action_schema", action) for action in actions}
        if MISS not in known.values():
            return {a: ActionSchema(**v) for a, v in known.items() if v is not None}
        stamp = cache.stamp("action_schema")
    # Most requests carry one action: plain equality is a cheaper statement than IN (…).
    (first, *others) = actions
    where = ActionSchema.action.in_(actions) if others else ActionSchema.action == first
    stmt = select(ActionSchema).where(where)
    found = {row.action: row for row in await session.scalars(stmt)}
    if cache is not None:
        for action in actions:
            row = found.get(action)
            values = None if row is None else {c: getattr(row, c) for c in _SCHEMA_COLUMNS}
            cache.put("action_schema", action, values, stamp)
    return found


async def list_schemas(session: AsyncSession) -> list[ActionSchema]:
    return list(await session.scalars(select(ActionSchema).order_by(ActionSchema.action)))


class ConcurrentChange(Exception):
    pass


class ConcurrentDelete(ConcurrentChange):
    """The row was deleted by another request between our read and our write."""


async def create_schema(session: AsyncSession, schema: ActionSchema) -> ActionSchema:
    session.add(schema)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:  # another request created it first
        raise ConcurrentChange(schema.action) from exc
    return schema


async def update_schema(
    session: AsyncSession,
    action: str,
    json_schema: dict[str, Any],
    updated_at: datetime,
    updated_by: int | None,
) -> ActionSchema:
    """Replace a schema read earlier in this request. A plain UPDATE whose row count says
    whether the row still exists: the ORM's unit of work would raise StaleDataError (a 500)
    when a concurrent DELETE won."""
    stmt = (
        update(ActionSchema)
        .where(ActionSchema.action == action)
        .values(json_schema=json_schema, updated_at=updated_at, updated_by=updated_by)
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(stmt)
    if cast(CursorResult[Any], result).rowcount != 1:
        raise ConcurrentDelete(action)
    row = await session.get(ActionSchema, action, populate_existing=True)
    if row is None:
        raise ConcurrentDelete(action)
    return row


async def delete_schema(session: AsyncSession, action: str) -> None:
    stmt = (
        delete(ActionSchema)
        .where(ActionSchema.action == action)
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(stmt)
    if cast(CursorResult[Any], result).rowcount != 1:  # deleted meanwhile
        raise ConcurrentDelete(action)


# --- the per-source cap on distinct actions -------------------------------------------------

_source_action = cast(Table, SourceAction.__table__)


async def known_actions(session: AsyncSession, source: str, actions: Collection[str]) -> set[str]:
    """Which of `actions` `source` has used before: from the process's cache when it knows
    them all (only known pairs are kept, so a new action always asks the database)."""
    cache = usable(session, "source_action")
    if cache is not None:
        if all(cache.get("source_action", (source, a)) is True for a in actions):
            return set(actions)
        stamp = cache.stamp("source_action")
    stmt = select(SourceAction.action).where(
        SourceAction.source == source, SourceAction.action.in_(actions)
    )
    found = set(await session.scalars(stmt))
    if cache is not None:
        for action in found:
            cache.put("source_action", (source, action), True, stamp)
    return found


async def add_actions(
    session: AsyncSession, source: str, actions: Collection[str], cap: int
) -> int | None:
    """Note `actions` as used by `source`, unless that takes it past `cap` distinct actions:
    then nothing is noted and the number it already has is returned (None when noted).

    Serialized per source (a transaction lock on Postgres; SQLite's single writer), so
    concurrent batches cannot each pass the check and together exceed the cap."""
    await lock_for_transaction(session, f"source_action:{source}", _source_action)
    already = set(
        await session.scalars(
            select(SourceAction.action).where(
                SourceAction.source == source, SourceAction.action.in_(actions)
            )
        )
    )
    new = [a for a in actions if a not in already]
    if not new:
        return None
    have = int(
        await session.scalar(
            select(func.count()).select_from(SourceAction).where(SourceAction.source == source)
        )
        or 0
    )
    if have + len(new) > cap:
        return have
    now = utcnow()
    session.add_all(SourceAction(source=source, action=a, first_seen=now) for a in new)
    await session.flush()
    return None


# --- GET /admin/actions ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActionRow:
    action: str
    module: str | None
    counted: int | None  # up to the cap; None where the estimate alone decided
    estimate: int | None  # Postgres' statistics (None on SQLite, or not a common value)
    json_schema: dict[str, Any] | None
    schema_updated_at: datetime | None


# One statement for the whole listing. Postgres: the distinct actions by a loose index scan
# of ix_audit_event_action_occurred_at (one probe per action), and per action one backward
# probe for its latest module and an index-only count capped at :cap rows, skipped when the
# planner statistics already say it has far more (then the estimate is the answer).
_ACTIONS_POSTGRES = """
WITH RECURSIVE actions(action) AS (
    (SELECT action FROM audit_event ORDER BY action LIMIT 1)
    UNION ALL
    SELECT (SELECT e.action FROM audit_event e WHERE e.action > a.action ORDER BY e.action LIMIT 1)
    FROM actions a WHERE a.action IS NOT NULL
),
names AS (
    SELECT action FROM actions WHERE action IS NOT NULL
    UNION SELECT action FROM action_schema
),
stats AS (
    SELECT s.most_common_vals::text::text[] AS vals, s.most_common_freqs AS freqs,
           greatest(c.reltuples, 0) AS total,
           -- the planner's share for a value outside the most-common list
           (1 - coalesce((SELECT sum(f) FROM unnest(s.most_common_freqs) AS f), 0))
             / nullif(CASE WHEN s.n_distinct < 0 THEN -s.n_distinct * greatest(c.reltuples, 0)
                           ELSE s.n_distinct END
                      - coalesce(cardinality(s.most_common_freqs), 0), 0) AS rest_freq
    FROM pg_stats s JOIN pg_class c ON c.oid = 'audit_event'::regclass
    WHERE s.schemaname = current_schema() AND s.tablename = 'audit_event'
      AND s.attname = 'action'
)
SELECT n.action,
       (SELECT e.module FROM audit_event e WHERE e.action = n.action
        ORDER BY e.occurred_at DESC LIMIT 1) AS module,
       CASE WHEN coalesce(est.estimate, 0) > :skip_count_above THEN NULL
            ELSE (SELECT count(*) FROM (SELECT 1 FROM audit_event e WHERE e.action = n.action
                                        LIMIT :cap) AS capped)
       END AS counted,
       est.estimate,
       sch.schema, sch.updated_at
FROM names n
LEFT JOIN LATERAL (
    SELECT (st.total * coalesce(st.freqs[array_position(st.vals, n.action::text)],
                                st.rest_freq))::bigint AS estimate
    FROM stats st
) est ON true
LEFT JOIN action_schema sch ON sch.action = n.action
ORDER BY n.action
"""

# SQLite (embedded, small): exact counts by one GROUP BY.
_ACTIONS_SQLITE = """
WITH counts AS (SELECT action, count(*) AS n FROM audit_event GROUP BY action),
names AS (SELECT action FROM counts UNION SELECT action FROM action_schema)
SELECT n.action,
       (SELECT e.module FROM audit_event e WHERE e.action = n.action
        ORDER BY e.occurred_at DESC, e.id DESC LIMIT 1) AS module,
       coalesce(c.n, 0) AS counted,
       NULL AS estimate,
       sch.schema, sch.updated_at
FROM names n
LEFT JOIN counts c ON c.action = n.action
LEFT JOIN action_schema sch ON sch.action = n.action
ORDER BY n.action
"""


async def list_actions(
    session: AsyncSession, *, cap: int, skip_count_above: int
) -> list[ActionRow]:
    """Every action with an event or a schema, in one statement (it was one per action)."""
    columns = {"schema": JSON(), "updated_at": UTCDateTime()}
    if is_postgres(session):
        # The statement's cost estimate triggers JIT compilation, which took ~1 s of a 1.5 s
        # listing (EXPLAIN ANALYZE, 300k events): compiling costs more than it saves here.
        await session.execute(text("SET LOCAL jit = off"))
        stmt = text(_ACTIONS_POSTGRES).columns(**columns)  # type: ignore[arg-type]
        params = {"cap": cap, "skip_count_above": skip_count_above}
    else:
        stmt = text(_ACTIONS_SQLITE).columns(**columns)  # type: ignore[arg-type]
        params = {}
    rows = await session.execute(stmt, params)
    return [
        ActionRow(
            action=row.action,
            module=row.module,
            counted=None if row.counted is None else int(row.counted),
            estimate=None if row.estimate is None else int(row.estimate),
            json_schema=row.schema,
            schema_updated_at=row.updated_at,
        )
        for row in rows
    ]
