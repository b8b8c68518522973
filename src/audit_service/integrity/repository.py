"""All SQL of the integrity domain: commitment keys, tiles, checkpoints, the log's origin."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from audit_service.audit_log.models import AuditEvent, AuditLeaf
from audit_service.core.db import in_values, upsert_for
from audit_service.integrity.entry import Commitments
from audit_service.integrity.models import (
    IntegrityCheckpoint,
    IntegrityCommitment,
    IntegrityKey,
    IntegrityLog,
    IntegrityTile,
)
from audit_service.kit.models import utcnow

_keys = cast(Table, IntegrityKey.__table__)
_tiles = cast(Table, IntegrityTile.__table__)
_checkpoints = cast(Table, IntegrityCheckpoint.__table__)
_log = cast(Table, IntegrityLog.__table__)
_events = cast(Table, AuditEvent.__table__)
_leaves = cast(Table, AuditLeaf.__table__)
_kept = cast(Table, IntegrityCommitment.__table__)

Bind = AsyncSession | AsyncConnection


async def read_keys(bind: Bind, wanted: Iterable[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
    by_kind: dict[str, list[str]] = {}
    for kind, name in set(wanted):
        by_kind.setdefault(kind, []).append(name)
    out: dict[tuple[str, str], bytes] = {}
    # One kind per statement and the names as a list: a row-value IN list of pairs was
    # planned as a filter over the whole table (35 ms per 500 keys at 20k keys); this is
    # an index scan of the primary key.
    for kind, names in sorted(by_kind.items()):
        names.sort()
        for i in range(0, len(names), 5000):
            stmt = select(_keys.c.name, _keys.c.key).where(
                _keys.c.kind == kind, in_values(bind, _keys.c.name, names[i : i + 5000])
            )
            out.update({(kind, r.name): r.key for r in (await bind.execute(stmt)).all()})
    return out


async def create_keys(
    bind: Bind, missing: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], bytes]:
    """Create keys (random, 32 bytes) for `missing`; a key someone created meanwhile wins."""
    missing = sorted(set(missing))
    if not missing:
        return {}
    now = utcnow()
    insert = upsert_for(bind)(_keys)
    result = await bind.execute(
        insert.on_conflict_do_nothing().returning(_keys.c.kind, _keys.c.name, _keys.c.key),
        [
            {"kind": k, "name": n, "key": secrets.token_bytes(32), "created_at": now}
            for k, n in missing
        ],
    )
    created = {(r.kind, r.name): r.key for r in result.all()}
    if lost := [m for m in missing if m not in created]:
        created.update(await read_keys(bind, lost))
    return created


async def read_tiles(bind: Bind, wanted: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """(level, index) → the tile's stored hashes (a partial tile's row holds its newest
    width; older widths are prefixes of it)."""
    pairs = sorted(set(wanted))
    out: dict[tuple[int, int], bytes] = {}
    for i in range(0, len(pairs), 500):
        chunk = pairs[i : i + 500]
        stmt = select(_tiles.c.level, _tiles.c.idx, _tiles.c.data).where(
            tuple_(_tiles.c.level, _tiles.c.idx).in_(chunk)
        )
        out.update({(r.level, r.idx): bytes(r.data) for r in (await bind.execute(stmt)).all()})
    return out


async def write_tiles(bind: Bind, tiles: Sequence[tuple[int, int, bytes]]) -> None:
    """Insert new tiles, grow partial ones (the table's trigger refuses anything else)."""
    if not tiles:
        return
    insert = upsert_for(bind)(_tiles)
    stmt = insert.on_conflict_do_update(
        index_elements=[_tiles.c.level, _tiles.c.idx], set_={"data": insert.excluded.data}
    )
    await bind.execute(stmt, [{"level": lv, "idx": ix, "data": d} for lv, ix, d in tiles])


async def latest_checkpoint(bind: Bind) -> Any:
    stmt = select(_checkpoints).order_by(_checkpoints.c.id.desc()).limit(1)
    return (await bind.execute(stmt)).first()


async def checkpoint_at_least(bind: Bind, size: int) -> Any:
    """The first checkpoint whose tree holds `size` leaves or more."""
    stmt = (
        select(_checkpoints)
        .where(_checkpoints.c.tree_size >= size)
        .order_by(_checkpoints.c.tree_size, _checkpoints.c.id)
        .limit(1)
    )
    return (await bind.execute(stmt)).first()


async def checkpoint_of_size(bind: Bind, size: int) -> Any:
    """The newest checkpoint of exactly `size` leaves (idle re-issues repeat a size)."""
    stmt = (
        select(_checkpoints)
        .where(_checkpoints.c.tree_size == size)
        .order_by(_checkpoints.c.id.desc())
        .limit(1)
    )
    return (await bind.execute(stmt)).first()


async def checkpoints(bind: Bind, *, after_id: int = 0, limit: int = 1000) -> list[Any]:
    stmt = (
        select(_checkpoints)
        .where(_checkpoints.c.id > after_id)
        .order_by(_checkpoints.c.id)
        .limit(limit)
    )
    return list((await bind.execute(stmt)).all())


async def add_checkpoint(bind: Bind, tree_size: int, root: bytes, note: str) -> None:
    await bind.execute(
        _checkpoints.insert().values(
            tree_size=tree_size, root_hash=root, note=note, signed_at=utcnow()
        )
    )


async def origin(bind: Bind) -> str | None:
    value = (await bind.execute(select(_log.c.origin).where(_log.c.id == 1))).scalar()
    return None if value is None else str(value)


async def claim_origin(bind: Bind, proposed: str) -> str:
    """The log's origin: the first one ever proposed (a log never changes its name)."""
    await bind.execute(
        upsert_for(bind)(_log)
        .values(id=1, origin=proposed, created_at=utcnow())
        .on_conflict_do_nothing()
    )
    found = await origin(bind)
    assert found is not None
    return found


@dataclass(frozen=True, slots=True)
class EventLeaf:
    # The row as a dict of audit_event columns (`metadata` by column name), the shape
    # `log.follow()` gives the sequencer, so the entry is rebuilt from the same values.
    event: dict[str, Any]
    # None while the event is not sequenced yet.
    position: int | None
    leaf_hash: bytes | None


async def event_leaf(bind: Bind, event_id: uuid.UUID) -> EventLeaf | None:
    """An event by its public id with its log position and stored leaf hash, in one query
    (the unique index on event_id, then audit_leaf's on event_pk)."""
    stmt = (
        select(*_events.c, _leaves.c.position, _leaves.c.leaf_hash)
        .select_from(_events.outerjoin(_leaves, _leaves.c.event_pk == _events.c.id))
        .where(_events.c.event_id == event_id)
    )
    row = (await bind.execute(stmt)).first()
    if row is None:
        return None
    event = dict(row._mapping)
    position, leaf = event.pop("position"), event.pop("leaf_hash")
    return EventLeaf(event, position, None if leaf is None else bytes(leaf))


async def tiles_at_level(bind: Bind, level: int, first: int, stop: int) -> dict[int, bytes]:
    """index → stored hashes of the tiles of one level with first <= index < stop."""
    stmt = (
        select(_tiles.c.idx, _tiles.c.data)
        .where(_tiles.c.level == level, _tiles.c.idx >= first, _tiles.c.idx < stop)
        .order_by(_tiles.c.idx)
    )
    return {int(r.idx): bytes(r.data) for r in (await bind.execute(stmt)).all()}


# --- what retention left behind: kept commitments, tombstones --------------------------------

TOMBSTONE_ACTION = "retention.purged"
TOMBSTONE_SOURCE = "audit-service"


async def kept_commitments(bind: Bind, first_pk: int, last_pk: int) -> dict[int, Commitments]:
    """The kept commitments of the events with ids in [first_pk, last_pk] (one range query:
    verify reads a chunk of positions, whose ids are close together)."""
    stmt = select(_kept).where(_kept.c.event_pk >= first_pk, _kept.c.event_pk <= last_pk)
    return {
        int(r.event_pk): Commitments(
            ip=_opt_bytes(r.ip),
            user_agent=_opt_bytes(r.user_agent),
            actor_id=_opt_bytes(r.actor_id),
            actor_name=_opt_bytes(r.actor_name),
        )
        for r in (await bind.execute(stmt)).all()
    }


def _opt_bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


@dataclass(frozen=True)
class Tombstone:
    """A sequenced `retention.purged` event: the id ranges whose rows it allows to be gone
    (only rows at earlier log positions than its own)."""

    event_pk: int
    position: int
    id_ranges: tuple[tuple[int, int], ...]

    def covers(self, event_pk: int, position: int) -> bool:
        return position < self.position and any(a <= event_pk <= b for a, b in self.id_ranges)


async def tombstones(bind: Bind) -> list[Tombstone]:
    """Every sequenced tombstone whose row is still there (a tombstone is itself a logged
    event: its row is verified like any other)."""
    stmt = (
        select(_events.c.id, _events.c.metadata, _leaves.c.position)
        .select_from(_events.join(_leaves, _leaves.c.event_pk == _events.c.id))
        .where(_events.c.action == TOMBSTONE_ACTION, _events.c.source == TOMBSTONE_SOURCE)
        .order_by(_leaves.c.position)
    )
    out: list[Tombstone] = []
    for row in (await bind.execute(stmt)).all():
        ranges: list[tuple[int, int]] = []
        for pair in (row.metadata or {}).get("id_ranges") or ():
            try:
                a, b = int(pair[0]), int(pair[1])
            except (TypeError, ValueError, IndexError):
                continue
            ranges.append((a, b))
        out.append(Tombstone(int(row.id), int(row.position), tuple(ranges)))
    return out
