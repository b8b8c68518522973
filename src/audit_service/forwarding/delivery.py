"""Delivery: the `forwarding.deliver` job's work, at least once, nothing skipped.

Each destination follows the log with its own cursor (a log position: `log.follow`, never
`id > last`). A deliverer claims a destination with a lease of its own (a compare-and-set
UPDATE), reads the next batch after the cursor (≤ batch_size events, ≤ 1 MB, filtered),
ends that read transaction, sends, and only once the receiver accepted moves the cursor, in
a transaction that re-checks the lease and the old cursor: of two deliverers that raced,
one moves it, the other's write is refused. A crash between send and commit leaves the
cursor where it was: the batch is sent again (same `webhook-id`, same `event_id`s).

Failures never drop anything: transport errors, timeouts, 5xx and 429 leave the cursor
and retry with full-jitter exponential backoff (Retry-After honoured); after
`forward_failing_after` seconds of failure the destination is `failing` (a
`forwarding.failing` event), and `forwarding.recovered` when it delivers again. Permanent
per-event rejections go to the dead-letter list (a rejected batch is retried one event at
a time to find the bad ones) and the cursor moves past them. 401/403 → failing at once;
410 → disabled.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from audit_service.audit_log import log as event_log
from audit_service.audit_log.context import SYSTEM
from audit_service.audit_log.models import AuditEvent
from audit_service.audit_log.sink import SessionEventSink
from audit_service.core.config import Settings
from audit_service.core.jobs import default_holder, describe_error
from audit_service.forwarding import repository as repo
from audit_service.forwarding import senders
from audit_service.forwarding.models import ERROR_LENGTH, ForwardDestination
from audit_service.forwarding.senders import Sent
from audit_service.kit import outbound
from audit_service.kit.ids import new_event_id
from audit_service.kit.models import utcnow

logger = logging.getLogger(__name__)

DEFAULT_BATCH = 500
# One claim delivers at most this long before it lets go (others may take a turn).
ROUND_BUDGET = 10.0
RETRY_AFTER_MAX = 300.0


@dataclass(frozen=True, slots=True)
class Item:
    position: int
    event: Mapping[str, Any]
    rendered: Any
    encoded: bytes = b""  # `rendered` on the wire, encoded once at read time


@dataclass(frozen=True, slots=True)
class Batch:
    after: int
    last: int  # the last position this batch covers (filtered-out ones included)
    items: list[Item]
    full: bool = False  # as much as one request takes (batch_size positions, or 1 MB)


@dataclass(frozen=True, slots=True)
class Target:
    """What a sender needs of a destination (read once per claim)."""

    id: int
    kind: str
    format: str
    config: Mapping[str, Any]
    secrets: Mapping[str, Any]
    filter: Mapping[str, Any]

    @classmethod
    def of(cls, d: ForwardDestination) -> Target:
        return cls(d.id, d.kind, d.format, dict(d.config), dict(d.secrets), dict(d.filter or {}))

    @property
    def batch_size(self) -> int:
        return int(self.config.get("batch_size") or DEFAULT_BATCH)

    @property
    def batched(self) -> bool:
        return self.kind != "webhook" or self.config.get("batch") is not False


def matches(flt: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """The destination's filter (activity vocabulary; each list any-of, lists AND-ed)."""
    actions = flt.get("actions") or []
    if actions:
        action = str(event.get("action") or "")
        if not any(action.startswith(a[:-1]) if a.endswith(".*") else action == a for a in actions):
            return False
    for key, column in (
        ("modules", "module"),
        ("outcomes", "outcome"),
        ("sources", "source"),
        ("tenants", "tenant_id"),
    ):
        wanted = flt.get(key) or []
        if wanted and event.get(column) not in wanted:
            return False
    return True


def backoff(settings: Settings, attempts: int, retry_after: float | None, rng: float) -> float:
    """Full jitter: uniform in [0, min(max, base·2^(attempts-1))], at least Retry-After."""
    exponent = min(max(attempts - 1, 0), 30)
    cap = min(settings.forward_backoff_max, settings.forward_backoff_base * 2.0**exponent)
    delay = float(rng * cap)
    if retry_after is not None:
        # The receiver's word, up to the longest backoff of the issue (5 min) or the setting.
        delay = max(delay, min(retry_after, max(settings.forward_backoff_max, RETRY_AFTER_MAX)))
    return delay


def synthetic_event() -> dict[str, Any]:
    """A complete audit_event row for POST …/test (never stored)."""
    now = utcnow()
    event: dict[str, Any] = {c.name: None for c in AuditEvent.__table__.c}
    event.update(
        id=0,
        event_id=new_event_id(),
        occurred_at=now,
        recorded_at=now,
        source="audit-service",
        actor_type="system",
        actor_id=SYSTEM.id,
        actor_name=SYSTEM.name,
        action="forwarding.test",
        module="forwarding",
        outcome="success",
        description="A test event from audit-service forwarding",
        metadata={"test": True},
    )
    return event


