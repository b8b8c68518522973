"""`request_id`, `exclude_actor`, `exclude_action` and `exclude_ip` on /admin/activity and its
export, on both dialects: each returns exactly the expected events, alone and with the other
filters; an exclude never drops an event for a missing value (no IP, no actor name); bad
values are 422 problem+json. One seed per dialect, every case in one test (CI time)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from audit_service.audit_log.models import AuditEvent
from audit_service.audit_log.repository import EventFilters
from tests.activity.test_activity import T0, WINDOW, event_row, insert_one_by_one
from tests.conftest import Harness

# key: (action, actor_id, actor_name, ip, request_id); one hour apart, k1 the oldest.
SEED: dict[str, tuple[str, str | None, str | None, str | None, str | None]] = {
    "k1": ("auth.login", "u1", "alice", "10.1.2.3", "r-1"),
    "k2": ("item.viewed", "alice", "dave", "10.1.9.9", "r-1"),
    "k3": ("item.viewed", "u2", "bob", None, "r-2"),
    "k4": ("auth.logout", None, None, "2001:db8::1", None),
    "k5": ("item.updated", "u3", None, "192.168.0.1", None),
}
CASES: list[tuple[list[tuple[str, str]], list[str]]] = [
    ([("request_id", "r-1")], ["k2", "k1"]),
    ([("request_id", "r-2")], ["k3"]),
    ([("request_id", "r")], []),  # exact, not a prefix
    ([("request_id", "R-1")], []),  # case-sensitive
    # The actor's id or name, as `actor` matches; k4 (no actor) and k5 (no name) stay.
    ([("exclude_actor", "alice")], ["k5", "k4", "k3"]),
    ([("exclude_actor", "alice"), ("exclude_actor", "u3")], ["k4", "k3"]),
    ([("exclude_actor", "nobody")], ["k5", "k4", "k3", "k2", "k1"]),
    ([("exclude_action", "item.viewed")], ["k5", "k4", "k1"]),
    ([("exclude_action", "item.viewed"), ("exclude_action", "auth.login")], ["k5", "k4"]),
    ([("exclude_action", "item")], ["k5", "k4", "k3", "k2", "k1"]),  # exact
    # k3 has no IP: never excluded by exclude_ip.
    ([("exclude_ip", "10.1.0.0/16")], ["k5", "k4", "k3"]),
    ([("exclude_ip", "10.1.2.3")], ["k5", "k4", "k3", "k2"]),
    ([("exclude_ip", "::ffff:10.1.2.3")], ["k5", "k4", "k3", "k2"]),
    ([("exclude_ip", "::/0")], ["k5", "k3", "k2", "k1"]),  # IPv6 only, as `ip` means it
    ([("exclude_ip", "0.0.0.0/0")], ["k4", "k3"]),
    # With the other filters.
    ([("action", "item.viewed"), ("exclude_actor", "bob")], ["k2"]),
    ([("ip", "10.0.0.0/8"), ("exclude_ip", "10.1.2.3/32")], ["k2"]),
    ([("actor", "alice"), ("exclude_action", "auth.login")], ["k2"]),  # the actor union path
    ([("actor", "alice"), ("exclude_actor", "alice")], []),
    ([("request_id", "r-1"), ("exclude_ip", "10.1.9.0/24")], ["k1"]),
    (
        [("exclude_actor", "alice"), ("exclude_action", "auth.logout"), ("exclude_ip", "::/0")],
        ["k5", "k3"],
    ),
]


async def _seed(h: Harness) -> dict[str, str]:
    rows = []
    for i, (action, actor_id, actor_name, ip, request_id) in enumerate(SEED.values()):
        row = event_row(
            action, "m", at=T0 + timedelta(hours=i), actor_id=actor_id, actor_name=actor_name, ip=ip
        )
        row["request_id"] = request_id
        rows.append(row)
    await insert_one_by_one(h, rows)
    return {str(r["event_id"]): key for r, key in zip(rows, SEED, strict=True)}


async def test_each_new_filter_returns_exactly_the_expected_events(h: Harness) -> None:
    keys = await _seed(h)
    headers = await h.auth()
    for params, expected in CASES:
        query = [*params, *WINDOW.items(), ("page_size", "100")]
        r = await h.client.get("/admin/activity", params=query, headers=headers)
        assert r.status_code == 200, (params, r.text)
        body = r.json()
        assert [keys.get(e["event_id"], e["action"]) for e in body["items"]] == expected, params
        assert body["total"] == len(expected), params
        # The export applies the same filters (and says so).
        r = await h.client.get(
            "/admin/activity/export", params=[*query[:-1], ("format", "json")], headers=headers
        )
        assert r.status_code == 200, (params, r.text)
        document = json.loads(r.content)
        assert [keys[e["event_id"]] for e in document["events"]] == expected, params
        applied = document["export"]["filters"]
        for name, value in params:
            assert value in (applied[name] if isinstance(applied[name], list) else [applied[name]])
    # The view event names the filters as given.
    viewed = await h.last_event()
    assert viewed.event_metadata["filters"]["exclude_ip"] == "::/0"


async def test_a_cursor_is_bound_to_the_excludes(h: Harness) -> None:
    await _seed(h)
    headers = await h.auth()
    base: list[tuple[str, Any]] = [*WINDOW.items(), ("page_size", "10")]
    # Eleven more events so there is a second page.
    extra = [
        event_row("item.viewed", "m", at=T0 - timedelta(minutes=i + 1), actor_id="x")
        for i in range(11)
    ]
    await insert_one_by_one(h, extra)
    first = await h.client.get(
        "/admin/activity", params=[*base, ("exclude_action", "auth.login")], headers=headers
    )
    assert first.status_code == 200 and first.json()["next_cursor"], first.text
    cursor = first.json()["next_cursor"]
    again = await h.client.get(
        "/admin/activity",
        params=[*base, ("exclude_action", "auth.login"), ("cursor", cursor)],
        headers=headers,
    )
    assert again.status_code == 200, again.text
    ids = {e["id"] for e in first.json()["items"]} | {e["id"] for e in again.json()["items"]}
    assert len(ids) == 15  # 16 seeded, k1 (auth.login) left out; no duplicate
    other = await h.client.get(
        "/admin/activity",
        params=[*base, ("exclude_action", "auth.logout"), ("cursor", cursor)],
        headers=headers,
    )
    assert other.status_code == 422 and "other filters" in other.text


BAD: list[list[tuple[str, str]]] = [
    [("exclude_ip", "not-an-ip")],
    [("exclude_ip", "10.0.0.0/33")],
    [("exclude_action", "")],
    [("exclude_action", "a" * 101)],
    [("exclude_actor", "")],
    [("exclude_actor", "a" * 201)],
    [("exclude_actor", "x")] * 51,
    [("request_id", "")],
    [("request_id", "r" * 129)],
    [("request_id", "r\x00")],
    [("exclude", "alice")],  # unknown: refused, never silently ignored
]


async def test_bad_values_are_422_problems(h: Harness) -> None:
    headers = await h.auth()
    for params in BAD:
        for path in ("/admin/activity", "/admin/activity/export"):
            r = await h.client.get(path, params=params, headers=headers)
            assert r.status_code == 422, (path, params, r.text)
            assert r.headers["content-type"] == "application/problem+json"


async def test_request_id_is_an_index_lookup(pg_only_url: str, h: Harness) -> None:
    """EXPLAIN: the request_id page is read through ix_audit_event_request_id (migration
    0024), not a walk of the whole history (seqscan off: the test table is tiny)."""
    if h.app.state.settings.database_url != pg_only_url:
        pytest.skip("EXPLAIN of PostgreSQL's plan")
    e = AuditEvent
    stmt = (
        select(e.id)
        .where(*EventFilters(request_id="r-1").conditions())
        .order_by(e.occurred_at.desc(), e.id.desc())
        .limit(20)
    )
    compiled = stmt.compile(h.engine.sync_engine, compile_kwargs={"literal_binds": True})
    async with h.app.state.sessionmaker() as session:
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join((await session.execute(text(f"EXPLAIN {compiled}"))).scalars().all())
    assert "ix_audit_event_request_id" in plan, plan
