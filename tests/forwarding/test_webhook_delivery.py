"""Webhook delivery end to end: events recorded by real requests arrive at a real receiver
that verifies every signature with the `standardwebhooks` library; the cursor moves only
after the receiver accepted; failures retry, go `failing` and recover; 410 disables."""

from __future__ import annotations

import asyncio
from collections import Counter

from sqlalchemy import select

from audit_service.audit_log.models import AuditEvent
from audit_service.forwarding.delivery import Deliverer
from tests.conftest import Harness
from tests.forwarding.conftest import (
    admin,
    deliver,
    deliverer,
    destination_row,
    event_ids,
    harness_with,
    record,
    sequence,
    until,
    webhook,
)
from tests.forwarding.receivers import Reply, WebhookReceiver


async def test_recorded_events_arrive_signed_once_each(
    h: Harness, receiver: WebhookReceiver
) -> None:
    d = await webhook(h, receiver)
    assert d["secret_set"] is True and d["state"] == "active"
    await record(h, 7)
    await until(h, lambda: len(receiver.events()) >= 7)
    got = [e["event_id"] for e in receiver.events()]
    assert got == await event_ids(h)
    assert receiver.bad_signatures == 0
    assert all(r.headers["content-type"] == "application/json" for r in receiver.requests)
    status = await destination_row(h, d["id"])
    assert status["delivered"] == 7 and status["state"] == "active"
    assert status["last_success_at"] is not None and status["lag_seconds"] == 0
    # The other sources' and the API's own events were passed over by the filter, not sent.
    await deliver(h)
    assert len(receiver.events()) == 7


async def test_single_event_mode_sends_one_object_per_request(
    h: Harness, receiver: WebhookReceiver
) -> None:
    await webhook(h, receiver, config={"batch": False})
    await record(h, 3)
    await until(h, lambda: len(receiver.accepted) >= 3)
    assert [type(__import__("json").loads(r.body)).__name__ for r in receiver.accepted] == [
        "dict"
    ] * 3
    ids = [r.headers["webhook-id"] for r in receiver.accepted]
    assert len(set(ids)) == 3


async def test_a_failing_receiver_keeps_the_cursor_and_the_retry_has_the_same_webhook_id(
    h: Harness, receiver: WebhookReceiver
) -> None:
    d = await webhook(h, receiver)
    start = d["cursor"]
    await record(h, 4)
    receiver.always = Reply(500, b"boom")
    await deliver(h)
    status = await destination_row(h, d["id"])
    assert status["cursor"] == start
    assert status["last_error"].startswith("HTTP 500") and status["attempts"] == 1
    assert status["backlog"] > 0 and status["lag_seconds"] > 0
    receiver.always = None
    await asyncio.sleep(0.02)
    await until(h, lambda: len(receiver.events()) >= 4)
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert len(ids) >= 2 and len(set(ids)) == 1  # the failed batch, then its retry
    assert [e["event_id"] for e in receiver.events()] == await event_ids(h)
    status = await destination_row(h, d["id"])
    assert status["attempts"] == 0 and status["cursor"] > start


async def test_429_retry_after_is_honoured(h: Harness, receiver: WebhookReceiver) -> None:
    d = await webhook(h, receiver)
    await record(h, 1)
    receiver.script = [Reply(429, headers={"Retry-After": "5"})]
    await deliver(h)
    status = await destination_row(h, d["id"])
    assert status["last_error"].startswith("HTTP 429")
    await deliver(h)  # not due yet: nothing is sent
    assert len(receiver.requests) == 1


async def test_hang_garbage_and_closed_connections_are_retried_never_skipped(
    h: Harness, receiver: WebhookReceiver
) -> None:
    d = await webhook(h, receiver)
    start = d["cursor"]
    await record(h, 3)
    for reply in (Reply(mode="hang"), Reply(mode="garbage"), Reply(mode="close")):
        receiver.script = [reply]
        await deliver(h)
        status = await destination_row(h, d["id"])
        assert status["cursor"] == start, reply.mode
        assert status["last_error"], reply.mode
        await asyncio.sleep(0.02)
    await until(h, lambda: len(receiver.events()) >= 3)
    assert [e["event_id"] for e in receiver.events()] == await event_ids(h)