async def read_batch(
    session: AsyncSession, target: Target, after: int, *, upto: int | None, pinned: int | None
) -> Batch:
    """The next batch after `after`: at most batch_size positions (`pinned`: exactly up to
    the batch that failed last time, so a retry repeats it), filtered, ≤ 1 MB rendered."""
    limit = target.batch_size
    if pinned is not None and pinned > after:
        limit = min(limit, pinned - after)
    if upto is not None:
        limit = min(limit, upto - after)
    if limit <= 0:
        return Batch(after, after, [], full=True)
    followed = await event_log.follow(session, after=after, limit=limit)
    items: list[Item] = []
    size = 0
    last = after
    full = len(followed) >= limit
    for f in followed:
        if f.event is not None and matches(target.filter, f.event):
            rendered = senders.render_one(target.format, f.event)
            encoded = senders.encode(rendered)
            cost = len(encoded) + 2
            if items and size + cost > senders.MAX_BATCH_BYTES:
                full = True
                break
            size += cost
            items.append(Item(f.position, f.event, rendered, encoded))
        last = f.position
    return Batch(after, last, items, full=full)


def window_wait(settings: Settings, batch: Batch, now: datetime, *, pinned: bool) -> float:
    """Seconds to wait for more events before sending a short batch: until its oldest event
    is `forward_batch_window_ms` old (so a steady trickle goes out every window, not event
    by event), never longer than the window (a skewed clock cannot hold it back), and not
    at all for a full batch or the retry of a pinned one."""
    window = settings.forward_batch_window_ms / 1000.0
    if window <= 0 or batch.full or pinned or not batch.items:
        return 0.0
    recorded = batch.items[0].event.get("recorded_at")
    if not isinstance(recorded, datetime):
        return window
    if recorded.tzinfo is None:
        recorded = recorded.replace(tzinfo=UTC)
    age = (now - recorded).total_seconds()
    return min(window, max(0.0, window - age))


async def send_items(
    settings: Settings, target: Target, items: Sequence[Item], msg_id: str, client: Any
) -> Sent:
    """One request (or syslog connection) carrying `items`."""
    encoded = [i.encoded for i in items] if all(i.encoded for i in items) else None
    if target.kind == "webhook":
        if encoded is not None:
            body, content_type = senders.webhook_body_encoded(
                target.format, encoded, batch=target.batched
            )
        else:
            body, content_type = senders.webhook_body(
                target.format, [i.rendered for i in items], batch=target.batched
            )
        return await senders.send_webhook(
            client, settings, target.config, target.secrets, msg_id, body, content_type
        )
    if target.kind == "splunk_hec":
        body = senders.hec_body(
            target.config,
            target.format,
            [i.event for i in items],
            [i.rendered for i in items],
            encoded,
        )
        channel = senders.hec_channel(target.id, target.config)
        return await senders.send_hec(
            client, settings, target.config, target.secrets, body, channel
        )
    if target.kind == "syslog":
        from audit_service.forwarding import syslog_sender

        return await syslog_sender.send(settings, target, [i.event for i in items])
    return Sent("broken", error=f"unknown destination kind {target.kind}")


@dataclass(frozen=True, slots=True)
class ReplaySeen:
    """A replay's row as read at the start of a round."""

    id: int
    destination_id: int
    to_position: int
    delivered: int
    attempts: int


@dataclass
class Outcome:
    """What one attempt at a batch came to."""

    cursor: int  # how far the cursor may move (the old cursor if nothing was accepted)
    delivered: int = 0
    dead: list[tuple[int, int, str]] = field(default_factory=list)
    failure: Sent | None = None
    pinned: int | None = None


