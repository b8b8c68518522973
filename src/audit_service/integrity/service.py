"""The tamper-evident log over the log positions: leaf hashes with keyed commitments,
C2SP tiles kept in step with the leaves, signed checkpoints, proofs from the tiles."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from audit_service.audit_log import log
from audit_service.integrity import merkle, note
from audit_service.integrity import repository as repo
from audit_service.integrity.entry import EntryKeys, leaf_hash_with
from audit_service.integrity.merkle import HASH_SIZE
from audit_service.integrity.tiles import (
    Tile,
    TileHashReader,
    extend_tiles,
    extended_partials,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")
Bind = AsyncSession | AsyncConnection

DAY = "day"
SUBJECT = "subject"


# --- commitment keys and leaf hashes ---------------------------------------------------------


def day_key_name(event: Mapping[str, Any]) -> str | None:
    """The day key an event's IP and user agent are committed under (its UTC recording day)."""
    if event.get("ip") is None and event.get("user_agent") is None:
        return None
    recorded: datetime = event["recorded_at"]
    return recorded.astimezone(UTC).date().isoformat()


def subject_key_name(event: Mapping[str, Any]) -> str | None:
    """The data subject an event's actor fields are committed under: the actor (type and
    id, or type and name when it has no id). Erasing this key forgets the person."""
    name = event.get("actor_name")
    actor_id = event.get("actor_id")
    if name is None and (actor_id is None or event.get("actor_type") != "user"):
        return None
    if actor_id is not None:
        return f"{event['actor_type']}:{actor_id}"
    return f"{event['actor_type']}:name:{name}"


KeyNames = list[tuple[str | None, str | None]]


def key_names(events: Sequence[Mapping[str, Any]]) -> KeyNames:
    """(day key name, subject key name) of each event: `day_key_name` and
    `subject_key_name` in one pass, the day formatted once per distinct UTC day."""
    days: dict[int, str] = {}
    out: KeyNames = []
    append = out.append
    for e in events:
        get = e.get
        day = None
        if get("ip") is not None or get("user_agent") is not None:
            recorded: datetime = e["recorded_at"]
            number = (recorded - _EPOCH) // _DAY  # the UTC day, exactly
            day = days.get(number)
            if day is None:
                day = days[number] = recorded.astimezone(UTC).date().isoformat()
        name, actor_id, actor_type = get("actor_name"), get("actor_id"), get("actor_type")
        if actor_id is not None:
            subject = (
                f"{actor_type}:{actor_id}" if name is not None or actor_type == "user" else None
            )
        elif name is not None:
            subject = f"{actor_type}:name:{name}"
        else:
            subject = None
        append((day, subject))
    return out


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY = timedelta(days=1)


def _wanted(names: KeyNames) -> set[tuple[str, str]]:
    wanted: set[tuple[str, str]] = set()
    for day, subject in names:
        if day is not None:
            wanted.add((DAY, day))
        if subject is not None:
            wanted.add((SUBJECT, subject))
    return wanted


def needed_keys(events: Sequence[Mapping[str, Any]]) -> set[tuple[str, str]]:
    return _wanted(key_names(events))


def entry_keys(event: Mapping[str, Any], keys: Mapping[tuple[str, str], bytes]) -> EntryKeys:
    day, subject = day_key_name(event), subject_key_name(event)
    return EntryKeys(
        day_key=None if day is None else keys.get((DAY, day)),
        subject_key=None if subject is None else keys.get((SUBJECT, subject)),
    )


def leaf_hashes(
    events: Sequence[Mapping[str, Any]],
    keys: Mapping[tuple[str, str], bytes],
    names: KeyNames | None = None,
) -> list[bytes]:
    if names is None:
        names = key_names(events)
    get = keys.get
    return [
        leaf_hash_with(
            e,
            None if day is None else get((DAY, day)),
            None if subject is None else get((SUBJECT, subject)),
        )
        for e, (day, subject) in zip(events, names, strict=True)
    ]


@dataclass(eq=False)
class LeafHasher:
    """The sequencer's `hash_leaves`: creates missing keys in the round's transaction and
    hashes the entries.

    The cache holds committed keys, most recently used last: 32,768 of them (≈ 12 MB) keep
    a working set of that many data subjects out of the database (a round of 2,000 events
    from 20,000 distinct actors read ~1,600 keys per round with the old 4,096)."""

    cache_size: int = 32_768
    _cache: OrderedDict[tuple[str, str], bytes] = field(default_factory=OrderedDict)

    async def __call__(
        self, session: AsyncSession, events: Sequence[Mapping[str, Any]]
    ) -> list[bytes]:
        names = key_names(events)
        wanted = _wanted(names)
        cache = self._cache
        keys: dict[tuple[str, str], bytes] = {}
        missing: list[tuple[str, str]] = []
        for w in wanted:
            key = cache.get(w)
            if key is None:
                missing.append(w)
            else:
                keys[w] = key
                cache.move_to_end(w)
        if missing:
            found = await repo.read_keys(session, missing)
            # Only committed keys are cached: a key created in this round does not exist
            # if the round rolls back, and the next round must not hash with it.
            cache.update(found)
            keys.update(found)
            if still_missing := [m for m in missing if m not in found]:
                keys.update(await repo.create_keys(session, still_missing))
            while len(cache) > self.cache_size:
                cache.popitem(last=False)
        return await asyncio.to_thread(leaf_hashes, events, keys, names)

    def forget(self) -> None:
        """Drop cached keys (after keys were erased)."""
        self._cache.clear()


