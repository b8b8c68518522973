"""GET /admin/activity/facets (both dialects): the facet table equals a GROUP BY over the
raw rows after the rollup, also for events counted before migration 0014 (its backfill)
and positions the rollup passed without facets (the job's catch-up); prefix typeahead with
`%` and `_` as plain characters; permissions; bad input."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from audit_service.core import migrations
from audit_service.stats.repository import prefix_end
from tests.conftest import Harness
from tests.pg import Roles
from tests.stats.helpers import event, post_events, raw_group_by, roll_up, stored_rollups

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
FacetRows = dict[tuple[str, str, str], tuple[int, datetime]]


def _when(value: Any) -> datetime:
    # SQLite hands back max(occurred_at) as its stored text (UTC, no offset).
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    assert isinstance(value, datetime)
    return value.astimezone(UTC)


async def raw_facets(h: Harness, watermark: int) -> FacetRows:
    """What stats_facet must hold: a GROUP BY per field over the rows the watermark covers."""
    base = (
        f"FROM audit_event e JOIN audit_leaf l ON l.event_pk = e.id WHERE l.position <= {watermark}"
    )
    parts = [
        f"SELECT '{f}', e.{f}, '', count(*), max(e.occurred_at) {base} GROUP BY e.{f}"
        for f in ("action", "module", "source")
    ]
    parts.append(
        f"SELECT 'tenant_id', e.tenant_id, '', count(*), max(e.occurred_at) {base} "
        "AND e.tenant_id IS NOT NULL GROUP BY e.tenant_id"
    )
    parts.append(
        f"SELECT 'actor', e.actor_id, e.actor_type, count(*), max(e.occurred_at) {base} "
        "AND e.actor_id IS NOT NULL GROUP BY e.actor_id, e.actor_type"
    )
    async with h.engine.connect() as conn:
        rows = (await conn.execute(text(" UNION ALL ".join(parts)))).all()
    return {(r[0], r[1], r[2]): (int(r[3]), _when(r[4])) for r in rows}


async def stored_facets(h: Harness) -> FacetRows:
    async with h.engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT field, value, actor_type, events, last_seen FROM stats_facet")
            )
        ).all()
    return {(r[0], r[1], r[2]): (int(r[3]), _when(r[4])) for r in rows}


async def watermarks(h: Harness) -> dict[str, int]:
    async with h.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT name, position FROM stats_watermark"))).all()
    return {r[0]: int(r[1]) for r in rows}


async def _seed(h: Harness, start: datetime = T0) -> None:
    """Values with LIKE's wildcards and case and non-ASCII text, a back-dated event, an
    actor id under two actor types, events without tenant; and a failed login (anonymous,
    no actor id) from the service itself."""
    await post_events(
        h,
        "lms",
        [
            *[event(start, actor_id="50%_off", tenant_id="t_1") for _ in range(3)],
            event(start + timedelta(minutes=1), actor_id="50%xoff", tenant_id="t%1"),
            event(start + timedelta(minutes=2), actor_id="50x_off", tenant_id="tx1"),
            event(start, action="exam.grade_x", actor_id="Bob"),
            event(start, action="exam.gradeax", actor_id="bob"),
            event(start - timedelta(days=400), action="exam.grade_x", actor_id="bob"),
            event(start, actor_id="svc", actor_type="service", tenant_id="ünï"),
        ],
    )
    await post_events(h, "hr-portal", [event(start, actor_id="svc", action="user.updated")])
    r = await h.client.post("/login", json={"username": "nobody", "password": "wrong-password"})
    assert r.status_code == 401


async def test_facets_equal_group_by_and_follow_the_log(h: Harness) -> None:
    await _seed(h)
    watermark = await roll_up(h, batch=4)  # several rounds
    expected = await raw_facets(h, watermark)
    assert await stored_facets(h) == expected
    assert expected[("actor", "svc", "service")][0] == 1
    assert expected[("actor", "svc", "user")][0] == 1
    assert expected[("action", "exam.grade_x", "")][0] == 2
    assert not any(f == "actor" and v is None for f, v, _ in expected)
    assert await watermarks(h) == {"rollup": watermark, "facets": watermark}

    # Later events add to the same rows; a back-dated one does not move last_seen back.
    await _seed(h, T0 + timedelta(days=1))
    watermark = await roll_up(h)
    stored = await stored_facets(h)
    assert stored == await raw_facets(h, watermark)
    assert stored[("actor", "50%_off", "user")] == (6, T0 + timedelta(days=1))


async def test_positions_passed_without_facets_are_caught_up(h: Harness) -> None:
    """The rollup's watermark ahead of the facets' (a replica on older code counted them):
    the job counts their facets, and the buckets are not counted twice."""
    await _seed(h)
    await roll_up(h)
    async with h.admin() as conn:
        await conn.execute(text("DELETE FROM stats_facet"))
        await conn.execute(text("DELETE FROM stats_watermark WHERE name = 'facets'"))
    await _seed(h, T0 + timedelta(hours=5))
    watermark = await roll_up(h, batch=3)
    assert await stored_facets(h) == await raw_facets(h, watermark)
    assert await stored_rollups(h) == await raw_group_by(h, watermark)
    assert await watermarks(h) == {"rollup": watermark, "facets": watermark}


async def test_migration_backfills_events_counted_before_it(
    h: Harness, request: pytest.FixtureRequest
) -> None:
    """Events the rollup counted before stats_facet existed get their facets from 0014's
    one-pass GROUP BY, exactly up to the rollup's watermark; the job counts the rest."""
    await _seed(h)
    watermark = await roll_up(h)
    await _seed(h, T0 + timedelta(hours=5))  # committed, not yet counted
    url = h.app.state.settings.database_url
    await h.engine.dispose()  # no pooled connection holds plans of the dropped table
    if h.engine.dialect.name == "postgresql":
        roles: Roles = request.getfixturevalue("pg_roles")
        migrations.downgrade(roles.admin_url, "0013", role=roles.owner)
        roles.migrate("head")
        await roles.grant()
    else:
        migrations.downgrade(url, "0013")
        migrations.upgrade(url)
    await h.engine.dispose()
    backfilled = await stored_facets(h)
    assert backfilled == await raw_facets(h, watermark)
    assert sum(n for (f, _, _), (n, _) in backfilled.items() if f == "source") == watermark + 1
    assert (await watermarks(h))["facets"] == watermark
    watermark = await roll_up(h)
    assert await stored_facets(h) == await raw_facets(h, watermark)


