"""Splunk HEC: concatenated event objects with time/host/source/sourcetype/index/fields, the
token in `Authorization: Splunk`, and HEC's answers mapped (token → failing, 6/7 → dead
letter, 9/503 → retry)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import Harness
from tests.forwarding.conftest import (
    admin,
    create,
    deliver,
    destination_row,
    event_ids,
    harness_with,
    record,
    sequence,
    until,
)
from tests.forwarding.receivers import HecEmulator, Reply


async def _hec(
    h: Harness, hec: HecEmulator, token: str | None = None, **config: Any
) -> dict[str, Any]:
    return await create(
        h,
        name="splunk",
        kind="splunk_hec",
        format=config.pop("format", "native"),
        config={"url": hec.url, "index": "audit", "sourcetype": "audit:json", **config},
        secrets={"hec_token": token or hec.token},
        filter={"sources": ["lms"]},
    )


async def test_events_arrive_at_hec_with_their_metadata(h: Harness, hec: HecEmulator) -> None:
    d = await _hec(h, hec, hec_host="audit-1")
    assert d["secret_set"] is True and "hec_token" not in str(d)
    await record(h, 4, tenant_id="t9")
    await until(h, lambda: len(hec.events) >= 4)
    ids = await event_ids(h)
    assert [e["event"]["event_id"] for e in hec.events] == ids
    first = hec.events[0]
    assert first["index"] == "audit" and first["sourcetype"] == "audit:json"
    assert first["host"] == "audit-1" and first["source"] == "audit-service"
    assert isinstance(first["time"], float)
    assert first["fields"]["event_id"] == ids[0] and first["fields"]["tenant"] == "t9"
    assert len(hec.requests) == 1  # one batch
    assert hec.requests[0].headers["authorization"] == f"Splunk {hec.token}"


async def test_a_wrong_token_is_failing(h: Harness, hec: HecEmulator) -> None:
    d = await _hec(h, hec, token="wrong-token")
    await record(h, 1)
    await deliver(h)
    status = await destination_row(h, d["id"])
    assert status["state"] == "failing" and "Invalid token" in status["last_error"]
    assert "wrong-token" not in status["last_error"]
    assert status["cursor"] == d["cursor"]


async def test_hec_codes_6_and_7_dead_letter_9_and_503_retry(h: Harness, hec: HecEmulator) -> None:
    d = await _hec(h, hec)
    await record(h, 1)
    hec.script = [Reply(503, b'{"text":"Server is busy","code":9}')]
    await deliver(h)
    status = await destination_row(h, d["id"])
    assert status["cursor"] == d["cursor"] and "busy" in status["last_error"]
    await asyncio.sleep(0.02)
    hec.script = [Reply(400, b'{"text":"Incorrect index","code":7,"invalid-event-number":0}')]
    await deliver(h)
    status = await destination_row(h, d["id"])
    assert status["dead_letters"] == 1 and status["cursor"] > d["cursor"]
    await record(h, 1)
    hec.script = [Reply(400, b'{"text":"Invalid data format","code":6}')]
    await deliver(h)
    assert (await destination_row(h, d["id"]))["dead_letters"] == 2
    await record(h, 1)
    await until(h, lambda: len(hec.events) >= 1)
    assert hec.events[0]["event"]["event_id"] == (await event_ids(h))[-1]
    r = await h.client.get(
        f"/admin/forwarding/destinations/{d['id']}/dead-letters", headers=await admin(h)
    )
    assert [x["reason"][:8] for x in r.json()["items"]] == ["HTTP 400", "HTTP 400"]


async def test_the_test_endpoint_reports_the_receivers_answer(h: Harness, hec: HecEmulator) -> None:
    d = await _hec(h, hec)
    r = await h.client.post(
        f"/admin/forwarding/destinations/{d['id']}/test", headers=await admin(h)
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["delivered"] is True and body["status_code"] == 200 and body["elapsed_ms"] > 0
    assert hec.events[-1]["event"]["action"] == "forwarding.test"
    hec.script = [Reply(500, b"{}")]
    r = await h.client.post(
        f"/admin/forwarding/destinations/{d['id']}/test", headers=await admin(h)
    )
    assert r.json()["delivered"] is False and r.json()["status_code"] == 500


# --- indexer acknowledgement -----------------------------------------------------------------

CHANNEL = "0b6e8f7a-3c1d-4e2f-9a8b-7c6d5e4f3a2b"


async def test_with_hec_ack_the_cursor_waits_for_the_acknowledgement(
    db_url: str, hec: HecEmulator
) -> None:
    async with harness_with(db_url, forward_hec_ack_poll=0.05, forward_hec_ack_timeout=10) as h:
        hec.ack, hec.ack_delay = True, 2.0  # long enough for a loaded machine
        d = await _hec(h, hec, hec_ack=True, hec_channel=CHANNEL.upper())
        assert d["config"]["hec_channel"] == CHANNEL  # canonical form
        await record(h, 3)
        await sequence(h)
        task = asyncio.create_task(deliver(h))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while len(hec.events) < 3:
            assert loop.time() < deadline
            await asyncio.sleep(0.02)
        # Received, not acknowledged yet: the cursor has not moved.
        assert (await destination_row(h, d["id"]))["cursor"] == d["cursor"]
        await task
        status = await destination_row(h, d["id"])
        assert status["cursor"] > d["cursor"] and status["delivered"] == 3
        assert len(hec.ack_polls) >= 3  # polled until the delay was over
        assert hec.requests[0].headers["x-splunk-request-channel"] == CHANNEL
        assert [e["event"]["event_id"] for e in hec.events] == await event_ids(h)


async def test_a_batch_never_acknowledged_is_sent_again(db_url: str, hec: HecEmulator) -> None:
    async with harness_with(db_url, forward_hec_ack_poll=0.05, forward_hec_ack_timeout=0.3) as h:
        hec.ack, hec.never_ack = True, {0}
        d = await _hec(h, hec, hec_ack=True)
        await record(h, 2)
        await deliver(h)
        status = await destination_row(h, d["id"])
        assert status["cursor"] == d["cursor"] and "not acknowledged" in status["last_error"]
        assert len(hec.events) == 2  # the indexer got them, but never said they're safe
        await asyncio.sleep(0.02)
        await until(h, lambda: len(hec.acked_batches()) >= 1)
        again = hec.acked_batches()[0]
        ids = await event_ids(h)
        assert [e["event"]["event_id"] for e in again] == ids  # the same batch, again
        status = await destination_row(h, d["id"])
        assert status["cursor"] > d["cursor"] and status["delivered"] == 2
        assert status["backlog"] == 0


async def test_hec_ack_error_codes(h: Harness, hec: HecEmulator) -> None:
    """Ack on here but off at the receiver (no ackId, /ack code 14): failing, nothing
    moves; HEC's other codes keep their mapping with ack on."""
    d = await _hec(h, hec, hec_ack=True)
    await record(h, 1)
    await deliver(h)
    status = await destination_row(h, d["id"])
    assert status["state"] == "failing" and "ackId" in status["last_error"]
    assert status["cursor"] == d["cursor"]
    hec.ack = True
    await asyncio.sleep(0.02)
    hec.script = [Reply(503, b'{"text":"Server is busy","code":9}')]
    await deliver(h)
    status = await destination_row(h, d["id"])
    assert status["cursor"] == d["cursor"] and "busy" in status["last_error"]
    await asyncio.sleep(0.02)
    hec.script = [Reply(400, b'{"text":"Incorrect index","code":7}')]
    await deliver(h)
    status = await destination_row(h, d["id"])
    assert status["dead_letters"] == 1 and status["cursor"] > d["cursor"]
    await record(h, 1)
    await until(h, lambda: len(hec.acked_batches()) >= 1)
    status = await destination_row(h, d["id"])
    assert status["state"] == "active" and status["backlog"] == 0


async def test_hec_ack_settings_are_checked(h: Harness, hec: HecEmulator) -> None:
    r = await h.client.post(
        "/admin/forwarding/destinations",
        headers=await admin(h),
        json={
            "name": "bad-channel",
            "kind": "splunk_hec",
            "config": {"url": hec.url, "hec_ack": True, "hec_channel": "not-a-guid"},
            "secrets": {"hec_token": hec.token},
        },
    )
    assert r.status_code == 422 and "GUID" in r.text
    r = await h.client.post(
        "/admin/forwarding/destinations",
        headers=await admin(h),
        json={
            "name": "ack-on-webhook",
            "kind": "webhook",
            "config": {"url": hec.url + "/hook", "hec_ack": True},
        },
    )
    assert r.status_code == 422 and "hec_ack" in r.text