async def test_failing_after_the_failure_window_then_recovered(
    db_url: str, receiver: WebhookReceiver
) -> None:
    async with harness_with(db_url, forward_failing_after=0.2) as h:
        await _failing_then_recovered(h, receiver)


async def _failing_then_recovered(h: Harness, receiver: WebhookReceiver) -> None:
    d = await webhook(h, receiver)
    await record(h, 2)
    receiver.always = Reply(503)
    await deliver(h)
    assert (await destination_row(h, d["id"]))["state"] == "active"
    await asyncio.sleep(0.25)
    await deliver(h)
    status = await destination_row(h, d["id"])
    assert status["state"] == "failing" and status["failing_since"] is not None
    failing = await h.events(action="forwarding.failing")
    assert len(failing) == 1 and failing[0].actor_type == "system"
    assert failing[0].target_id == str(d["id"]) and failing[0].outcome == "failure"
    receiver.always = None
    await asyncio.sleep(0.02)
    await until(h, lambda: len(receiver.events()) >= 2)
    status = await destination_row(h, d["id"])
    assert status["state"] == "active" and status["failing_since"] is None
    assert len(await h.events(action="forwarding.recovered")) == 1


async def test_401_is_failing_at_once_and_410_disables(
    h: Harness, receiver: WebhookReceiver
) -> None:
    d = await webhook(h, receiver)
    await record(h, 1)
    receiver.script = [Reply(401)]
    await deliver(h)
    assert (await destination_row(h, d["id"]))["state"] == "failing"
    await asyncio.sleep(0.02)
    receiver.script = [Reply(410)]
    await deliver(h)
    status = await destination_row(h, d["id"])
    assert status["state"] == "disabled"
    assert len(await h.events(action="forwarding.disabled")) == 1
    await asyncio.sleep(0.02)
    await deliver(h)
    assert len(receiver.requests) == 2  # a disabled destination gets nothing more
    r = await h.client.post(
        f"/admin/forwarding/destinations/{d['id']}/resume", headers=await admin(h)
    )
    assert r.status_code == 200 and r.json()["state"] == "active"
    await until(h, lambda: len(receiver.events()) >= 1)


async def test_paused_destinations_wait_and_resume_where_they_stopped(
    h: Harness, receiver: WebhookReceiver
) -> None:
    d = await webhook(h, receiver)
    r = await h.client.post(
        f"/admin/forwarding/destinations/{d['id']}/pause", headers=await admin(h)
    )
    assert r.json()["state"] == "paused"
    await record(h, 2)
    await deliver(h)
    assert receiver.requests == []
    await h.client.post(f"/admin/forwarding/destinations/{d['id']}/resume", headers=await admin(h))
    await until(h, lambda: len(receiver.events()) >= 2)


async def test_start_beginning_delivers_the_whole_log(
    h: Harness, receiver: WebhookReceiver
) -> None:
    await record(h, 3)
    await deliver(h)
    await webhook(h, receiver, start="beginning")
    await until(h, lambda: len(receiver.events()) >= 3)
    assert [e["event_id"] for e in receiver.events()] == await event_ids(h)


async def test_two_concurrent_deliverers_deliver_every_event_exactly_once(
    h: Harness, receiver: WebhookReceiver
) -> None:
    await webhook(h, receiver, config={"batch_size": 7})
    await record(h, 120)
    await sequence(h)
    one, two = deliverer(h, holder="one"), deliverer(h, holder="two")

    async def loop(d: Deliverer) -> None:
        for _ in range(200):
            if len(receiver.events()) >= 120:
                return
            await d.run_once()
            await asyncio.sleep(0)

    await asyncio.gather(loop(one), loop(two))
    counts = Counter(e["event_id"] for e in receiver.events())
    assert set(counts) == set(await event_ids(h))
    assert set(counts.values()) == {1}


