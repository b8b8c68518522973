"""The sequencer: gives every committed event its log position, once, in commit order.

It runs as one leased background job (so one process at a time), outside every request
transaction: sequencing inside them would serialise all writers on the log's tail. Each
round is one transaction: lock the cursor, take the next committed events (see `log.py`),
hash them, append their leaves, let the layers above extend what they keep in step with the
leaves (the Merkle tiles), move the cursor, check the lease is still ours, commit. A crash
anywhere rolls the whole round back; the next holder redoes it and gets the same result.

The leaf hashing and the tiles belong to the integrity domain (a floor above): they come in
as callables, so this module knows only positions.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.audit_log import log
from audit_service.kit.models import utcnow

logger = logging.getLogger(__name__)

# hash_leaves(session, events) -> one 32-byte leaf hash per event, in order.
HashLeaves = Callable[[AsyncSession, Sequence[Mapping[str, Any]]], Awaitable[list[bytes]]]
# on_append(session, old_size, new_leaf_hashes): in the round's transaction.
OnAppend = Callable[[AsyncSession, int, Sequence[bytes]], Awaitable[None]]
Fence = Callable[[AsyncSession], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Round:
    sequenced: int
    tree_size: int
    lag_seconds: float | None
    # Another round would find more at once (a full batch, or the switch out of the
    # legacy order).
    more: bool = False


@dataclass(frozen=True)
class Sequencer:
    hash_leaves: HashLeaves
    on_append: OnAppend
    batch_size: int = 2000

    async def run_round(self, session: AsyncSession, fence: Fence) -> Round:
        """One round in `session` (committed here). Returns what it did and the lag after."""
        cursor = await log.lock_cursor(session)
        batch = await log.unsequenced(session, cursor, self.batch_size)
        moved = cursor
        if batch.events or batch.legacy_done:
            hashes = await self.hash_leaves(session, batch.events) if batch.events else []
            if hashes:
                await log.append_leaves(
                    session, cursor.next_position, [e["id"] for e in batch.events], hashes
                )
                await self.on_append(session, cursor.next_position, hashes)
            moved = await log.advance_cursor(session, cursor, batch)
        oldest = await log.oldest_unsequenced(session, moved)
        await fence(session)
        await session.commit()
        lag = None if oldest is None else max(0.0, (utcnow() - oldest).total_seconds())
        more = batch.legacy_done or len(batch.events) >= self.batch_size
        return Round(len(batch.events), moved.next_position, lag, more)

    async def catch_up(self, session_factory: Callable[[], Any], fence: Fence) -> Round:
        """Rounds until the log holds every committed event (used by tests, `verify` and
        the CLI); the job loops by itself."""
        total = 0
        while True:
            async with session_factory() as session:
                r = await self.run_round(session, fence)
            total += r.sequenced
            if not r.more:
                return Round(total, r.tree_size, r.lag_seconds)


async def no_fence(_session: AsyncSession) -> None:
    """For callers that hold no lease (tests, one-off CLI runs): the cursor's row lock still
    keeps two of them from appending the same events."""
