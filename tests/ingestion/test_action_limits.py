"""GET /admin/actions is one statement however many actions exist, and a posting service
can introduce at most AUDIT_MAX_ACTIONS_PER_SOURCE distinct actions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import select

from audit_service.ingestion.models import SourceAction
from tests.conftest import Harness, make_settings, start_harness
from tests.ingestion.helpers import bearer, event, ingested, make_key


def _statements(h: Harness) -> list[str]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    sa_event.listen(h.engine.sync_engine, "before_cursor_execute", count)
    return seen


async def _listing_statements(h: Harness, admin: dict[str, str]) -> tuple[int, Any]:
    seen = _statements(h)
    r = await h.client.get("/admin/actions", headers=admin)
    assert r.status_code == 200, r.text
    # Reads of events or schemas (the request's own audit row is an INSERT).
    reads = [
        s
        for s in seen
        if not s.lstrip().upper().startswith("INSERT")
        and ("audit_event" in s or "action_schema" in s)
    ]
    return len(reads), r.json()


async def test_listing_is_one_statement(h: Harness) -> None:
    admin = await h.auth()
    key = await make_key(h)
    batch = [event(action=f"exam.step_{i}", module="exam") for i in range(3)]
    assert (
        await h.client.post("/events/batch", headers=bearer(key), json={"events": batch})
    ).status_code == 200
    few, body = await _listing_statements(h, admin)
    batch = [event(action=f"course.step_{i}", module="course") for i in range(40)]
    assert (
        await h.client.post("/events/batch", headers=bearer(key), json={"events": batch})
    ).status_code == 200
    put = await h.client.put(
        "/admin/actions/quiz.only_schema/schema", headers=admin, json={"type": "object"}
    )
    assert put.status_code == 200
    many, body = await _listing_statements(h, admin)
    assert few == many == 1, (few, many)
    items = {i["action"]: i for i in body["items"]}
    assert items["course.step_7"]["event_count"] == 1
    assert items["course.step_7"]["module"] == "course"
    assert items["course.step_7"]["event_count_is_estimate"] is False
    assert items["quiz.only_schema"]["event_count"] == 0
    assert items["quiz.only_schema"]["schema"] == {"type": "object"}
    assert items["quiz.only_schema"]["module"] is None
    assert list(items) == sorted(items)


@pytest.fixture
async def capped(db_url: str) -> AsyncIterator[Harness]:
    async for harness in start_harness(make_settings(db_url, max_actions_per_source=3)):
        yield harness


async def test_new_actions_are_capped_per_source(capped: Harness) -> None:
    h = capped
    key = await make_key(h)
    other = await make_key(h, "billing")
    for i in range(3):
        r = await h.client.post("/events", headers=bearer(key), json=event(action=f"exam.a{i}"))
        assert r.status_code == 201, r.text
    # Known actions keep working; a fourth is refused, naming the field.
    assert (
        await h.client.post("/events", headers=bearer(key), json=event(action="exam.a1"))
    ).status_code == 201
    r = await h.client.post("/events", headers=bearer(key), json=event(action="exam.a9"))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"][0]["loc"] == ["body", "action"]
    assert "AUDIT_MAX_ACTIONS_PER_SOURCE" in r.json()["errors"][0]["msg"]
    # In a batch: every event with a new action is named by index, and nothing is stored.
    before = len(await ingested(h))
    batch = [
        event(action="exam.a0"),
        event(action="exam.b1"),
        event(action="exam.a2"),
        event(action="exam.b2"),
    ]
    r = await h.client.post("/events/batch", headers=bearer(key), json={"events": batch})
    assert r.status_code == 422, r.text
    assert [e["loc"] for e in r.json()["errors"]] == [
        ["body", "events", 1, "action"],
        ["body", "events", 3, "action"],
    ]
    assert len(await ingested(h)) == before
    # The cap is per source.
    r = await h.client.post("/events", headers=bearer(other), json=event(action="exam.a9"))
    assert r.status_code == 201, r.text
    async with h.app.state.sessionmaker() as session:
        rows = (await session.execute(select(SourceAction.source, SourceAction.action))).all()
    assert sorted(rows) == sorted(
        [("billing", "exam.a9")] + [("exam-platform", f"exam.a{i}") for i in range(3)]
    )


async def test_the_cap_holds_under_concurrency(capped: Harness) -> None:
    h = capped
    key = await make_key(h)
    calls = [
        h.client.post("/events", headers=bearer(key), json=event(action=f"exam.c{i}"))
        for i in range(12)
    ]
    statuses = sorted(r.status_code for r in await asyncio.gather(*calls))
    assert statuses == [201] * 3 + [422] * 9, statuses
    stored = {e.action for e in await ingested(h)}
    assert len(stored) == 3