async def attempt(
    settings: Settings, target: Target, batch: Batch, client: Any, tag: str = ""
) -> Outcome:
    """Send a batch; split it on a permanent rejection; never skip an undelivered event."""
    if not batch.items:
        return Outcome(batch.last)
    first = batch.items[0].position
    if target.batched and (len(batch.items) > 1 or target.kind != "webhook"):
        msg_id = f"fwd_{target.id}{tag}_{first}_{batch.last}"
        sent = await send_items(settings, target, batch.items, msg_id, client)
        if sent.verdict == "ok":
            return Outcome(batch.last, delivered=len(batch.items))
        if sent.verdict != "reject":
            return Outcome(batch.after, failure=sent, pinned=batch.last)
        if len(batch.items) == 1:
            item = batch.items[0]
            reason = (sent.error or "rejected")[:ERROR_LENGTH]
            return Outcome(batch.last, dead=[(item.position, int(item.event["id"]), reason)])
    # One at a time: single-event webhooks, or a rejected batch searched for the bad event(s).
    out = Outcome(batch.after)
    started = time.monotonic()
    for item in batch.items:
        if time.monotonic() - started > settings.forward_lease_seconds / 2:
            out.pinned = batch.last
            return out  # commit the progress so far; the next round goes on
        sent = await send_items(
            settings, target, [item], f"fwd_{target.id}{tag}_{item.position}", client
        )
        if sent.verdict == "ok":
            out.delivered += 1
        elif sent.verdict == "reject":
            reason = (sent.error or "rejected")[:ERROR_LENGTH]
            out.dead.append((item.position, int(item.event["id"]), reason))
        else:
            out.failure, out.pinned = sent, batch.last
            return out
        out.cursor = item.position
    out.cursor = batch.last
    return out