async def test_a_crash_between_send_and_commit_redelivers_never_loses(
    h: Harness, receiver: WebhookReceiver
) -> None:
    await webhook(h, receiver)
    await record(h, 5)
    crashing = deliverer(h, holder="crashes")

    async def crash(*_: object) -> bool:
        raise RuntimeError("the process died after the receiver accepted")

    crashing._commit = crash  # type: ignore[method-assign]
    await deliver(h, crashing)  # the batch was sent; the cursor did not move
    assert len(receiver.events()) == 5
    # Its lease runs out (the process is gone); another process takes over.
    async with h.engine.begin() as conn:
        from sqlalchemy import text

        await conn.execute(text("UPDATE forward_destination SET lease_until = NULL"))
    await until(h, lambda: len(receiver.events()) >= 10)
    counts = Counter(e["event_id"] for e in receiver.events())
    assert set(counts) == set(await event_ids(h)) and set(counts.values()) == {2}


async def test_the_events_of_the_receiver_are_the_rows(
    h: Harness, receiver: WebhookReceiver
) -> None:
    """Native JSON fields: what the receiver got is what the rows say."""
    await webhook(h, receiver)
    await record(h, 2, tenant_id="t1")
    await until(h, lambda: len(receiver.events()) >= 2)
    async with h.app.state.sessionmaker() as session:
        rows = (await session.scalars(select(AuditEvent).where(AuditEvent.source == "lms"))).all()
    by_id = {str(r.event_id): r for r in rows}
    for e in receiver.events():
        row = by_id[e["event_id"]]
        assert e["action"] == row.action and e["tenant_id"] == "t1"


async def test_the_in_process_jobs_deliver_within_seconds(
    db_url: str, receiver: WebhookReceiver
) -> None:
    """`serve` with jobs on: the sequencer and forwarding.deliver bring a committed event to
    the receiver without any help from the test."""
    async with harness_with(db_url, run_jobs=True) as h:
        await webhook(h, receiver)
        await record(h, 3)
        loop = asyncio.get_running_loop()
        started = loop.time()
        while len(receiver.events()) < 3:
            assert loop.time() - started < 10, "not delivered by the jobs"
            await asyncio.sleep(0.05)
        assert [e["event_id"] for e in receiver.events()] == await event_ids(h)


async def test_a_receiver_down_while_events_keep_coming_loses_nothing(
    h: Harness, receiver: WebhookReceiver
) -> None:
    d = await webhook(h, receiver, config={"batch_size": 10})
    port = receiver.port
    await receiver.stop()  # connection refused from now on
    for _ in range(5):
        await record(h, 10)
        await deliver(h)
        await asyncio.sleep(0.01)
    status = await destination_row(h, d["id"])
    assert status["cursor"] == d["cursor"] and status["backlog"] >= 50
    assert status["last_error"] and status["failed"] >= 1
    await receiver.start(port)
    await until(h, lambda: len(receiver.events()) >= 50)
    counts = Counter(e["event_id"] for e in receiver.events())
    assert list(counts) == await event_ids(h) and set(counts.values()) == {1}
    assert (await destination_row(h, d["id"]))["delivered"] == 50


async def test_batches_stay_under_one_megabyte(h: Harness, receiver: WebhookReceiver) -> None:
    await webhook(h, receiver)
    await record(h, 150, description="x" * 9_000)  # ~1.4 MB of events
    await until(h, lambda: len(receiver.events()) >= 150)
    assert len(receiver.accepted) >= 2
    assert all(len(r.body) <= 1024 * 1024 for r in receiver.accepted)
    assert [e["event_id"] for e in receiver.events()] == await event_ids(h)