async def _facets(h: Harness, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    r = await h.client.get("/admin/activity/facets", headers=headers, params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _pairs(body: dict[str, Any]) -> list[tuple[str, int]]:
    return [(i["value"], i["events"]) for i in body["items"]]


async def test_endpoint_order_prefix_limit_and_record(h: Harness) -> None:
    await _seed(h)
    await post_events(h, "lms", [event(T0, actor_id="50%_off", tenant_id="t_1")])
    watermark = await roll_up(h)
    auditor = await h.auth("audrey", role="auditor")

    body = await _facets(h, auditor, field="actor", prefix="50%")
    assert body["watermark"] == watermark and body["field"] == "actor"
    # Most events first, then by value; % is a plain character, not "anything".
    assert _pairs(body) == [("50%_off", 4), ("50%xoff", 1)]
    assert body["items"][0]["actor_type"] == "user"
    assert body["items"][0]["last_seen"].startswith("2026-11-02T09:00:00")
    assert _pairs(await _facets(h, auditor, field="actor", prefix="50%_")) == [("50%_off", 4)]
    assert _pairs(await _facets(h, auditor, field="tenant_id", prefix="t_")) == [("t_1", 4)]
    # Case-sensitive, and non-ASCII prefixes are exact too.
    assert _pairs(await _facets(h, auditor, field="actor", prefix="b")) == [("bob", 2)]
    assert _pairs(await _facets(h, auditor, field="tenant_id", prefix="ü")) == [("ünï", 1)]
    assert _pairs(await _facets(h, auditor, field="action", prefix="exam.grade_")) == [
        ("exam.grade_x", 2)
    ]
    assert _pairs(await _facets(h, auditor, field="action", prefix="nothing")) == []

    svc = [i for i in (await _facets(h, auditor, field="actor", prefix="svc"))["items"]]
    assert {(i["actor_type"], i["events"]) for i in svc} == {("service", 1), ("user", 1)}
    sources = await _facets(h, auditor, field="source")
    pairs = _pairs(sources)
    assert {"lms": 10, "hr-portal": 1}.items() <= dict(pairs).items()
    assert "audit-service" in dict(pairs)  # the service's own events (logins, views)
    assert pairs == sorted(pairs, key=lambda p: (-p[1], p[0]))
    assert all(i["actor_type"] is None for i in sources["items"])
    tenants = await _facets(h, auditor, field="tenant_id", limit=2)
    assert _pairs(tenants) == [("t_1", 4), ("t%1", 1)]  # ties by value: "%" < "x" < "ü"

    modules = await _facets(h, auditor, field="module", prefix="")
    assert ("exam", 10) in _pairs(modules)

    recorded = await h.last_event()
    assert (recorded.action, recorded.module, recorded.outcome) == (
        "stats.viewed",
        "stats",
        "success",
    )
    assert recorded.event_metadata["endpoint"] == "facets"
    assert recorded.event_metadata["filters"] == {"field": "module", "prefix": ""}


async def test_facets_route_is_not_an_event_id_and_permissions(h: Harness) -> None:
    await _seed(h)
    await roll_up(h)
    admin = await h.auth()
    assert (await _facets(h, admin, field="module"))["items"]
    event_id = (await h.last_event()).id
    r = await h.client.get(f"/admin/activity/{event_id}", headers=admin)
    assert r.status_code == 200 and r.json()["id"] == event_id

    user = await h.auth("ursula", role="user")
    r = await h.client.get("/admin/activity/facets", headers=user, params={"field": "actor"})
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("application/problem+json")
    r = await h.client.get("/admin/activity/facets", params={"field": "actor"})
    assert r.status_code == 401


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"field": "ip"}, "field"),
        ({}, "field"),
        ({"field": "actor", "limit": 101}, "limit"),
        ({"field": "actor", "limit": 0}, "limit"),
        ({"field": "actor", "prefix": "x" * 201}, "prefix"),
        ({"field": "actor", "prefix": "a\x00"}, "prefix"),
        ({"field": "actor", "since": "2026-11-02T00:00:00Z"}, "since"),
    ],
)
async def test_bad_input_is_a_422_problem(h: Harness, params: dict[str, Any], loc: str) -> None:
    admin = await h.auth()
    r = await h.client.get("/admin/activity/facets", headers=admin, params=params)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert [e["loc"][-1] for e in r.json()["errors"]] == [loc]
    assert (await h.last_event()).outcome == "failure"


def test_prefix_end_is_the_least_string_after_the_prefix() -> None:
    assert prefix_end("ab") == "ac"
    assert prefix_end("a%") == "a&"
    assert prefix_end("a\U0010ffff") == "b"
    assert prefix_end("\U0010ffff") is None
    assert prefix_end("a\ud7ff") == "a\ue000"
    values = ["a", "a%", "a%\U0010ffff\U0010ffff", "a&", "b", "a\U0001f600", "aa"]
    assert sorted(v for v in values if "a%" <= v < "a&") == ["a%", "a%\U0010ffff\U0010ffff"]
    assert Counter(v.startswith("a") for v in values if "a" <= v < (prefix_end("a") or "")) == {
        True: 6
    }