@dataclass(eq=False)
class Deliverer:
    """Delivers every due destination and replay once per `run_once()`; safe to run in any
    number of processes at once (each destination and replay has its own lease)."""

    sessionmaker: async_sessionmaker[AsyncSession]
    settings: Settings
    holder: str = field(default_factory=default_holder)
    clock: Callable[[], datetime] = utcnow
    rng: Callable[[], float] = random.random

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.forward_lease_seconds)

    async def run_once(self) -> int:
        async with self.sessionmaker() as session:
            now = self.clock()
            destinations = await repo.due_destinations(session, now)
            replays = await repo.due_replays(session, now)
            await session.rollback()
        async with outbound.http_client(self.settings) as client:
            results = await asyncio.gather(
                *(self.deliver_destination(d, client) for d in destinations),
                *(self.deliver_replay(r, client) for r in replays),
                return_exceptions=True,
            )
        total = 0
        for r in results:
            if isinstance(r, BaseException):
                if isinstance(r, asyncio.CancelledError):
                    raise r
                logger.error("forwarding: a delivery round failed: %s", describe_error(r))
            else:
                total += r
        return total

    # --- live delivery -----------------------------------------------------------------------

    async def deliver_destination(self, destination_id: int, client: Any) -> int:
        async with self.sessionmaker() as session:
            now = self.clock()
            if not await repo.claim_destination(
                session, destination_id, self.holder, now, now + self.lease
            ):
                return 0
            await session.commit()
        delivered = 0
        started = time.monotonic()
        try:
            while time.monotonic() - started < ROUND_BUDGET:
                async with self.sessionmaker() as session:
                    d = await repo.get_destination(session, destination_id)
                    if d is None or d.state not in repo.DELIVERING or d.lease_holder != self.holder:
                        return delivered
                    target = Target.of(d)
                    cursor = d.cursor
                    pinned = d.inflight_last
                    batch = await read_batch(session, target, cursor, upto=None, pinned=pinned)
                    await session.rollback()  # no transaction stays open while sending
                if batch.last == cursor:
                    return delivered
                wait = window_wait(self.settings, batch, self.clock(), pinned=pinned is not None)
                if wait > 0:
                    await asyncio.sleep(wait)  # more may come: one request for them all
                    async with self.sessionmaker() as session:
                        batch = await read_batch(session, target, cursor, upto=None, pinned=None)
                        await session.rollback()
                out = await attempt(self.settings, target, batch, client)
                if not await self._commit(destination_id, cursor, out):
                    return delivered
                delivered += out.delivered
                if out.failure is not None:
                    return delivered
        finally:
            async with self.sessionmaker() as session:
                await repo.release_destination(session, destination_id, self.holder)
                await session.commit()
        return delivered

    async def _commit(self, destination_id: int, old_cursor: int, out: Outcome) -> bool:
        async with self.sessionmaker() as session:
            now = self.clock()
            d = await repo.get_destination(session, destination_id)
            if d is None:
                return False
            values: dict[str, Any] = {
                "cursor": out.cursor,
                "lease_until": now + self.lease,
                "failed": d.failed + len(out.dead) + (0 if out.failure is None else 1),
            }
            events: list[tuple[str, str, str]] = []
            if out.delivered:
                values.update(delivered=d.delivered + out.delivered, last_success_at=now)
            if out.failure is None:
                values.update(inflight_last=None, attempts=0, next_attempt_at=None)
                values["failing_since"] = None
                if d.state == repo.FAILING and (out.delivered or out.dead):
                    values["state"] = repo.ACTIVE
                    events.append(
                        (
                            "forwarding.recovered",
                            "success",
                            f"Destination {d.id} '{d.name}' delivers again",
                        )
                    )
            else:
                f = out.failure
                attempts = d.attempts + 1
                error = (f.error or f.verdict)[:ERROR_LENGTH]
                since = d.failing_since or now
                delay = backoff(self.settings, attempts, f.retry_after, self.rng())
                values.update(
                    attempts=attempts,
                    last_error=error,
                    failing_since=since,
                    next_attempt_at=now + timedelta(seconds=delay),
                    inflight_last=out.pinned,
                )
                failing_long = (now - since).total_seconds() >= self.settings.forward_failing_after
                if f.verdict == "gone" and d.state != repo.DISABLED:
                    values["state"] = repo.DISABLED
                    events.append(
                        (
                            "forwarding.disabled",
                            "failure",
                            f"Destination {d.id} '{d.name}' "
                            f"disabled: the receiver answered 410 Gone ({error})",
                        )
                    )
                elif d.state == repo.ACTIVE and (f.verdict == "broken" or failing_long):
                    values["state"] = repo.FAILING
                    events.append(
                        (
                            "forwarding.failing",
                            "failure",
                            f"Destination {d.id} '{d.name}' "
                            f"is failing since {since.isoformat()}: {error}",
                        )
                    )
                logger.warning(
                    "forwarding: destination %s: attempt %s failed, next in %.1f s: %s",
                    d.id,
                    attempts,
                    delay,
                    error,
                )
            if not await repo.update_held(
                session, destination_id, self.holder, now, expect_cursor=old_cursor, **values
            ):
                await session.rollback()
                logger.warning("forwarding: destination %s: lease lost, not advanced", d.id)
                return False
            if out.dead:
                await repo.add_dead_letters(session, destination_id, out.dead, now)
            for action, outcome, description in events:
                sink = SessionEventSink(session, SYSTEM, action, "forwarding")
                sink.describe(
                    target_type="forward_destination",
                    target_id=str(d.id),
                    description=description,
                    destination=d.name,
                    kind=d.kind,
                    error=values.get("last_error"),
                    cursor=out.cursor,
                )
                await sink.write(outcome=outcome)
            await session.commit()
            return True

    # --- replays -----------------------------------------------------------------------------

    async def deliver_replay(self, replay_id: int, client: Any) -> int:
        async with self.sessionmaker() as session:
            now = self.clock()
            if not await repo.claim_replay(session, replay_id, self.holder, now, now + self.lease):
                return 0
            await session.commit()
        delivered = 0
        started = time.monotonic()
        try:
            while time.monotonic() - started < ROUND_BUDGET:
                async with self.sessionmaker() as session:
                    r = await repo.get_replay(session, replay_id)
                    d = await repo.get_destination(session, r.destination_id) if r else None
                    if r is None or d is None or r.state != repo.RUNNING:
                        return delivered
                    target = Target.of(d)
                    seen = ReplaySeen(
                        r.id, r.destination_id, r.to_position, r.delivered, r.attempts
                    )
                    cursor = r.cursor
                    batch = await read_batch(
                        session, target, cursor, upto=r.to_position, pinned=r.inflight_last
                    )
                    await session.rollback()
                out = await attempt(self.settings, target, batch, client, tag=f"_r{replay_id}")
                if not await self._commit_replay(seen, cursor, out):
                    return delivered
                delivered += out.delivered
                if out.failure is not None or out.cursor >= seen.to_position:
                    return delivered
        finally:
            async with self.sessionmaker() as session:
                await repo.update_replay_held(
                    session, replay_id, self.holder, self.clock(), lease_until=None
                )
                await session.commit()
        return delivered

    async def _commit_replay(self, r: ReplaySeen, old_cursor: int, out: Outcome) -> bool:
        async with self.sessionmaker() as session:
            now = self.clock()
            values: dict[str, Any] = {
                "cursor": out.cursor,
                "lease_until": now + self.lease,
                "updated_at": now,
                "delivered": r.delivered + out.delivered,
            }
            if out.failure is None:
                values.update(inflight_last=None, attempts=0, next_attempt_at=None)
                if out.cursor >= r.to_position:
                    values.update(state=repo.DONE, finished_at=now)
            else:
                f = out.failure
                attempts = r.attempts + 1
                values.update(
                    attempts=attempts,
                    last_error=(f.error or f.verdict)[:ERROR_LENGTH],
                    inflight_last=out.pinned,
                    next_attempt_at=now
                    + timedelta(
                        seconds=backoff(self.settings, attempts, f.retry_after, self.rng())
                    ),
                )
                if f.verdict == "gone":
                    values.update(state=repo.FAILED, finished_at=now)
            if not await repo.update_replay_held(
                session, r.id, self.holder, now, expect_cursor=old_cursor, **values
            ):
                await session.rollback()
                return False
            if out.dead:
                await repo.add_dead_letters(session, r.destination_id, out.dead, now)
            await session.commit()
            return True
