"""POST /events and /events/batch: storing, idempotency, atomic batches, and what is recorded."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from audit_service.kit.net import ip_key, parse_ip
from tests.conftest import CLIENT_IP, Harness
from tests.ingestion.helpers import bearer, event, ingested, make_key


async def test_one_event_is_stored_as_posted(h: Harness) -> None:
    key = await make_key(h)
    before = await h.count_events()
    body = event(
        occurred_at="2026-03-01T09:30:00.250+01:00",
        ip="::ffff:198.51.100.23",
        tenant_id="school-7",
        description="Submitted the algebra exam",
        user_agent="Mozilla/5.0 " + "x" * 600,
        metadata={"answers": 40, "sections": [{"id": 1, "score": 9.5}]},
    )
    r = await h.client.post("/events", headers=bearer(key), json=body)
    assert r.status_code == 201, r.text
    assert r.headers["content-type"] == "application/json"
    out = r.json()
    assert set(out) == {"id", "event_id", "duplicate"} and out["duplicate"] is False

    # The stored event is the record: the request adds no second event of its own.
    assert await h.count_events() == before + 1
    (e,) = await ingested(h)
    assert (e.id, str(e.event_id)) == (out["id"], out["event_id"])
    assert e.source == "exam-platform"
    assert (e.action, e.module, e.outcome) == ("exam.submitted", "exam", "success")
    assert (e.actor_type, e.actor_id, e.actor_name, e.actor_role) == (
        "user",
        "student-1042",
        "Ada L.",
        "student",
    )
    assert e.occurred_at == datetime(2026, 3, 1, 8, 30, 0, 250000, tzinfo=UTC)
    assert e.recorded_at >= e.occurred_at
    assert (e.ip, e.ip_bytes) == ("198.51.100.23", ip_key(parse_ip("198.51.100.23")))
    assert e.user_agent is not None and len(e.user_agent) == 512
    assert (e.tenant_id, e.target_type, e.target_id) == ("school-7", "exam", "algebra-2")
    assert e.idempotency_key == body["idempotency_key"]
    assert (e.request_id, e.method, e.path, e.status_code) == (None, None, None, None)
    # The posting service's own address and key are noted next to the caller's metadata.
    assert e.event_metadata == {
        "answers": 40,
        "sections": [{"id": 1, "score": 9.5}],
        "received_from": CLIENT_IP,
        "api_key_prefix": key[:16],
    }


async def test_defaults_and_x_api_key(h: Harness) -> None:
    key = await make_key(h)
    minimal = {
        "action": "course.enrolment_opened",
        "occurred_at": "2026-01-01T00:00:00Z",
        "actor_id": "teacher-1",
    }
    r = await h.client.post("/events", headers={"X-API-Key": key}, json=minimal)
    assert r.status_code == 201, r.text
    (e,) = await ingested(h)
    assert (e.module, e.outcome, e.actor_type, e.ip, e.idempotency_key) == (
        "course",
        "success",
        "user",
        None,
        None,
    )
    # Without an idempotency key nothing is deduplicated: the same body is a new event.
    again = await h.client.post("/events", headers={"X-API-Key": key}, json=minimal)
    assert again.status_code == 201 and again.json()["id"] != r.json()["id"]


async def test_visible_in_activity_as_soon_as_acknowledged(h: Harness) -> None:
    key = await make_key(h)
    r = await h.client.post("/events", headers=bearer(key), json=event(tenant_id="t-1"))
    assert r.status_code == 201
    admin = await h.auth()
    page = await h.client.get("/admin/activity", headers=admin, params={"source": "exam-platform"})
    assert page.status_code == 200, page.text
    items = page.json()["items"]
    assert [i["id"] for i in items] == [r.json()["id"]]
    assert items[0]["tenant_id"] == "t-1" and items[0]["metadata"]["answers"] == 40


async def test_replay_returns_the_original(h: Harness) -> None:
    key = await make_key(h)
    body = event()
    first = await h.client.post("/events", headers=bearer(key), json=body)
    assert first.status_code == 201
    # A retry may differ (e.g. a re-rendered description): the key alone decides.
    replay = await h.client.post(
        "/events", headers=bearer(key), json={**body, "description": "retried"}
    )
    assert replay.status_code == 200
    assert replay.json() == {**first.json(), "duplicate": True}
    (stored,) = await ingested(h)
    assert stored.description is None
    # Keys are per service: another service may use the same one.
    other = await make_key(h, name="billing")
    r = await h.client.post("/events", headers=bearer(other), json=body)
    assert r.status_code == 201 and r.json()["id"] != first.json()["id"]


async def test_idempotency_key_header(h: Harness) -> None:
    key = await make_key(h)
    body = event(idempotency_key=...)
    headers = {**bearer(key), "Idempotency-Key": "order-42:shipped"}
    first = await h.client.post("/events", headers=headers, json=body)
    assert first.status_code == 201
    # The same key in the body is the same event.
    replay = await h.client.post(
        "/events", headers=bearer(key), json={**body, "idempotency_key": "order-42:shipped"}
    )
    assert (replay.status_code, replay.json()["id"]) == (200, first.json()["id"])
    mismatch = await h.client.post(
        "/events", headers=headers, json={**body, "idempotency_key": "something-else"}
    )
    assert mismatch.status_code == 422
    assert mismatch.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    bad = await h.client.post(
        "/events", headers={**bearer(key), "Idempotency-Key": "a b"}, json=body
    )
    assert bad.status_code == 422
    assert len(await ingested(h)) == 1


async def test_concurrent_replays_store_one_event(h: Harness) -> None:
    key = await make_key(h)
    body = event()
    responses = await asyncio.gather(
        *(h.client.post("/events", headers=bearer(key), json=body) for _ in range(12))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 11 + [201], [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.json()["duplicate"] for r in responses) == 11
    assert len(await ingested(h)) == 1


async def test_concurrent_overlapping_batches(h: Harness) -> None:
    key = await make_key(h)
    shared = [event(idempotency_key=f"shared-{i}") for i in range(20)]
    batches = [
        {"events": [*shared, *(event(idempotency_key=f"own-{n}-{i}") for i in range(5))]}
        for n in range(4)
    ]
    responses = await asyncio.gather(
        *(h.client.post("/events/batch", headers=bearer(key), json=b) for b in batches)
    )
    assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
    assert sum(r.json()["inserted"] for r in responses) == 20 + 4 * 5
    ids = {tuple(item["id"] for item in r.json()["results"][:20]) for r in responses}
    assert len(ids) == 1  # every batch names the same stored events for the shared keys
    assert len(await ingested(h)) == 40


async def test_batch(h: Harness) -> None:
    key = await make_key(h)
    before = await h.count_events()
    events = [event(action="exam.started"), event(idempotency_key=...), event()]
    r = await h.client.post("/events/batch", headers=bearer(key), json={"events": events})
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["inserted"], out["duplicates"]) == (3, 0)
    assert [x["index"] for x in out["results"]] == [0, 1, 2]
    stored = await ingested(h)
    assert await h.count_events() == before + 3
    by_id = {e.id: e for e in stored}
    assert [by_id[x["id"]].action for x in out["results"]] == [
        "exam.started",
        "exam.submitted",
        "exam.submitted",
    ]
    assert [str(by_id[x["id"]].event_id) for x in out["results"]] == [
        x["event_id"] for x in out["results"]
    ]

    # A retried batch with one new event and a key repeated inside it.
    fresh = event()
    retry = [events[2], fresh, events[0], {**fresh, "description": "same key again"}]
    r = await h.client.post("/events/batch", headers=bearer(key), json={"events": retry})
    assert r.status_code == 200
    out2 = r.json()
    assert (out2["inserted"], out2["duplicates"]) == (1, 3)
    results = out2["results"]
    assert [x["duplicate"] for x in results] == [True, False, True, True]
    assert results[0]["id"] == out["results"][2]["id"]
    assert results[2]["id"] == out["results"][0]["id"]
    assert results[3]["id"] == results[1]["id"]
    assert len(await ingested(h)) == 4


async def test_invalid_batch_stores_nothing_and_names_each_index(h: Harness) -> None:
    key = await make_key(h)
    events = [event(), event(ip="999.1.1.1"), event(), event(actor_id="  ", outcome="maybe")]
    r = await h.client.post("/events/batch", headers=bearer(key), json={"events": events})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    locs = sorted(tuple(e["loc"]) for e in r.json()["errors"])
    assert locs == [
        ("body", "events", 1, "ip"),
        ("body", "events", 3, "actor_id"),
        ("body", "events", 3, "outcome"),
    ]
    assert await ingested(h) == []
    # The refused request is itself recorded, with the service as the actor.
    failed = await h.last_event()
    assert (failed.action, failed.module, failed.outcome, failed.status_code) == (
        "ingestion.batch_posted",
        "ingestion",
        "failure",
        422,
    )
    assert (failed.actor_type, failed.actor_id, failed.actor_name) == (
        "service",
        key[:16],
        "exam-platform",
    )
    assert key not in json.dumps(failed.event_metadata)


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


NOW = datetime.now(UTC)
BAD_EVENTS: dict[str, tuple[dict[str, Any], list[str | int]]] = {
    "missing action": (event(action=...), ["action"]),
    "blank action": (event(action=""), ["action"]),
    "action not module.verb": (event(action="Exam Submitted"), ["action"]),
    "action too long": (event(action="exam." + "x" * 100), ["action"]),
    "missing occurred_at": (event(occurred_at=...), ["occurred_at"]),
    "naive occurred_at": (event(occurred_at="2026-03-01T09:30:00"), ["occurred_at"]),
    "future occurred_at": (
        # A day, not minutes: NOW is taken at import and the suite can run longer than that.
        event(occurred_at=(NOW + timedelta(days=1)).isoformat()),
        ["occurred_at"],
    ),
    "numeric occurred_at": (event(occurred_at=1_700_000_000), ["occurred_at"]),
    "garbage occurred_at": (event(occurred_at="yesterday"), ["occurred_at"]),
    "missing actor_id": (event(actor_id=...), ["actor_id"]),
    "blank actor_id": (event(actor_id="   "), ["actor_id"]),
    "actor_id wrong type": (event(actor_id=1042), ["actor_id"]),
    "unknown actor_type": (event(actor_type="robot"), ["actor_type"]),
    "unknown outcome": (event(outcome="ok"), ["outcome"]),
    "invalid ip": (event(ip="10.0.0.300"), ["ip"]),
    "ip with a mask": (event(ip="10.0.0.0/8"), ["ip"]),
    "metadata is a list": (event(metadata=[1, 2]), ["metadata"]),
    "metadata is text": (event(metadata="{}"), ["metadata"]),
    "metadata too deep": (event(metadata=_deep(9)), ["metadata"]),
    "metadata too big": (event(metadata={"blob": "x" * 17_000}), ["metadata"]),
    "metadata reserved key": (event(metadata={"received_from": "10.0.0.1"}), ["metadata"]),
    "description too long": (event(description="x" * 10_001), ["description"]),
    "idempotency key too long": (event(idempotency_key="k" * 129), ["idempotency_key"]),
    "idempotency key blank": (event(idempotency_key=""), ["idempotency_key"]),
    "unknown field (typo)": (event(acter_id="x"), ["acter_id"]),
    "source is not the caller's to set": (event(source="billing"), ["source"]),
    "module not lowercase": (event(module="Exams"), ["module"]),
    # PostgreSQL text and JSONB cannot hold NUL: a 422 here, not a database error.
    "NUL in description": (event(description="a\x00b"), ["description"]),
    "NUL in metadata": (event(metadata={"note": "a\x00b"}), ["metadata"]),
    "NUL in a metadata key": (event(metadata={"a\x00": 1}), ["metadata"]),
}


@pytest.mark.parametrize("name", list(BAD_EVENTS))
async def test_bad_event_is_refused(h: Harness, name: str) -> None:
    key = await make_key(h)
    body, loc = BAD_EVENTS[name]
    r = await h.client.post("/events", headers=bearer(key), json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["status"] == 422 and problem["type"].endswith("/validation-error")
    assert ["body", *loc] in [e["loc"] for e in problem["errors"]], problem
    # The same event inside a batch is named by its index.
    batch = {"events": [event(), body]}
    r = await h.client.post("/events/batch", headers=bearer(key), json=batch)
    assert r.status_code == 422
    assert ["body", "events", 1, *loc] in [e["loc"] for e in r.json()["errors"]]
    assert await ingested(h) == []
    assert (await h.last_event()).outcome == "failure"


async def test_near_future_and_deep_enough_metadata_are_fine(h: Harness) -> None:
    key = await make_key(h)
    body = event(
        occurred_at=(datetime.now(UTC) + timedelta(minutes=4)).isoformat(),
        metadata=_deep(8),
    )
    r = await h.client.post("/events", headers=bearer(key), json=body)
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    ("content", "path"),
    [
        (b'{"action": "exam.submitted",', "/events"),
        (b"[" * 50_000 + b"]" * 50_000, "/events"),
        (b'{"events": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "/events/batch"),
        (b"null", "/events/batch"),
        (b'"events"', "/events/batch"),
        (b'{"events": {}}', "/events/batch"),
        (b'{"events": []}', "/events/batch"),
        (b'{"events": [], "extra": 1}', "/events/batch"),
    ],
)
async def test_malformed_bodies(h: Harness, content: bytes, path: str) -> None:
    key = await make_key(h)
    headers = {**bearer(key), "Content-Type": "application/json"}
    r = await h.client.post(path, headers=headers, content=content)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert await ingested(h) == []


async def test_batch_size_limits(h: Harness) -> None:
    key = await make_key(h)
    small = event(metadata={}, description=None)
    r = await h.client.post("/events/batch", headers=bearer(key), json={"events": [small] * 1001})
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "events"]
    # 6 MiB: refused before it is read, whatever it contains.
    six_mib = {"events": [event(description="x" * 6_000) for _ in range(1_100)]}
    r = await h.client.post("/events/batch", headers=bearer(key), json=six_mib)
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"
    # A single event has the ordinary 1 MiB limit.
    r = await h.client.post("/events", headers=bearer(key), json=event(description="x" * 1_100_000))
    assert r.status_code == 413
    assert await ingested(h) == []
    assert (await h.last_event()).action == "http.payload_too_large"

    # Just under the limits is fine: 1,000 events of ~4.5 KiB (about 4.6 MiB).
    full = {"events": [event(description="y" * 4_000) for _ in range(1_000)]}
    r = await h.client.post("/events/batch", headers=bearer(key), json=full)
    assert r.status_code == 200, r.text[:500]
    assert r.json()["inserted"] == 1000
    assert len(await ingested(h)) == 1000


async def test_unique_event_ids_and_order(h: Harness) -> None:
    key = await make_key(h)
    events = [event(target_id=f"exam-{i}") for i in range(50)]
    r = await h.client.post("/events/batch", headers=bearer(key), json={"events": events})
    results = r.json()["results"]
    assert len({x["event_id"] for x in results}) == 50
    stored = {e.id: e for e in await ingested(h)}
    assert [stored[x["id"]].target_id for x in results] == [f"exam-{i}" for i in range(50)]
    assert all(uuid.UUID(x["event_id"]).version == 7 for x in results)
