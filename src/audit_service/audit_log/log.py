"""The log position (DESIGN §9): all SQL of the sequencer and of `follow()`.

Identity values are taken at insert but become visible at commit, so "rows with id > last"
skips the rows of slower transactions. Postgres stamps every row with its transaction's id
(`txid xid8 DEFAULT pg_current_xact_id()`); every transaction below the current snapshot's
xmin has ended, so the rows below it form a prefix of the commit history that can never
grow again: the sequencer appends them, in (txid, id) order, to `audit_leaf` with gap-free
positions. SQLite has one writer at a time, so there id order is commit order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from audit_service.audit_log.models import AuditEvent, AuditLeaf, LogCursor
from audit_service.core.db import (
    driver_connection,
    fetch_rows,
    is_postgres,
    write_lock_for_update,
)
from audit_service.kit.models import utcnow

_events = cast(Table, AuditEvent.__table__)
_leaves = cast(Table, AuditLeaf.__table__)
_cursor = cast(Table, LogCursor.__table__)
# Postgres-only, unmapped (migration 0009).
_TXID: ColumnElement[Any] = literal_column("audit_event.txid")
_HORIZON = text("pg_snapshot_xmin(pg_current_snapshot())")


@dataclass(frozen=True, slots=True)
class Cursor:
    next_position: int
    # None: still sequencing the rows written before migration 0009, by id (always, on
    # SQLite).
    txid: int | None
    event_pk: int


@dataclass(frozen=True, slots=True)
class Batch:
    """Unsequenced events in commit order (dicts of audit_event columns, `metadata` by
    column name), and the (txid, id) the cursor moves to after them."""

    events: Sequence[Mapping[str, Any]]
    last_txid: int | None
    last_id: int
    # The legacy (txid-less) rows are all sequenced: switch to (txid, id) order.
    legacy_done: bool = False


async def lock_cursor(session: AsyncSession) -> Cursor:
    """The sequencer's cursor, row-locked for this transaction (a second sequencer, e.g. a
    process that lost its lease but not its connection, waits here and then sees the moved
    cursor instead of appending the same events again)."""
    await write_lock_for_update(session, _cursor)
    row = (await session.execute(select(_cursor).where(_cursor.c.id == 1).with_for_update())).one()
    return Cursor(row.next_position, row.cursor_txid, row.cursor_id)


def _entry_columns() -> list[Any]:
    return [c for c in _events.c]


_SELECT = ", ".join(f'audit_event."{c.name}"' for c in _events.c)
# Postgres reads go straight to asyncpg (one round trip, rows decoded in C): SQLAlchemy's
# per-row result processing cost ~28 µs per event here, more than hashing the entry.
# (Column names come from the table's metadata; every value is a parameter.)
_PG_LEGACY = (
    f"SELECT {_SELECT} FROM audit_event"  # noqa: S608
    " WHERE txid IS NULL AND id > $1 ORDER BY id LIMIT $2"
)
# One statement, one snapshot: every row below its xmin is committed and visible to it.
# (ORDER BY names the table's columns: a bare `txid` would mean the text output column.)
_PG_NEXT = (
    f"SELECT {_SELECT}, audit_event.txid::text AS cursor_txid FROM audit_event"  # noqa: S608
    " WHERE (audit_event.txid, audit_event.id) > ($1::text::xid8, $2)"
    " AND audit_event.txid < pg_snapshot_xmin(pg_current_snapshot())"
    " ORDER BY audit_event.txid, audit_event.id LIMIT $3"
)
_PG_APPEND = (
    "INSERT INTO audit_leaf (position, event_pk, leaf_hash)"
    " SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[])"
)


async def unsequenced(session: AsyncSession, cursor: Cursor, limit: int) -> Batch:
    """The next committed events after `cursor`, at most `limit` (in the transaction of
    `lock_cursor`)."""
    if not is_postgres(session):
        stmt = (
            select(*_entry_columns())
            .where(_events.c.id > cursor.event_pk)
            .order_by(_events.c.id)
            .limit(limit)
        )
        rows = (await session.execute(stmt)).all()
        last = rows[-1].id if rows else cursor.event_pk
        return Batch([dict(r._mapping) for r in rows], None, last)
    # asyncpg's records are read-only mappings of the columns by name: used as they are
    # (a dict per row would cost ~3.7 µs per event).
    driver = await driver_connection(session)
    if cursor.txid is None:
        rows = await driver.fetch(_PG_LEGACY, cursor.event_pk, limit)
        last = rows[-1]["id"] if rows else cursor.event_pk
        return Batch(rows, None, last, legacy_done=len(rows) < limit)
    rows = await driver.fetch(_PG_NEXT, str(cursor.txid), cursor.event_pk, limit)
    if not rows:
        return Batch([], cursor.txid, cursor.event_pk)
    return Batch(rows, int(rows[-1]["cursor_txid"]), rows[-1]["id"])


async def append_leaves(
    session: AsyncSession, first_position: int, event_pks: Sequence[int], hashes: Sequence[bytes]
) -> None:
    if len(event_pks) != len(hashes):
        raise ValueError(f"{len(event_pks)} events but {len(hashes)} leaf hashes")
    if is_postgres(session):
        # One statement, one array per column (binary-encoded by asyncpg), no per-row SQL.
        positions = list(range(first_position, first_position + len(hashes)))
        driver = await driver_connection(session)
        await driver.execute(_PG_APPEND, positions, list(event_pks), list(hashes))
        return
    await session.execute(
        insert(_leaves),
        [
            {"position": first_position + i, "event_pk": pk, "leaf_hash": h}
            for i, (pk, h) in enumerate(zip(event_pks, hashes, strict=True))
        ],
    )


async def advance_cursor(session: AsyncSession, cursor: Cursor, batch: Batch) -> Cursor:
    if batch.legacy_done:
        # Every row with a txid is above (0, 0).
        moved = Cursor(cursor.next_position + len(batch.events), 0, 0)
    else:
        moved = Cursor(cursor.next_position + len(batch.events), batch.last_txid, batch.last_id)
    await session.execute(
        update(_cursor)
        .where(_cursor.c.id == 1)
        .values(
            next_position=moved.next_position,
            cursor_txid=moved.txid,
            cursor_id=moved.event_pk,
            updated_at=utcnow(),
        )
    )
    return moved


async def oldest_unsequenced(session: AsyncSession, cursor: Cursor) -> datetime | None:
    """`recorded_at` of the next event the sequencer will take (the first committed one
    after the cursor): its age is the sequencer's lag. Rows of still-open transactions are
    invisible, so a transaction held open shows as the lag of the rows committed behind it."""
    recorded = _events.c.recorded_at
    if not is_postgres(session) or cursor.txid is None:
        where: Any = _events.c.id > cursor.event_pk
        if is_postgres(session):
            where = and_(where, _TXID.is_(None))
        stmt = select(recorded).where(where).order_by(_events.c.id).limit(1)
        value = (await session.execute(stmt)).scalar()
    else:
        stmt = (
            select(recorded)
            .where(text("(audit_event.txid, audit_event.id) > (CAST(:t AS text)::xid8, :i)"))
            .order_by(_TXID, _events.c.id)
            .limit(1)
        )
        value = (
            await session.execute(stmt, {"t": str(cursor.txid), "i": cursor.event_pk})
        ).scalar()
    return cast(datetime | None, value)


async def tree_size(bind: AsyncSession | AsyncConnection) -> int:
    """How many events have a position (the size of the log)."""
    value = (await bind.execute(select(_cursor.c.next_position).where(_cursor.c.id == 1))).scalar()
    return int(value or 0)


# --- following the log -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Followed:
    position: int
    leaf_hash: bytes
    # None once retention has deleted the row (the leaf stays).
    event: Mapping[str, Any] | None


async def follow(bind: AsyncSession | AsyncConnection, *, after: int, limit: int) -> list[Followed]:
    """The events at positions after `after` (-1: from the start), in log order, at most
    `limit`: THE way to read new events (DESIGN §9). A consumer keeps `after` as its cursor
    and advances it in the same transaction as its own writes; it never skips an event."""
    stmt = (
        select(_leaves.c.position, _leaves.c.leaf_hash, *_entry_columns())
        .select_from(_leaves.outerjoin(_events, _events.c.id == _leaves.c.event_pk))
        .where(_leaves.c.position > after)
        .order_by(_leaves.c.position)
        .limit(limit)
    )
    out = []
    for r in (await bind.execute(stmt)).all():
        m = dict(r._mapping)
        position, leaf = m.pop("position"), m.pop("leaf_hash")
        out.append(Followed(position, leaf, m if m["id"] is not None else None))
    return out


async def leaves(bind: AsyncSession | AsyncConnection, start: int, end: int) -> list[Any]:
    """(position, event_pk, leaf_hash) for positions in [start, end), in order."""
    stmt = (
        select(_leaves.c.position, _leaves.c.event_pk, _leaves.c.leaf_hash)
        .where(_leaves.c.position >= start, _leaves.c.position < end)
        .order_by(_leaves.c.position)
    )
    return list((await bind.execute(stmt)).all())


async def position_of(bind: AsyncSession | AsyncConnection, event_pk: int) -> int | None:
    stmt = select(_leaves.c.position).where(_leaves.c.event_pk == event_pk)
    value = (await bind.execute(stmt)).scalar()
    return None if value is None else int(value)


# --- reading the whole log back (verify) -----------------------------------------------------

# (position, event_pk, leaf_hash, event or None once the row is gone, order key or None): one
# tuple per leaf, since verify builds millions of them.
StoredLeaf = tuple[int, int, bytes, dict[str, Any] | None, tuple[int, int] | None]
# The sequencer's order of a row: (txid, id), with -1 for rows that have no txid (written
# before migration 0009, sequenced first by id; always on SQLite, where id order is commit
# order). Positions follow it strictly: a row whose key is out of order was moved or forged.
NO_TXID = -1


async def read_cursor(bind: AsyncSession | AsyncConnection) -> Cursor | None:
    """The sequencer's cursor as committed (no lock: for readers such as verify, which may
    run as a read-only role); None if its row is gone."""
    row = (await bind.execute(select(_cursor).where(_cursor.c.id == 1))).first()
    return None if row is None else Cursor(row.next_position, row.cursor_txid, row.cursor_id)


def _on_postgres(bind: AsyncSession | AsyncConnection) -> bool:
    if isinstance(bind, AsyncSession):
        return is_postgres(bind)
    return bind.dialect.name == "postgresql"


def _txid_text(bind: AsyncSession | AsyncConnection) -> ColumnElement[Any]:
    if _on_postgres(bind):
        return literal_column("audit_event.txid::text")
    return literal_column("NULL")


def _order_key(txid: Any, pk: int) -> tuple[int, int]:
    return (NO_TXID if txid is None else int(txid), pk)


async def stored_range(
    conn: AsyncConnection, start: int, end: int, *, events: bool = True
) -> list[StoredLeaf]:
    """The leaves at positions [start, end) in order, each with its event row (None when the
    row is gone) and the row's order key; `events=False` reads the leaves alone.

    One statement per call (callers page by position, in chunks of thousands), read through
    `core.db.fetch_rows`: on Postgres the rows skip SQLAlchemy's result processing, which
    would cost more than the whole rest of verify's per-event work but the entry itself.
    """
    where = (_leaves.c.position >= start, _leaves.c.position < end)
    if not events:
        stmt = (
            select(_leaves.c.position, _leaves.c.event_pk, _leaves.c.leaf_hash)
            .where(*where)
            .order_by(_leaves.c.position)
        )
        return [(r[0], r[1], bytes(r[2]), None, None) for r in await fetch_rows(conn, stmt)]
    columns = _entry_columns()
    names = [c.name for c in columns]
    # The event's columns first, so dict(zip(names, row)) stops right after them.
    stmt = (
        select(
            *columns,
            _txid_text(conn).label("_txid"),
            _leaves.c.position,
            _leaves.c.event_pk,
            _leaves.c.leaf_hash,
        )
        .select_from(_leaves.outerjoin(_events, _events.c.id == _leaves.c.event_pk))
        .where(*where)
        .order_by(_leaves.c.position)
    )
    out: list[StoredLeaf] = []
    append = out.append
    for r in await fetch_rows(conn, stmt):
        pk = r[-2]
        if r[0] is None:
            append((r[-3], pk, bytes(r[-1]), None, None))
            continue
        append((r[-3], pk, bytes(r[-1]), dict(zip(names, r, strict=False)), _order_key(r[-4], pk)))
    return out


async def rows_without_leaf(
    bind: AsyncSession | AsyncConnection, cursor: Cursor, limit: int
) -> list[dict[str, Any]]:
    """Rows the sequencer has passed (at or below its cursor) that have no leaf: every such
    row was written after the fact, since the sequencer takes every committed row in order.
    Rows above the cursor are simply not sequenced yet."""
    no_leaf = ~select(_leaves.c.event_pk).where(_leaves.c.event_pk == _events.c.id).exists()
    below: Any
    postgres = _on_postgres(bind)
    if not postgres or cursor.txid is None:
        below = _events.c.id <= cursor.event_pk
        if postgres:
            below = and_(below, _TXID.is_(None))
    else:
        below = or_(
            _TXID.is_(None),
            text("(audit_event.txid, audit_event.id) <= (CAST(:t AS text)::xid8, :i)").bindparams(
                t=str(cursor.txid), i=cursor.event_pk
            ),
        )
    stmt = select(*_entry_columns()).where(no_leaf, below).order_by(_events.c.id).limit(limit)
    return [dict(r._mapping) for r in (await bind.execute(stmt)).all()]


async def events_by_pk(
    bind: AsyncSession | AsyncConnection, pks: Sequence[int]
) -> dict[int, dict[str, Any]]:
    """Event rows by id (those that exist), as dicts of columns like `follow()`'s."""
    out: dict[int, dict[str, Any]] = {}
    unique = sorted(set(pks))
    for i in range(0, len(unique), 500):
        stmt = select(*_entry_columns()).where(_events.c.id.in_(unique[i : i + 500]))
        for r in (await bind.execute(stmt)).all():
            out[r.id] = dict(r._mapping)
    return out


async def leaf_count(bind: AsyncSession | AsyncConnection) -> tuple[int, int]:
    """(number of leaves, highest position + 1): equal, and equal to the cursor's
    next_position, unless leaves were removed."""
    row = (
        await bind.execute(select(func.count(), func.max(_leaves.c.position)).select_from(_leaves))
    ).one()
    return int(row[0]), (-1 if row[1] is None else int(row[1])) + 1


async def lag_after(session: AsyncSession, position: int) -> float | None:
    """How far a consumer whose cursor is `position` is behind, in seconds: the age of the
    next event after it, or, when it has every position, of the next event the sequencer
    has still to give one (None: nothing is waiting). What every log consumer reports as
    its job's lag."""
    pending = await follow(session, after=position, limit=1)
    oldest: datetime | None = None
    if pending and pending[0].event is not None:
        oldest = pending[0].event["recorded_at"]
    elif not pending:
        cursor = await read_cursor(session)
        if cursor is not None:
            oldest = await oldest_unsequenced(session, cursor)
    return None if oldest is None else max(0.0, (utcnow() - oldest).total_seconds())
