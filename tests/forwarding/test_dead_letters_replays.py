"""Permanent rejections go to the dead-letter list (a rejected batch is searched one event at
a time) and delivery moves on; dead letters can be retried and discarded; a replay of a
range delivers exactly the events of that range."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from tests.conftest import Harness
from tests.forwarding.conftest import (
    admin,
    deliver,
    destination_row,
    event_ids,
    record,
    until,
    webhook,
)
from tests.forwarding.receivers import Reply, Request, WebhookReceiver

BASE = "/admin/forwarding/destinations"


class Picky(WebhookReceiver):
    """Refuses (400) any request that carries an event described as 'bad'."""

    refuse = True

    def handle(self, request: Request) -> Reply:
        value = json.loads(request.body)
        events = value if isinstance(value, list) else [value]
        if self.refuse and any(e.get("description") == "bad" for e in events):
            return Reply(400, b'{"error":"bad event"}')
        return Reply(200, b"{}")


async def _picky(secret: str) -> Picky:
    r = Picky(secret)
    await r.start()
    return r


async def test_a_rejected_batch_is_split_and_only_the_bad_event_is_dead_lettered(
    h: Harness, secret: str
) -> None:
    receiver = await _picky(secret)
    try:
        d = await webhook(h, receiver)
        await record(h, 2)
        await record(h, 1, description="bad")
        await record(h, 2)
        await until(h, lambda: len(receiver.events()) >= 4)
        ids = await event_ids(h)
        got = [e["event_id"] for e in receiver.events()]
        assert got == [i for n, i in enumerate(ids) if n != 2]
        status = await destination_row(h, d["id"])
        assert (status["dead_letters"] == 1 and status["backlog"] == 0) or status["cursor"] > 0
        r = await h.client.get(f"{BASE}/{d['id']}/dead-letters", headers=await admin(h))
        assert r.status_code == 200
        (dead,) = r.json()["items"]
        assert dead["event_id"] == ids[2] and dead["reason"].startswith("HTTP 400")
        # Retried while still refused: stays, attempts counted.
        r = await h.client.post(
            f"{BASE}/{d['id']}/dead-letters/{dead['id']}/retry", headers=await admin(h)
        )
        assert r.status_code == 200 and r.json()["delivered"] is False
        receiver.refuse = False
        r = await h.client.post(
            f"{BASE}/{d['id']}/dead-letters/{dead['id']}/retry", headers=await admin(h)
        )
        assert r.json() == {"delivered": True, "status_code": 200, "error": None}
        assert receiver.events()[-1]["event_id"] == ids[2]
        r = await h.client.get(f"{BASE}/{d['id']}/dead-letters", headers=await admin(h))
        assert r.json()["items"] == []
        r = await h.client.delete(
            f"{BASE}/{d['id']}/dead-letters/{dead['id']}", headers=await admin(h)
        )
        assert r.status_code == 404
    finally:
        await receiver.stop()


async def test_a_dead_letter_can_be_discarded(h: Harness, secret: str) -> None:
    receiver = await _picky(secret)
    try:
        d = await webhook(h, receiver)
        await record(h, 1, description="bad")
        await until(h, lambda: bool(receiver.requests))
        await deliver(h)
        r = await h.client.get(f"{BASE}/{d['id']}/dead-letters", headers=await admin(h))
        (dead,) = r.json()["items"]
        r = await h.client.delete(
            f"{BASE}/{d['id']}/dead-letters/{dead['id']}", headers=await admin(h)
        )
        assert r.status_code == 204
        events = await h.events(action="forwarding.dead_letter_discarded")
        assert events and events[-1].event_metadata["position"] == dead["position"]
    finally:
        await receiver.stop()


async def _positions(h: Harness) -> dict[str, int]:
    from sqlalchemy import select

    from audit_service.audit_log.models import AuditEvent, AuditLeaf

    async with h.app.state.sessionmaker() as session:
        rows = await session.execute(
            select(AuditEvent.event_id, AuditLeaf.position).join(
                AuditLeaf, AuditLeaf.event_pk == AuditEvent.id
            )
        )
        return {str(e): int(p) for e, p in rows}


async def test_a_replayed_range_equals_the_events_of_that_range(
    h: Harness, receiver: WebhookReceiver
) -> None:
    d = await webhook(h, receiver)
    await record(h, 10)
    await until(h, lambda: len(receiver.events()) >= 10)
    ids = await event_ids(h)
    positions = await _positions(h)
    first, last = positions[ids[2]], positions[ids[6]]
    r = await h.client.post(
        f"{BASE}/{d['id']}/replays",
        headers=await admin(h),
        json={"from_position": first, "to_position": last},
    )
    assert r.status_code == 201, r.text
    replay = r.json()
    assert replay["state"] == "running" and replay["progress"] == 0
    await until(h, lambda: len(receiver.events()) >= 15)
    assert [e["event_id"] for e in receiver.events()[10:]] == ids[2:7]
    assert all("_r" in r.headers["webhook-id"] for r in receiver.accepted[-1:])
    r = await h.client.get(f"{BASE}/{d['id']}/replays", headers=await admin(h))
    (done,) = r.json()["items"]
    assert done["state"] == "done" and done["progress"] == 1 and done["delivered"] == 5


async def test_a_replay_by_time(h: Harness, receiver: WebhookReceiver) -> None:
    d = await webhook(h, receiver)
    since = datetime.now(UTC) - timedelta(seconds=1)
    await record(h, 3)
    await until(h, lambda: len(receiver.events()) >= 3)
    r = await h.client.post(
        f"{BASE}/{d['id']}/replays",
        headers=await admin(h),
        json={"since": since.isoformat(), "until": datetime.now(UTC).isoformat()},
    )
    assert r.status_code == 201, r.text
    await until(h, lambda: len(receiver.events()) >= 6)
    assert [e["event_id"] for e in receiver.events()[3:]] == await event_ids(h)


async def test_bad_replay_ranges_are_422(h: Harness, receiver: WebhookReceiver) -> None:
    d = await webhook(h, receiver)
    await record(h, 2)
    await deliver(h)
    url = f"{BASE}/{d['id']}/replays"
    now = datetime.now(UTC)
    for body in (
        {"from_position": 3, "to_position": 1},
        {"from_position": 0, "to_position": 10**9},
        {"from_position": 0},
        {"from_position": 0, "to_position": 1, "since": now.isoformat()},
        {"since": now.isoformat(), "until": (now - timedelta(hours=1)).isoformat()},
        {
            "since": (now + timedelta(days=1)).isoformat(),
            "until": (now + timedelta(days=2)).isoformat(),
        },
        {"since": "1700000000", "until": now.isoformat()},
        {"from_position": -1, "to_position": 1},
        {},
    ):
        r = await h.client.post(url, headers=await admin(h), json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    r = await h.client.post(
        f"{BASE}/999/replays", headers=await admin(h), json={"from_position": 0, "to_position": 0}
    )
    assert r.status_code == 404
