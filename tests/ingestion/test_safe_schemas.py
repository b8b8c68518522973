"""Registered JSON Schemas cannot stall or crash ingestion: patterns match in linear time
(RE2), validation runs off the event loop, and self-applying references are refused."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import select

from audit_service.ingestion import safe_schema
from audit_service.ingestion.models import ActionSchema
from tests.conftest import Harness
from tests.ingestion.helpers import bearer, event, make_key

URL = "/admin/actions/exam.submitted/schema"
REDOS = "^(a+)+$"


async def _healthz_delays(h: Harness, work: Any) -> tuple[Any, float]:
    """Run `work` while polling /healthz; (work's result, slowest /healthz in seconds)."""
    slowest = 0.0
    done = asyncio.Event()

    async def poll() -> None:
        nonlocal slowest
        while not done.is_set():
            started = time.perf_counter()
            r = await h.client.get("/healthz")
            assert r.status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
            await asyncio.sleep(0.005)

    poller = asyncio.create_task(poll())
    await asyncio.sleep(0.02)
    try:
        result = await work
    finally:
        done.set()
        await poller
    return result, slowest


@pytest.mark.parametrize(
    "schema,metadata,loc",
    [
        (
            {"type": "object", "properties": {"code": {"type": "string", "pattern": REDOS}}},
            {"code": "a" * 30 + "!"},
            ["body", "metadata", "code"],
        ),
        (
            {"type": "object", "patternProperties": {REDOS: {"type": "integer"}}},
            {"a" * 30: "x", "a" * 30 + "!": 1},
            ["body", "metadata", "a" * 30],
        ),
        (
            {
                "type": "object",
                "patternProperties": {REDOS: {}},
                "additionalProperties": False,
            },
            {"a" * 30 + "!": 1},
            ["body", "metadata"],
        ),
        (
            {"type": "object", "propertyNames": {"pattern": REDOS}},
            {"a" * 30 + "!": 1},
            ["body", "metadata"],
        ),
    ],
)
async def test_catastrophic_patterns_answer_fast(
    h: Harness, schema: dict[str, Any], metadata: dict[str, Any], loc: list[Any]
) -> None:
    admin = await h.auth()
    key = await make_key(h)
    assert (await h.client.put(URL, headers=admin, json=schema)).status_code == 200
    # Warm up (the schema is compiled once, the pool thread started).
    await h.client.post("/events", headers=bearer(key), json=event(metadata={}))

    started = time.perf_counter()
    r, slowest = await _healthz_delays(
        h, h.client.post("/events", headers=bearer(key), json=event(metadata=metadata))
    )
    took = time.perf_counter() - started
    assert r.status_code == 422, r.text
    assert loc in [e["loc"] for e in r.json()["errors"]]
    # Python's re needs minutes for 30 characters (x3.6 per 2 more beyond 2.9 s at 26).
    print(f"ReDoS event answered in {took * 1000:.1f} ms; slowest /healthz {slowest * 1000:.1f} ms")
    assert took < 0.5, took
    assert slowest < 0.25, slowest


async def test_a_match_is_still_a_match(h: Harness) -> None:
    admin = await h.auth()
    key = await make_key(h)
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{2}-\\d+$"}},
        "patternProperties": {"^x_": {"type": "integer"}},
        "additionalProperties": False,
    }
    assert (await h.client.put(URL, headers=admin, json=schema)).status_code == 200
    good = event(metadata={"code": "AB-12", "x_count": 3})
    assert (await h.client.post("/events", headers=bearer(key), json=good)).status_code == 201
    for bad, where in (
        ({"code": "ab-12"}, ["body", "metadata", "code"]),
        ({"x_count": "three"}, ["body", "metadata", "x_count"]),
        ({"other": 1}, ["body", "metadata"]),
    ):
        r = await h.client.post("/events", headers=bearer(key), json=event(metadata=bad))
        assert r.status_code == 422, r.text
        assert where in [e["loc"] for e in r.json()["errors"]]


@pytest.mark.parametrize(
    "schema,says",
    [
        ({"$ref": "#"}, "reference cycle"),
        ({"allOf": [{"$ref": "#"}]}, "reference cycle"),
        (
            {
                "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"not": {"$ref": "#/$defs/a"}}},
                "properties": {"x": {"$ref": "#/$defs/a"}},
            },
            "reference cycle",
        ),
        ({"$defs": {"n": {"$anchor": "me", "anyOf": [{"$ref": "#me"}]}}}, "reference cycle"),
        ({"type": "string", "pattern": "^(?=a)a$"}, "RE2"),
        ({"patternProperties": {"(a)\\1": {}}}, "RE2"),
        ({"unevaluatedProperties": False, "patternProperties": {"^a": {}}}, "unevaluated"),
    ],
)
async def test_dangerous_schemas_are_refused_at_put(
    h: Harness, schema: dict[str, Any], says: str
) -> None:
    admin = await h.auth()
    r = await h.client.put(URL, headers=admin, json=schema)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert says.lower() in r.text.lower()
    async with h.app.state.sessionmaker() as session:
        assert (await session.scalars(select(ActionSchema))).all() == []


async def test_recursive_trees_are_fine(h: Harness) -> None:
    admin = await h.auth()
    key = await make_key(h)
    tree = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            }
        },
        "$ref": "#/$defs/node",
    }
    assert (await h.client.put(URL, headers=admin, json=tree)).status_code == 200, tree
    ok = event(metadata={"children": [{"children": []}]})
    assert (await h.client.post("/events", headers=bearer(key), json=ok)).status_code == 201
    bad = event(metadata={"children": [{"children": 5}]})
    r = await h.client.post("/events", headers=bearer(key), json=bad)
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "metadata", "children", 0, "children"]


async def test_a_cycle_stored_before_this_check_is_a_422_not_a_500(h: Harness) -> None:
    key = await make_key(h)
    async with h.app.state.sessionmaker() as session:
        session.add(ActionSchema(action="exam.submitted", json_schema={"$ref": "#"}))
        await session.commit()
    r = await h.client.post("/events", headers=bearer(key), json=event())
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == ["body", "metadata"]


async def test_validation_is_time_limited() -> None:
    def slow() -> int:
        time.sleep(0.3)
        return 1

    with pytest.raises(safe_schema.ValidationTimeout):
        await safe_schema.run_bounded(slow, 0.05)
    assert await safe_schema.run_bounded(lambda: 2, 1.0) == 2
