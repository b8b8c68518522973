"""The rollup: count the log's new events into the bucket tables, Citus "incremental
rollup" style.

It reads by log position (`log.follow`), never by id or time: positions are gap-free and in
commit order, so a position once passed never gains an event. Each round is one
transaction: lock the watermark, read the next positions, add their counts
(`n = n + excluded.n`), move the watermark, check the lease, commit. A crash anywhere rolls
all of it back, and the next round counts the same events exactly once. Events are bucketed
by their own `occurred_at`: a back-dated event lands in its past bucket, no rescans.

The coarser levels (hour and UTC-day rows, models.py) are the same counts summed per
hour and day, added in the same round and transaction: they can never disagree with the
15-minute rows.

The facets (all-time counts per filter value) are counted in the same round and
transaction, under a watermark of their own (`facets`): normally equal to the rollup's and
moved with it. It is behind only where the rollup counted positions before the facets
existed (a replica still on older code during an upgrade; migration 0014 backfilled up to
the watermark it saw): the round then first counts the facets of those positions, a batch
at a time, and the new batch's facets once they have caught up. A rebuild resets both
watermarks and empties every stats_* table.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.audit_log import log
from audit_service.kit.models import utcnow
from audit_service.stats import repository as repo
from audit_service.stats.buckets import epoch, floor_bucket

logger = logging.getLogger(__name__)

ROLLUP = "rollup"  # the watermark's name
FACETS = "facets"  # the facets' watermark
# What counts as a login attempt: the service's own (`auth.login`, and `auth.login_failed`
# for bad credentials), and the same action posted by other services.
LOGIN_ACTIONS = ("auth.login", "auth.login_failed")
_OUTCOME_INDEX = {"success": 0, "failure": 1, "denied": 2, "error": 3}
Fence = Callable[[AsyncSession], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Round:
    counted: int
    watermark: int
    lag_seconds: float | None
    more: bool


@dataclass
class Counts:
    """One batch of events, aggregated per table key (each a list of count columns)."""

    buckets: dict[tuple[Any, ...], list[int]]
    actors: dict[tuple[Any, ...], list[int]]
    ips: dict[tuple[Any, ...], list[int]]

    @classmethod
    def of(cls, events: Sequence[Mapping[str, Any]]) -> Counts:
        buckets: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        actors: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        # repo.IP_COUNT_COLUMNS: the four outcomes, logins ok, logins failed.
        ips: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0])
        for e in events:
            bucket = floor_bucket(epoch(_aware(e["occurred_at"])))
            tenant = e["tenant_id"] or ""
            outcome = _OUTCOME_INDEX[e["outcome"]]
            key = (bucket, tenant, e["source"], e["module"], e["action"], e["actor_type"])
            buckets[key][outcome] += 1
            actors[(*key, e["actor_id"] or "")][outcome] += 1
            if e["ip"]:
                actor_key = e["actor_id"] or (f"name:{e['actor_name']}" if e["actor_name"] else "")
                row = ips[(bucket, tenant, e["ip"], e["actor_type"], actor_key[:205])]
                row[outcome] += 1
                if e["action"] in LOGIN_ACTIONS:
                    if e["outcome"] == "success":
                        row[4] += 1
                    elif e["outcome"] in ("failure", "denied"):
                        row[5] += 1
        return cls(dict(buckets), dict(actors), dict(ips))


def rolled_up(
    rows: Mapping[tuple[Any, ...], Sequence[int]],
    size: int,
    names: Sequence[str],
    kept: Sequence[str],
) -> dict[tuple[Any, ...], list[int]]:
    """`rows` (keys of the columns `names`, bucket first) summed per coarser UTC bucket of
    `size` seconds and per the key columns `kept` (bucket first; a subset of `names`)."""
    pick = [names.index(k) for k in kept[1:]]
    out: dict[tuple[Any, ...], list[int]] = {}
    for key, n in rows.items():
        coarse = (key[0] - key[0] % size, *[key[i] for i in pick])
        acc = out.get(coarse)
        if acc is None:
            out[coarse] = list(n)
        else:
            for j, v in enumerate(n):
                acc[j] += v
    return out


FacetKey = tuple[str, str, str]  # field, value, actor type ('' but for field actor)


def facet_counts(events: Sequence[Mapping[str, Any]]) -> dict[FacetKey, tuple[int, datetime]]:
    """(events, latest occurred_at) per facet value. Events without a tenant or an actor id
    have no value to filter by: they count in no tenant_id or actor facet."""
    out: dict[FacetKey, tuple[int, datetime]] = {}
    for e in events:
        when = _aware(e["occurred_at"])
        keys: list[FacetKey] = [
            ("action", e["action"], ""),
            ("module", e["module"], ""),
            ("source", e["source"], ""),
        ]
        if e["tenant_id"]:
            keys.append(("tenant_id", e["tenant_id"], ""))
        if e["actor_id"]:
            keys.append(("actor", e["actor_id"], e["actor_type"]))
        for key in keys:
            n, seen = out.get(key, (0, when))
            out[key] = (n + 1, max(seen, when))
    return out


def _aware(value: datetime) -> datetime:
    # follow() reads through UTCDateTime (always aware); astimezone() would take a naive
    # value for local time and miscount it silently.
    if value.tzinfo is None:
        raise ValueError("naive occurred_at from the log")
    return value


async def run_round(session: AsyncSession, fence: Fence, *, batch: int) -> Round:
    """Count the next `batch` positions after the watermark, in `session` (committed here)."""
    after = await repo.lock_watermark(session, ROLLUP)
    facets_after = await repo.lock_watermark(session, FACETS)
    facets_moved = facets_after
    if facets_after < after:
        # Positions the rollup counted without facets (see above): theirs first.
        behind = await log.follow(
            session, after=facets_after, limit=min(batch, after - facets_after)
        )
        await repo.add_facets(session, facet_counts(_stored(behind)))
        facets_moved = behind[-1].position if behind else after
    followed = await log.follow(session, after=after, limit=batch)
    moved = after
    if followed:
        # A leaf whose row retention has deleted counts nothing, but is passed.
        counts = Counts.of(_stored(followed))
        for table, columns, rows in (
            (repo.buckets, repo.COUNT_COLUMNS, counts.buckets),
            (repo.actor_buckets, repo.COUNT_COLUMNS, counts.actors),
            (repo.ip_buckets, repo.IP_COUNT_COLUMNS, counts.ips),
        ):
            await repo.add_counts(session, table, columns, rows)
            # The coarser levels of the same counts, in the same transaction (models.py).
            finer = table
            for size, level in repo.COARSER[table]:
                rows = rolled_up(rows, size, repo.key_names(finer), repo.key_names(level))
                await repo.add_counts(session, level, columns, rows)
                finer = level
        moved = followed[-1].position
        await repo.move_watermark(session, ROLLUP, moved, utcnow())
        if facets_moved >= after:
            # Caught up (the usual case): this batch's facets too, past what they count.
            fresh = [f for f in followed if f.position > facets_moved]
            await repo.add_facets(session, facet_counts(_stored(fresh)))
            facets_moved = max(facets_moved, moved)
    if facets_moved != facets_after:
        await repo.move_watermark(session, FACETS, facets_moved, utcnow())
    lag = await lag_seconds(session, moved)
    await fence(session)
    await session.commit()
    return Round(len(followed), moved, lag, len(followed) >= batch or facets_moved < moved)


def _stored(followed: Sequence[log.Followed]) -> list[Mapping[str, Any]]:
    return [f.event for f in followed if f.event is not None]


async def lag_seconds(session: AsyncSession, watermark: int) -> float | None:
    """Age of the oldest committed event the statistics do not reflect yet."""
    return await log.lag_after(session, watermark)


async def catch_up(session_factory: Callable[[], Any], fence: Fence, *, batch: int = 5000) -> Round:
    """Rounds until every sequenced position is counted (tests and one-off runs)."""
    total = 0
    while True:
        async with session_factory() as session:
            r = await run_round(session, fence, batch=batch)
        total += r.counted
        if not r.more:
            return Round(total, r.watermark, r.lag_seconds, False)
