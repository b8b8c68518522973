"""All SQL that writes or reads audit events."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    Table,
    bindparam,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    tuple_,
    union,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from audit_service.audit_log.models import AuditEvent, AuditLeaf
from audit_service.core.db import (
    copy_out,
    epoch_seconds,
    estimated_rows,
    is_postgres,
    is_postgres_conn,
    neutralized_text,
    utc_iso,
    within_budget,
)
from audit_service.kit.models import UTCDateTime, utcnow
from audit_service.kit.net import IPAddress, IPNetwork, ip_key, network_key_ranges

_table = cast(Table, AuditEvent.__table__)
COUNT_BUDGET_MS = 20  # what an exact total may cost a page, at most
ESTIMATE_SUFFICES = 20  # planner expects > 20x the cap: counting cannot make it exact


async def insert_events(
    bind: AsyncConnection | AsyncSession, rows: Sequence[dict[str, Any]]
) -> None:
    """Append events. One statement for the whole batch (a multi-row INSERT on both dialects)."""
    if rows:
        recorded_at = utcnow()
        await bind.execute(insert(_table), [{**row, "recorded_at": recorded_at} for row in rows])


async def existing_event_ids(bind: AsyncConnection, event_ids: Sequence[Any]) -> set[Any]:
    """Which of these event_ids are stored (the writer's check after an ambiguous commit)."""
    if not event_ids:
        return set()
    result = await bind.execute(
        select(AuditEvent.event_id).where(AuditEvent.event_id.in_(list(event_ids)))
    )
    return set(result.scalars().all())


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
    request_id: str | None = None
    # Excludes narrow the other filters; none of them drops an event for a missing value
    # (an event with no IP is not excluded by exclude_ip, nor one without a name by
    # exclude_actor): SQL's NOT IN / NOT on a NULL would be NULL, i.e. the row filtered out.
    exclude_actors: tuple[str, ...] = ()
    exclude_actions: tuple[str, ...] = ()
    exclude_ip: IPAddress | IPNetwork | None = None
    extra: tuple[ColumnElement[bool], ...] = field(default=())

    def conditions(self, *, with_actor: bool = True) -> list[ColumnElement[bool]]:
        e = AuditEvent
        where: list[ColumnElement[bool]] = list(self.extra)
        if self.actor is not None and with_actor:
            where.append(or_(e.actor_id == self.actor, e.actor_name == self.actor))
        if self.actions:
            where.append(e.action.in_(self.actions))
        for column, value in (
            (e.module, self.module),
            (e.outcome, self.outcome),
            (e.source, self.source),
            (e.tenant_id, self.tenant_id),
            (e.target_type, self.target_type),
            (e.target_id, self.target_id),
        ):
            if value is not None:
                where.append(column == value)
        if self.since is not None:
            where.append(e.occurred_at >= self.since)
        if self.until is not None:
            where.append(e.occurred_at < self.until)
        if self.ip is not None:
            where.append(_ip_matches(self.ip))
        if self.request_id is not None:
            where.append(e.request_id == self.request_id)
        if self.exclude_actors:
            # `actor` matches the id or the name, so excluding one excludes both.
            for column in (e.actor_id, e.actor_name):
                where.append(or_(column.is_(None), column.not_in(self.exclude_actors)))
        if self.exclude_actions:
            where.append(e.action.not_in(self.exclude_actions))  # never NULL
        if self.exclude_ip is not None:
            where.append(or_(e.ip_bytes.is_(None), ~_ip_matches(self.exclude_ip)))
        if self.q:
            # Escaped so %, _ and backslash are literal (no wildcard injection). ILIKE on
            # Postgres is what the trigram index serves; SQLite compares lower() LIKE lower().
            pattern = self.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append(e.description.ilike(f"%{pattern}%", escape="\\"))
        return where


def _ip_matches(ip: IPAddress | IPNetwork) -> ColumnElement[bool]:
    e = AuditEvent
    if isinstance(ip, IPNetwork):
        ranges = network_key_ranges(ip)
        return or_(*(e.ip_bytes.between(lo, hi) for lo, hi in ranges))
    return e.ip_bytes == ip_key(ip)


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Which slice of the newest-first order to read."""

    limit: int
    offset: int = 0
    older_than: tuple[datetime, int] | None = None  # keyset: rows after this one
    newer_than: tuple[datetime, int] | None = None  # keyset: rows before this one
    oldest: bool = False  # the last page, without an OFFSET over everything before it


def _order(occurred_at: Any, row_id: Any, ascending: bool) -> tuple[Any, Any]:
    if ascending:
        return occurred_at.asc(), row_id.asc()
    return occurred_at.desc(), row_id.desc()


async def list_events(
    session: AsyncSession, filters: EventFilters, page: PageRequest
) -> list[AuditEvent]:
    """A page of events, newest first, by OFFSET (shallow pages) or by keyset (any depth).

    Pages before a keyset and the last page are read in ascending order (so an index scan
    stops after `limit` rows) and turned around here.
    """
    e = AuditEvent
    ascending = page.newer_than is not None or page.oldest
    where = filters.conditions(with_actor=False)
    if page.older_than is not None:
        where.append(tuple_(e.occurred_at, e.id) < tuple_(*page.older_than))
    if page.newer_than is not None:
        where.append(tuple_(e.occurred_at, e.id) > tuple_(*page.newer_than))
    order = _order(e.occurred_at, e.id, ascending)
    if filters.actor is None:
        stmt = select(e).where(*where).order_by(*order).offset(page.offset).limit(page.limit)
    else:
        # `actor` matches the id or the name. An OR defeats the ordered index scans, so each
        # side walks its own (column, occurred_at, id) index and the two short lists merge.
        depth = page.offset + page.limit
        sides = [
            select(e.id, e.occurred_at)
            .where(*where, column == filters.actor)
            .order_by(*order)
            .limit(depth)
            .subquery()
            for column in (e.actor_id, e.actor_name)
        ]
        merged = union(*(select(side) for side in sides)).subquery()
        ids = (
            select(merged.c.id)
            .order_by(*_order(merged.c.occurred_at, merged.c.id, ascending))
            .offset(page.offset)
            .limit(page.limit)
        )
        stmt = select(e).where(e.id.in_(ids)).order_by(*order)
    rows = list((await session.scalars(stmt)).all())
    if ascending:
        rows.reverse()
    return rows


async def count_events(
    session: AsyncSession, filters: EventFilters, *, exact_up_to: int | None = None
) -> tuple[int, bool]:
    """(total, is_estimate): exact up to `exact_up_to` matches, else the planner's estimate.

    On Postgres a page header never counts millions of rows: when the planner already
    expects far more than the cap, its estimate is the answer; otherwise at most cap + 1
    matches are counted, within a time budget. SQLite (the embedded default) counts exactly.
    """
    matching: Select[Any] = (
        select(literal_column("1")).select_from(AuditEvent).where(*filters.conditions())
    )
    if exact_up_to is None or not is_postgres(session):
        total = await session.scalar(select(func.count()).select_from(matching.subquery()))
        return int(total or 0), False
    estimate = await estimated_rows(session, matching)
    if estimate > ESTIMATE_SUFFICES * exact_up_to:
        return estimate, True
    capped = _capped_count(filters, exact_up_to + 1)

    async def count_capped() -> int:
        return int(await session.scalar(capped) or 0)

    # Substring search has a 200 ms target (not 50): its count may take longer to be exact.
    budget = COUNT_BUDGET_MS * 5 if filters.q else COUNT_BUDGET_MS
    total = await within_budget(session, budget, count_capped)
    if total is not None and total <= exact_up_to:
        return total, False
    return max(total or 0, estimate), True


def _capped_count(filters: EventFilters, limit: int) -> Select[Any]:
    e = AuditEvent
    if filters.actor is None:
        matching: Select[Any] = (
            select(literal_column("1")).select_from(e).where(*filters.conditions())
        )
        return select(func.count()).select_from(matching.limit(limit).subquery())
    # As in list_events: the id side and the name side each walk their own index.
    where = filters.conditions(with_actor=False)
    sides = [
        select(e.id).where(*where, column == filters.actor).limit(limit).subquery()
        for column in (e.actor_id, e.actor_name)
    ]
    merged = union(*(select(side) for side in sides)).subquery()
    return select(func.count()).select_from(merged)


async def occurred_extent(
    session: AsyncSession, filters: EventFilters
) -> tuple[datetime | None, datetime | None]:
    """The earliest and latest occurred_at of the matching events (None, None: no match).
    Each is one end of an (column, occurred_at) index walk for the equality filters."""
    e = AuditEvent
    stmt = select(func.min(e.occurred_at), func.max(e.occurred_at)).where(*filters.conditions())
    row = (await session.execute(stmt)).one()
    return _aware(row[0]), _aware(row[1])


async def count_per_interval(
    session: AsyncSession,
    filters: EventFilters,
    interval: Callable[[ColumnElement[Any]], ColumnElement[Any]] | None,
) -> list[tuple[int, int]]:
    """(interval index, events) of the matching events, `interval` mapping occurred_at as
    epoch seconds to an index in SQL (the histogram's bars), non-empty intervals only;
    `interval` None: one interval, index 0."""
    if interval is None:
        stmt_one = select(func.count()).select_from(AuditEvent).where(*filters.conditions())
        n = int(await session.scalar(stmt_one) or 0)
        return [(0, n)] if n else []
    i = interval(epoch_seconds(session, AuditEvent.occurred_at)).label("i")
    stmt = select(i, func.count()).where(*filters.conditions()).group_by(i)
    return [(int(r[0]), int(r[1])) for r in (await session.execute(stmt)).all()]


def export_statement(filters: EventFilters) -> Select[Any]:
    """Every matching event, newest first, as plain columns (no ORM objects: exports are big)."""
    columns = [c for c in _table.columns if c.name != "ip_bytes"]
    return (
        select(*columns)
        .where(*filters.conditions())
        .order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc())
    )


EXPORT_COLUMNS = tuple(c.name for c in _table.columns if c.name != "ip_bytes")
_TIMESTAMPS = {"occurred_at", "recorded_at"}
_VERBATIM = {"id", "status_code", "latency_ms", "metadata", "event_id"}


def copy_export(
    conn: AsyncConnection, filters: EventFilters, fmt: str
) -> AsyncIterator[bytes] | None:
    """Postgres formats the export itself (COPY ... TO STDOUT): many times faster than Python,
    and the event loop only forwards bytes. None on other databases or formats.

    csv: header, RFC 4180 quoting, ISO 8601 UTC times, formula-leading text neutralized.
    ndjson: a JSON object per line, via COPY in CSV mode with a quote and a delimiter that
    JSON text cannot contain, so each line passes through verbatim.
    """
    if not is_postgres_conn(conn) or fmt not in ("csv", "ndjson"):
        return None
    columns = {name: _table.c[name] for name in EXPORT_COLUMNS}

    def cell(name: str, col: Any) -> Any:
        if name in _TIMESTAMPS:
            return utc_iso(col)
        return col if name in _VERBATIM or fmt == "ndjson" else neutralized_text(col)

    if fmt == "csv":
        row: list[Any] = [cell(name, col).label(name) for name, col in columns.items()]
        options: dict[str, Any] = {"format": "csv", "header": True}
    else:
        pairs: list[Any] = []
        for name, col in columns.items():
            pairs += [literal_column(f"'{name}'"), cell(name, col)]
        row = [func.json_build_object(*pairs)]
        options = {"format": "csv", "delimiter": "\x02", "quote": "\x01"}
    stmt = (
        select(*row)
        .where(*filters.conditions())
        .order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc())
    )
    return copy_out(conn, stmt, **options)


async def count_exact(conn: AsyncConnection, filters: EventFilters) -> int:
    stmt = select(func.count()).select_from(AuditEvent).where(*filters.conditions())
    return int(await conn.scalar(stmt) or 0)


async def stream_export(
    conn: AsyncConnection, filters: EventFilters, *, batch: int = 2000
) -> AsyncIterator[Sequence[Row[Any]]]:
    """Matching rows in batches from a server-side cursor: memory stays flat at any size."""
    result = await conn.stream(export_statement(filters).execution_options(yield_per=batch))
    try:
        async for rows in result.partitions(batch):
            yield rows
    finally:
        await result.close()


_leaves = cast(Table, AuditLeaf.__table__)


def _sequenced(filters: EventFilters, end: int) -> Select[Any]:
    return (
        select(_leaves.c.position, _leaves.c.leaf_hash, *_table.columns)
        .select_from(_leaves.join(_table, _table.c.id == _leaves.c.event_pk))
        .where(_leaves.c.position < end, *filters.conditions())
    )


async def count_sequenced(conn: AsyncConnection, filters: EventFilters, end: int) -> int:
    """Matching events with a log position below `end` (a checkpoint's tree size)."""
    stmt = select(func.count()).select_from(_sequenced(filters, end).subquery())
    return int(await conn.scalar(stmt) or 0)


async def stream_sequenced(
    conn: AsyncConnection, filters: EventFilters, end: int, *, batch: int
) -> AsyncIterator[list[dict[str, Any]]]:
    """Matching events below log position `end`, in log order, in batches of `batch`: each
    a dict of audit_event columns (`metadata` by column name) plus `position` and the stored
    `leaf_hash`, from a server-side cursor (memory stays flat at any size).

    Not `log.follow()`: a bundle is a filtered query over one snapshot, not a consumer
    following the log; `follow()` has no filters and would ship every row of the log to
    Python to keep the few that match."""
    stmt = _sequenced(filters, end).order_by(_leaves.c.position)
    result = await conn.stream(stmt.execution_options(yield_per=batch))
    try:
        async for rows in result.partitions(batch):
            yield [dict(r._mapping) for r in rows]
    finally:
        await result.close()


async def get_event(session: AsyncSession, event_id: int) -> AuditEvent | None:
    return await session.get(AuditEvent, event_id)


async def get_event_by_uuid(session: AsyncSession, event_id: uuid.UUID) -> AuditEvent | None:
    """By the public id (unique index)."""
    return await session.scalar(select(AuditEvent).where(AuditEvent.event_id == event_id))


def _aware(value: Any) -> datetime | None:
    """Aggregates lose the column type on SQLite: parse and tag UTC there."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# --- ingestion (events posted by other services) --------------------------------------------

# What an ingested event fills, with its Postgres array type; request-level facts (request_id,
# method, path, status_code, latency_ms) stay NULL.
INGEST_COLUMNS: tuple[tuple[str, str], ...] = (
    ("event_id", "uuid"),
    ("occurred_at", "timestamptz"),
    ("tenant_id", "text"),
    ("actor_type", "text"),
    ("actor_id", "text"),
    ("actor_name", "text"),
    ("actor_role", "text"),
    ("action", "text"),
    ("module", "text"),
    ("outcome", "text"),
    ("description", "text"),
    ("target_type", "text"),
    ("target_id", "text"),
    ("ip", "text"),
    ("ip_bytes", "bytea"),
    ("user_agent", "text"),
    ("metadata", "jsonb"),
    ("idempotency_key", "text"),
)
_IDEMPOTENCY = ["source", "idempotency_key"]  # uq_audit_event_source_idempotency_key


@dataclass(frozen=True, slots=True)
class Ingested:
    id: int
    event_id: uuid.UUID
    duplicate: bool


def _unnest_insert() -> Any:
    """Postgres: the batch travels as one array per column (binary-encoded by asyncpg) and is
    unpacked by `unnest`, so 1,000 events cost one round trip and no per-row SQL."""
    names = [name for name, _ in INGEST_COLUMNS]
    arrays = ", ".join(f"CAST(:{name} AS {type_}[])" for name, type_ in INGEST_COLUMNS)
    columns: list[ColumnElement[Any]] = [
        *(literal_column(f"u.{name}") for name in names),
        sql_cast(bindparam("recorded_at"), UTCDateTime()),
        sql_cast(bindparam("source"), String()),
    ]
    unpacked = select(*columns).select_from(text(f"unnest({arrays}) AS u({', '.join(names)})"))
    return (
        pg_insert(_table)
        .from_select([*names, "recorded_at", "source"], unpacked)
        .on_conflict_do_nothing(index_elements=_IDEMPOTENCY)
        .returning(_table.c.id, _table.c.event_id)
    )


_UNNEST_INSERT = _unnest_insert()
_VALUES_INSERT = (
    sqlite_insert(_table)
    .on_conflict_do_nothing(index_elements=_IDEMPOTENCY)
    .returning(_table.c.id, _table.c.event_id)
)


async def ingest_events(
    session: AsyncSession, source: str, rows: Sequence[dict[str, Any]]
) -> list[Ingested]:
    """Append events posted by `source`, each (source, idempotency_key) stored at most once.

    One `INSERT … ON CONFLICT (source, idempotency_key) DO NOTHING RETURNING` for the batch.
    A row whose key is already taken — by an earlier request, by a concurrent one (Postgres
    makes the insert wait for that transaction to finish), or earlier in this same batch — is
    answered with the stored event's id, marked duplicate. Results are in input order.
    """
    if not rows:
        return []
    recorded_at = utcnow()
    if is_postgres(session):
        params: dict[str, Any] = {
            name: [row[name] for row in rows] for name, _ in INGEST_COLUMNS if name != "metadata"
        }
        params["metadata"] = [json.dumps(row["metadata"]) for row in rows]
        result = await session.execute(
            _UNNEST_INSERT, {**params, "recorded_at": recorded_at, "source": source}
        )
    else:
        result = await session.execute(
            _VALUES_INSERT,
            [{**row, "recorded_at": recorded_at, "source": source} for row in rows],
        )
    inserted = {event_id: id_ for id_, event_id in result.all()}
    if len(inserted) == len(rows):
        return [Ingested(inserted[row["event_id"]], row["event_id"], False) for row in rows]

    missing = {row["idempotency_key"] for row in rows if row["event_id"] not in inserted}
    stored = {
        key: (id_, event_id)
        for id_, event_id, key in await session.execute(
            select(_table.c.id, _table.c.event_id, _table.c.idempotency_key).where(
                _table.c.source == source, _table.c.idempotency_key.in_(missing)
            )
        )
    }
    results = []
    for row in rows:
        if row["event_id"] in inserted:
            results.append(Ingested(inserted[row["event_id"]], row["event_id"], False))
        else:
            id_, event_id = stored[row["idempotency_key"]]
            results.append(Ingested(id_, event_id, True))
    return results


# Loose index scan: each step jumps to the next distinct value in ix_audit_event_action_*.
_DISTINCT_ACTIONS = """
WITH RECURSIVE actions(action) AS (
    (SELECT action FROM audit_event ORDER BY action LIMIT 1)
    UNION ALL
    SELECT (SELECT e.action FROM audit_event e WHERE e.action > a.action ORDER BY e.action LIMIT 1)
    FROM actions a WHERE a.action IS NOT NULL
)
SELECT action FROM actions WHERE action IS NOT NULL
"""