# --- tiles -----------------------------------------------------------------------------------


class _NeedTiles(Exception):
    def __init__(self, tiles: Sequence[Tile]) -> None:
        self.tiles = list(tiles)


def _answer(tile: Tile, data: bytes | None) -> bytes:
    if data is None or len(data) < tile.width * HASH_SIZE:
        raise merkle.ProofError(f"tile {tile.path} is missing or shorter than its width")
    return data[: tile.width * HASH_SIZE]


async def with_tiles(bind: Bind, tree_size: int, compute: Callable[[TileHashReader], T]) -> T:
    """Run a synchronous Merkle computation over the stored tiles of a tree of `tree_size`:
    the tiles it needs are fetched (in one query per round of requests) and it is rerun."""
    cache: dict[tuple[int, int], bytes | None] = {}

    def read(tiles: Sequence[Tile]) -> list[bytes]:
        missing = [t for t in tiles if (t.level, t.index) not in cache]
        if missing:
            raise _NeedTiles(missing)
        return [_answer(t, cache[(t.level, t.index)]) for t in tiles]

    for _ in range(8):
        try:
            return compute(TileHashReader(tree_size, read))
        except _NeedTiles as need:
            got = await repo.read_tiles(bind, [(t.level, t.index) for t in need.tiles])
            for t in need.tiles:
                cache[(t.level, t.index)] = got.get((t.level, t.index))
    raise RuntimeError("Merkle computation kept asking for more tiles")


async def append_tiles(session: AsyncSession, old_size: int, hashes: Sequence[bytes]) -> None:
    """The sequencer's `on_append`: extend the tiles by the new leaves, same transaction."""
    prefixes = extended_partials(old_size, old_size + len(hashes))
    stored = await repo.read_tiles(session, [(t.level, t.index) for t in prefixes])
    new = extend_tiles(
        old_size,
        hashes,
        lambda tiles: [_answer(t, stored.get((t.level, t.index))) for t in tiles],
    )
    await repo.write_tiles(session, [(t.level, t.index, data) for t, data in new.items()])


async def root_at(bind: Bind, tree_size: int) -> bytes:
    return await with_tiles(bind, tree_size, lambda src: merkle.root_hash(src, tree_size))


# --- checkpoints -----------------------------------------------------------------------------


def default_origin() -> str:
    return f"{socket.gethostname()}/audit-service/{uuid.uuid4().hex[:16]}"


@dataclass(eq=False)
class Checkpointer:
    """Signs a checkpoint when the tree grew (at most once per `min_interval`) and re-issues
    the newest one with a fresh timestamped cosignature every `idle_interval` while nothing
    happens, so a gap in checkpoints means logging stopped."""

    signers: Sequence[note.Signer]
    proposed_origin: str
    min_interval: float = 1.0
    idle_interval: float = 60.0
    cosigners: list[note.Signer] = field(init=False)
    _origin: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if isinstance(self.signers, note.Signer):
            self.signers = [self.signers]
        if not self.signers:
            raise ValueError("a checkpointer needs at least one signing key")
        self.cosigners = [s.with_type(note.COSIGNATURE_V1) for s in self.signers]

    @property
    def verifiers(self) -> list[note.Verifier]:
        return [s.verifier for s in (*self.signers, *self.cosigners)]

    async def origin(self, bind: Bind) -> str:
        if self._origin is None:
            self._origin = await repo.claim_origin(bind, self.proposed_origin)
        return self._origin

    async def maybe_sign(self, session: AsyncSession) -> int | None:
        """Sign if due (in `session`, not committed here); the signed tree size, or None."""
        size = await log.tree_size(session)
        last = await repo.latest_checkpoint(session)
        now = time.time()
        if last is not None:
            age = now - last.signed_at.timestamp()
            # Never a checkpoint smaller than one already signed (that would be a fork).
            if last.tree_size > size:
                raise RuntimeError(
                    f"newest checkpoint covers {last.tree_size} leaves, the log has {size}"
                )
            if last.tree_size == size and age < self.idle_interval:
                return None
            if age < self.min_interval:
                return None
        origin = await self.origin(session)
        root = await root_at(session, size)
        checkpoint = note.Checkpoint(origin, size, root)
        signed = note.sign_checkpoint(checkpoint, self.signers)
        signed = note.add_signatures(
            signed, [note.cosign(checkpoint, c, int(now)) for c in self.cosigners]
        )
        await repo.add_checkpoint(session, size, root, signed)
        return size
