"""Delivery follows the log position: a transaction held open while others commit skips
nothing (its events arrive once it commits); and syslog delivery over TCP (RFC 6587 octet
counting) to a loopback listener."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter

from sqlalchemy import text

from audit_service.forwarding.syslog import BOM, unframe
from audit_service.kit.models import utcnow
from tests.conftest import Harness
from tests.forwarding.conftest import (
    admin,
    create,
    deliver,
    deliverer,
    event_ids,
    harness_with,
    lms_event,
    record,
    until,
    webhook,
)
from tests.forwarding.receivers import WebhookReceiver
from tests.stats.helpers import post_events

_INSERT = text(
    "INSERT INTO audit_event (event_id, occurred_at, recorded_at, source, actor_type, action,"
    " module, outcome, metadata) VALUES (:e, :t, :t, 'lms', 'service', 'exam.held', 'exam',"
    " 'success', '{}')"
)


async def test_a_transaction_held_open_while_others_commit_skips_nothing(
    pg_only_url: str, receiver: WebhookReceiver
) -> None:
    async with harness_with(pg_only_url) as h:
        await webhook(h, receiver)
        held = uuid.uuid4()
        async with h.engine.connect() as conn:
            tx = await conn.begin()
            await conn.execute(_INSERT, {"e": held, "t": utcnow()})  # written first, not committed
            await record(h, 20)  # 32 concurrent writers would do the same: commit after it
            await until(h, lambda: True)
            for _ in range(3):
                await deliver(h)
            # The held row has a lower id and txid than the ones committed after it: a
            # reader of "id > last" would have moved past it by now and never see it.
            assert str(held) not in [e["event_id"] for e in receiver.events()]
            await tx.commit()
        await until(h, lambda: len(receiver.events()) >= 21)
        counts = Counter(e["event_id"] for e in receiver.events())
        assert set(counts) == set(await event_ids(h)) and str(held) in counts
        assert set(counts.values()) == {1}


async def test_32_concurrent_writers_and_a_transaction_held_10_s_skip_nothing(
    pg_only_url: str, receiver: WebhookReceiver
) -> None:
    """While a destination is live: 32 writers commit batches concurrently and one
    transaction stays open for 10 s with an earlier row. Every event arrives exactly once,
    in log order (the receiver's set is the table's, no position delivered twice)."""
    async with harness_with(pg_only_url) as h:
        await webhook(h, receiver)
        await record(h, 1)  # the source's API key exists before the writers race for it
        held = uuid.uuid4()
        stop = asyncio.Event()

        async def deliver_live() -> None:
            d = deliverer(h)
            while not stop.is_set():
                await deliver(h, d)
                await asyncio.sleep(0.02)

        async def writer(w: int) -> None:
            for b in range(6):
                await post_events(
                    h, "lms", [lms_event(i, actor_id=f"w{w}-{b}-{i}") for i in range(5)]
                )
                await asyncio.sleep(0.5 + (w % 7) * 0.1)

        live = asyncio.create_task(deliver_live())
        try:
            async with h.engine.connect() as conn:
                tx = await conn.begin()
                await conn.execute(_INSERT, {"e": held, "t": utcnow()})
                started = asyncio.get_running_loop().time()
                await asyncio.gather(*(writer(w) for w in range(32)))
                await asyncio.sleep(max(0.0, 10.0 - (asyncio.get_running_loop().time() - started)))
                # The log's horizon waits for the open transaction (its row has the lower
                # txid): nothing committed after it gets a position before it ends, so
                # nothing can be delivered past it either: only the event from before.
                assert len(receiver.events()) == 1
                await tx.commit()
            total = 1 + 32 * 6 * 5 + 1
            await until(h, lambda: len(receiver.events()) >= total, seconds=30)
        finally:
            stop.set()
            await live
        got = [e["event_id"] for e in receiver.events()]
        assert len(got) == total and len(set(got)) == total  # nothing twice
        assert got == await event_ids(h)  # the table's set, in log order
        assert str(held) in got


async def test_syslog_over_tcp_frames_every_event(h: Harness) -> None:
    received = bytearray()
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            received.extend(data)
        done.set()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await create(
            h,
            name="syslog",
            kind="syslog",
            format="native",
            config={"host": "127.0.0.1", "port": port, "transport": "tcp"},
            filter={"sources": ["lms"]},
        )
        await record(h, 5, description='quotes " and ] and \\ and ünïcode\nnewline')
        await deliver(h)
        await asyncio.wait_for(done.wait(), 5)
        messages = unframe(bytes(received))
        assert len(messages) == 5
        ids = await event_ids(h)
        for message, event_id in zip(messages, ids, strict=True):
            assert message.startswith(b"<110>1 ")  # facility 13, informational
            body = json.loads(message.split(BOM, 1)[1])
            assert body["event_id"] == event_id
            assert body["description"] == 'quotes " and ] and \\ and ünïcode\nnewline'
    finally:
        server.close()


async def test_syslog_unreachable_is_retried(h: Harness) -> None:
    d = await create(
        h,
        name="syslog",
        kind="syslog",
        config={"host": "127.0.0.1", "port": 9, "transport": "tcp"},
        filter={"sources": ["lms"]},
    )
    await record(h, 1)
    await deliver(h)
    r = await h.client.get(
        f"/admin/forwarding/destinations/{d['id']}/status", headers=await admin(h)
    )
    assert r.json()["cursor"] == d["cursor"] and r.json()["last_error"]
