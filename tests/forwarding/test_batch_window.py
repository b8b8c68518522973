"""The batching window (AUDIT_FORWARD_BATCH_WINDOW_MS, default 200): a short batch waits
until its oldest event is a window old, so a steady stream goes out a few requests a second
instead of one per write; a full batch never waits."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import timedelta

from audit_service.forwarding.delivery import Batch, Deliverer, Item, window_wait
from audit_service.kit.models import utcnow
from tests.conftest import make_settings
from tests.forwarding.conftest import (
    deliver,
    deliverer,
    event_ids,
    harness_with,
    record,
    sequence,
    until,
    webhook,
)
from tests.forwarding.receivers import WebhookReceiver


def test_the_wait_is_what_is_left_of_the_window_of_the_oldest_event() -> None:
    settings = make_settings("sqlite+aiosqlite://", forward_batch_window_ms=200)
    now = utcnow()

    def batch(age_ms: float, *, full: bool = False) -> Batch:
        event = {"recorded_at": now - timedelta(milliseconds=age_ms)}
        return Batch(0, 1, [Item(1, event, {})], full=full)

    assert abs(window_wait(settings, batch(50), now, pinned=False) - 0.15) < 1e-6
    assert window_wait(settings, batch(250), now, pinned=False) == 0.0
    assert window_wait(settings, batch(-5000), now, pinned=False) == 0.2  # a clock ahead
    assert window_wait(settings, batch(0, full=True), now, pinned=False) == 0.0
    assert window_wait(settings, batch(0), now, pinned=True) == 0.0  # a retry goes at once
    assert window_wait(settings, Batch(0, 1, []), now, pinned=False) == 0.0
    off = make_settings("sqlite+aiosqlite://", forward_batch_window_ms=0)
    assert window_wait(off, batch(0), now, pinned=False) == 0.0


async def test_a_stream_of_small_writes_goes_out_in_few_requests(
    db_url: str, receiver: WebhookReceiver
) -> None:
    """40 writes of 5 events, one every 25 ms (~200 events/s) while delivery runs: with the
    window, about one request per 200 ms instead of one per write."""
    async with harness_with(db_url, forward_batch_window_ms=200) as h:
        await webhook(h, receiver)
        stop = asyncio.Event()

        async def live() -> None:
            d = deliverer(h)
            while not stop.is_set():
                await deliver(h, d)
                await asyncio.sleep(0.01)

        task = asyncio.create_task(live())
        started = time.monotonic()
        try:
            for _ in range(40):
                await record(h, 5)
                await asyncio.sleep(0.025)
            elapsed = time.monotonic() - started
            await until(h, lambda: len(receiver.events()) >= 200, seconds=20)
        finally:
            stop.set()
            await task
        requests = len(receiver.accepted)
        # ≈ elapsed / 0.2 s (+ the tail); without the window it would be close to 40.
        assert requests <= elapsed / 0.2 + 6, (requests, elapsed)  # + the tail, under load
        assert requests < 20
        counts = Counter(e["event_id"] for e in receiver.events())
        assert list(counts) == await event_ids(h) and set(counts.values()) == {1}


async def test_full_batches_never_wait(db_url: str, receiver: WebhookReceiver) -> None:
    """A 5 s window: 30 pending events in batches of 10 go out at once (three full
    batches); a short batch waits for its window."""
    async with harness_with(db_url, forward_batch_window_ms=5000) as h:
        await webhook(h, receiver, config={"batch_size": 10})
        await record(h, 1)  # the API key and its events first, out of the way (no window)
        settings = h.app.state.settings.model_copy(update={"forward_batch_window_ms": 0})
        await deliver(h, Deliverer(h.app.state.sessionmaker, settings))
        assert len(receiver.events()) == 1
        await record(h, 30)
        await sequence(h)
        started = time.monotonic()
        await deliver(h)
        assert len(receiver.events()) == 31 and len(receiver.accepted) == 4
        assert time.monotonic() - started < 4.0
        await record(h, 3)
        started = time.monotonic()
        await deliver(h)
        assert len(receiver.events()) == 34 and len(receiver.accepted) == 5
        assert time.monotonic() - started >= 3.0  # it waited (most of) the window
