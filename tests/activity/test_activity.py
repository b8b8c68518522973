"""GET /admin/activity and /admin/activity/{id}: who may look, every filter, paging, errors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from audit_service.audit_log.context import Actor, system_event
from audit_service.audit_log.models import AuditEvent
from audit_service.audit_log.repository import insert_events
from audit_service.kit.net import ip_key, parse_ip
from tests.conftest import Harness

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
# Seeded events are from 2024; the harness's own events (login, activity.viewed) are "now".
# Filters that the harness's events could also match are confined to the seeded window.
WINDOW = {"until": "2024-06-01T00:00:00Z"}
ALL = ["g", "f", "e", "d", "c", "b", "a"]  # newest first; f and g tie, g has the higher id

# key: (action, module, hours after T0, actor_id, actor_name, outcome, source, tenant, ip,
#       description, target_type, target_id)
SEED: dict[str, tuple[Any, ...]] = {
    "a": (
        "auth.login",
        "auth",
        0,
        "u1",
        "alice",
        "success",
        "audit-service",
        "t1",
        "10.1.2.3",
        "Login from office",
        "user",
        "1",
    ),
    "b": (
        "auth.logout",
        "auth",
        1,
        "u2",
        "bob",
        "success",
        "lms",
        "t2",
        "10.1.200.9",
        "Paid 50% of invoice",
        "course",
        "7",
    ),
    "c": (
        "exam.submitted",
        "exams",
        2,
        "42",
        "carol",
        "failure",
        "lms",
        "t1",
        "10.2.0.1",
        "Paid 500 dollars",
        "exam",
        "7",
    ),
    "d": (
        "user.created",
        "users",
        3,
        "u1",
        "alice",
        "denied",
        "audit-service",
        None,
        "2001:db8::1",
        "a_b test",
        "user",
        "2",
    ),
    "e": (
        "user.deleted",
        "users",
        4,
        "alice",
        "dave",
        "error",
        "audit-service",
        None,
        "2001:db8::ffff:1",
        "axb test",
        "user",
        "3",
    ),
    "f": (
        "system.backup",
        "system",
        5,
        None,
        None,
        "success",
        "audit-service",
        None,
        "2001:db8:1::1",
        'He said "it\'s" C:\\path\\file',
        None,
        None,
    ),
    "g": (
        "auth.login",
        "auth",
        5,
        "u3",
        "erin",
        "success",
        "audit-service",
        None,
        "192.168.0.1",
        "LOGIN FROM HOME via 10/8 net",
        "user",
        "4",
    ),
}


def event_row(
    action: str,
    module: str,
    *,
    at: datetime,
    actor_id: str | None = None,
    actor_name: str | None = None,
    outcome: str = "success",
    source: str = "audit-service",
    tenant_id: str | None = None,
    ip: str | None = None,
    description: str = "",
    target_type: str | None = None,
    target_id: str | None = None,
    **metadata: Any,
) -> dict[str, Any]:
    actor = (
        Actor(type="user", id=actor_id, name=actor_name, role="user")
        if actor_id or actor_name
        else Actor(type="system", id=None, name=None)
    )
    row = system_event(
        action,
        module,
        description,
        actor=actor,
        outcome=outcome,
        target_type=target_type,
        target_id=target_id,
        **metadata,
    )
    row.update(occurred_at=at, source=source, tenant_id=tenant_id)
    if ip is not None:
        address = parse_ip(ip)
        row.update(ip=str(address), ip_bytes=ip_key(address))
    return row


async def insert_one_by_one(h: Harness, rows: list[dict[str, Any]]) -> list[int]:
    """Insert in order (one statement each, so ids follow the list) and return the ids."""
    async with h.app.state.sessionmaker() as session:
        for row in rows:
            await insert_events(session, [row])
        await session.commit()
        ids = (
            await session.scalars(
                select(AuditEvent.id)
                .where(AuditEvent.event_id.in_([r["event_id"] for r in rows]))
                .order_by(AuditEvent.id)
            )
        ).all()
    assert len(ids) == len(rows)
    return list(ids)


@dataclass
class Seeded:
    ids: dict[str, int]
    keys: dict[str, str]  # event_id (text) -> key


@pytest.fixture
async def seeded(h: Harness) -> Seeded:
    rows = {}
    for key, (
        action,
        module,
        hours,
        actor_id,
        actor_name,
        outcome,
        source,
        tenant,
        ip,
        description,
        target_type,
        target_id,
    ) in SEED.items():
        rows[key] = event_row(
            action,
            module,
            at=T0 + timedelta(hours=hours),
            actor_id=actor_id,
            actor_name=actor_name,
            outcome=outcome,
            source=source,
            tenant_id=tenant,
            ip=ip,
            description=description,
            target_type=target_type,
            target_id=target_id,
            seed=key,
        )
    ids = await insert_one_by_one(h, list(rows.values()))
    return Seeded(
        ids=dict(zip(rows, ids, strict=True)), keys={str(r["event_id"]): k for k, r in rows.items()}
    )


async def listing(h: Harness, headers: dict[str, str], params: Any) -> dict[str, Any]:
    r = await h.client.get("/admin/activity", headers=headers, params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def found(h: Harness, headers: dict[str, str], seeded: Seeded, params: Any) -> list[str]:
    """The keys of the seeded events a query returns, in order (others show as their action)."""
    body = await listing(h, headers, params)
    keys = [seeded.keys.get(item["event_id"], "other:" + item["action"]) for item in body["items"]]
    assert body["total"] == len(keys), body
    return keys


def windowed(params: dict[str, Any] | list[tuple[str, str]]) -> list[tuple[str, str]]:
    pairs = list(params.items()) if isinstance(params, dict) else list(params)
    return [*pairs, *WINDOW.items()]


# --- who may look ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/admin/activity", "/admin/activity/1"])
async def test_anonymous_is_401_and_recorded_denied(h: Harness, path: str) -> None:
    r = await h.client.get(path)
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["www-authenticate"] == "Bearer"
    e = await h.last_event()
    assert (e.action, e.module, e.outcome, e.status_code, e.actor_type) == (
        "activity.viewed",
        "activity",
        "denied",
        401,
        "anonymous",
    )
    assert e.request_id == r.headers["x-request-id"]


@pytest.mark.parametrize("path", ["/admin/activity", "/admin/activity/1"])
async def test_user_role_is_403_and_recorded_denied(h: Harness, path: str) -> None:
    headers = await h.auth("uma", role="user")
    r = await h.client.get(path, headers=headers)
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 403
    e = await h.last_event()
    assert (e.action, e.outcome, e.status_code, e.actor_name, e.actor_role) == (
        "activity.viewed",
        "denied",
        403,
        "uma",
        "user",
    )
    assert "items" not in r.text


@pytest.mark.parametrize("role", ["auditor", "admin"])
async def test_auditor_and_admin_may_look(h: Harness, seeded: Seeded, role: str) -> None:
    headers = await h.auth() if role == "admin" else await h.auth("audrey", role="auditor")
    body = await listing(h, headers, WINDOW)
    assert [seeded.keys[i["event_id"]] for i in body["items"]] == ALL
    assert (body["page"], body["page_size"], body["total"], body["total_is_estimate"]) == (
        1,
        20,
        7,
        False,
    )
    one = await h.client.get(f"/admin/activity/{seeded.ids['a']}", headers=headers)
    assert one.status_code == 200 and one.json()["id"] == seeded.ids["a"]
    e = await h.last_event()
    assert (e.action, e.outcome, e.actor_role) == ("activity.viewed", "success", role)


# --- filters ---------------------------------------------------------------------------------


FILTER_CASES: list[tuple[str, list[tuple[str, str]], list[str]]] = [
    ("no filter", [], ALL),
    ("actor by name", [("actor", "bob")], ["b"]),
    ("actor by id", [("actor", "u1")], ["d", "a"]),
    ("actor by id or name", [("actor", "alice")], ["e", "d", "a"]),
    ("actor numeric id", [("actor", "42")], ["c"]),
    ("actor is exact", [("actor", "ali")], []),
    ("actor is case-sensitive", [("actor", "ALICE")], []),
    ("one action", [("action", "auth.login")], ["g", "a"]),
    ("two actions", [("action", "auth.login"), ("action", "auth.logout")], ["g", "b", "a"]),
    ("action absent", [("action", "auth.nothing")], []),
    ("action is exact", [("action", "auth")], []),
    ("module", [("module", "users")], ["e", "d"]),
    ("outcome success", [("outcome", "success")], ["g", "f", "b", "a"]),
    ("outcome failure", [("outcome", "failure")], ["c"]),
    ("outcome denied", [("outcome", "denied")], ["d"]),
    ("outcome error", [("outcome", "error")], ["e"]),
    ("source", [("source", "lms")], ["c", "b"]),
    ("tenant", [("tenant_id", "t1")], ["c", "a"]),
    ("tenant absent", [("tenant_id", "t9")], []),
    ("ipv4 exact", [("ip", "10.1.2.3")], ["a"]),
    ("ipv4-mapped ipv6 matches ipv4", [("ip", "::ffff:10.1.2.3")], ["a"]),
    ("ipv6 exact", [("ip", "2001:db8::1")], ["d"]),
    ("ipv6 exact, long form", [("ip", "2001:0db8:0000:0000:0000:0000:0000:0001")], ["d"]),
    ("ipv6 exact, upper case", [("ip", "2001:DB8::FFFF:1")], ["e"]),
    ("ip no match", [("ip", "10.1.2.4")], []),
    ("ipv4 /16", [("ip", "10.1.0.0/16")], ["b", "a"]),
    ("ipv4 /16 with host bits", [("ip", "10.1.99.99/16")], ["b", "a"]),
    ("ipv4 /8", [("ip", "10.0.0.0/8")], ["c", "b", "a"]),
    ("ipv4 /32", [("ip", "10.1.200.9/32")], ["b"]),
    ("ipv6 /64", [("ip", "2001:db8::/64")], ["e", "d"]),
    ("ipv6 /48 excludes 2001:db8:1::", [("ip", "2001:db8::/48")], ["e", "d"]),
    ("ipv6 /32", [("ip", "2001:db8::/32")], ["f", "e", "d"]),
    ("ipv4 /0 is every ipv4", [("ip", "0.0.0.0/0")], ["g", "c", "b", "a"]),
    # IPv4 rows are stored mapped into ::ffff:0:0/96: an IPv6 network must not reach them...
    ("ipv6 /0 is every ipv6 address only", [("ip", "::/0")], ["f", "e", "d"]),
    ("ipv6 ::/8 skips the mapped ipv4 block", [("ip", "::/8")], []),
    # ...unless it is IPv4 written as IPv6 (inside the mapped block).
    ("ipv4-mapped /96 is every ipv4", [("ip", "::ffff:0:0/96")], ["g", "c", "b", "a"]),
    ("ipv4-mapped /104", [("ip", "::ffff:10.0.0.0/104")], ["c", "b", "a"]),
    ("q case-insensitive", [("q", "login")], ["g", "a"]),
    ("q mixed case", [("q", "LoGiN fRoM")], ["g", "a"]),
    ("q percent is literal", [("q", "50%")], ["b"]),
    ("q lone percent", [("q", "%")], ["b"]),
    ("q 500 still found", [("q", "500")], ["c"]),
    ("q underscore is literal", [("q", "a_b")], ["d"]),
    ("q lone underscore", [("q", "_")], ["d"]),
    ("q double quotes", [("q", '"it\'s"')], ["f"]),
    ("q single quote", [("q", "'")], ["f"]),
    ("q backslash", [("q", "\\")], ["f"]),
    ("q backslash path", [("q", "c:\\PATH\\")], ["f"]),
    ("q slash (the escape character)", [("q", "10/8")], ["g"]),
    ("q no match", [("q", "nothing like this")], []),
    ("target type", [("target_type", "user")], ["g", "e", "d", "a"]),
    ("target id", [("target_id", "7")], ["c", "b"]),
    ("target type and id", [("target_type", "course"), ("target_id", "7")], ["b"]),
    ("actor and module", [("actor", "alice"), ("module", "users")], ["e", "d"]),
    (
        "actor, module, outcome",
        [("actor", "alice"), ("module", "users"), ("outcome", "error")],
        ["e"],
    ),
    ("cidr, source and q", [("ip", "10.0.0.0/8"), ("source", "lms"), ("q", "PAID")], ["c", "b"]),
    ("q and narrower cidr", [("q", "paid"), ("ip", "10.1.0.0/16")], ["b"]),
    (
        "actions and tenant",
        [("action", "auth.login"), ("action", "exam.submitted"), ("tenant_id", "t1")],
        ["c", "a"],
    ),
    ("contradiction", [("actor", "bob"), ("module", "users")], []),
]


@pytest.mark.parametrize(
    ("params", "expected"), [c[1:] for c in FILTER_CASES], ids=[c[0] for c in FILTER_CASES]
)
async def test_filters(
    h: Harness, seeded: Seeded, params: list[tuple[str, str]], expected: list[str]
) -> None:
    headers = await h.auth()
    assert await found(h, headers, seeded, windowed(params)) == expected


TIME_CASES: list[tuple[dict[str, str], list[str]]] = [
    # T0 = 10:00Z; events at 10, 11, 12, 13, 14, 15, 15 UTC.
    ({"since": "2024-05-01T13:00:00+02:00"}, ["g", "f", "e", "d", "c", "b"]),  # 11:00Z inclusive
    ({"since": "2024-05-01T11:00:00.000001Z"}, ["g", "f", "e", "d", "c"]),
    ({"until": "2024-05-01T16:00:00+02:00"}, ["d", "c", "b", "a"]),  # 14:00Z exclusive
    ({"since": "2024-05-01T13:00:00+02:00", "until": "2024-05-01T16:00:00+02:00"}, ["d", "c", "b"]),
    ({"since": "2024-05-01T09:00:00-05:00"}, ["g", "f", "e"]),  # 14:00Z
    ({"since": "2024-05-01T15:00:00Z", "until": "2024-05-01T15:00:00Z"}, []),
    ({"since": "2024-05-01T14:59:59.999999Z", "until": "2024-05-01T15:00:00.000001Z"}, ["g", "f"]),
    ({"until": "2024-05-01T10:00:00Z"}, []),
    ({"since": "2024-05-01T10:00:00Z", "until": "2024-05-01T10:00:00.000001Z"}, ["a"]),
]


@pytest.mark.parametrize(("params", "expected"), TIME_CASES)
async def test_since_inclusive_until_exclusive_with_offsets(
    h: Harness, seeded: Seeded, params: dict[str, str], expected: list[str]
) -> None:
    headers = await h.auth()
    # `since` alone would also match the harness's own (current) events: confine to 2024.
    query = {**params} if "until" in params else {**params, **WINDOW}
    assert await found(h, headers, seeded, query) == expected


async def test_since_alone_reaches_the_present(h: Harness, seeded: Seeded) -> None:
    headers = await h.auth()
    body = await listing(h, headers, {"since": "2024-05-01T14:30:00Z", "page_size": 100})
    keys = [seeded.keys.get(i["event_id"]) for i in body["items"]]
    # The harness's own login (now) comes first; then the seeded 15:00Z pair.
    assert keys[-2:] == ["g", "f"]
    assert [i["action"] for i in body["items"][:-2]] == ["auth.login", "user.created"]


async def test_actor_without_window_matches_only_that_actor(h: Harness, seeded: Seeded) -> None:
    headers = await h.auth()
    assert await found(h, headers, seeded, {"actor": "alice"}) == ["e", "d", "a"]
    # And the admin's own events are found by name, now including the two views just made.
    body = await listing(h, headers, {"actor": "admin", "page_size": 100})
    assert [i["action"] for i in body["items"]] == ["activity.viewed", "auth.login"]


# --- order and pages -------------------------------------------------------------------------


@pytest.fixture
async def bulk(h: Harness) -> list[int]:
    """45 events of tenant `bulk`, three at each of 15 instants not in id order; returns the
    ids in the expected order (occurred_at desc, then id desc)."""
    rows = [
        event_row(
            "bulk.made",
            "bulk",
            at=T0 + timedelta(minutes=(i * 7) % 15),
            tenant_id="bulk",
            target_type="n",
            target_id=str(i),
        )
        for i in range(45)
    ]
    ids = await insert_one_by_one(h, rows)
    minute = {ids[i]: (i * 7) % 15 for i in range(45)}
    return sorted(ids, key=lambda id_: (minute[id_], id_), reverse=True)


@pytest.mark.parametrize("page_size", [10, 20, 50, 100])
async def test_pages_cover_everything_once_in_order(
    h: Harness, bulk: list[int], page_size: int
) -> None:
    headers = await h.auth()
    seen: list[int] = []
    pages = -(-45 // page_size)
    for page in range(1, pages + 1):
        body = await listing(
            h, headers, {"tenant_id": "bulk", "page": page, "page_size": page_size}
        )
        assert (body["page"], body["page_size"], body["total"]) == (page, page_size, 45)
        expected_len = page_size if page < pages else 45 - page_size * (pages - 1)
        assert len(body["items"]) == expected_len
        seen += [i["id"] for i in body["items"]]
    assert seen == bulk
    beyond = await listing(
        h, headers, {"tenant_id": "bulk", "page": pages + 1, "page_size": page_size}
    )
    assert beyond["items"] == [] and beyond["total"] == 45 and beyond["page"] == pages + 1
    # The deepest page OFFSET paging allows (page * page_size <= 10,000) is still empty...
    deepest = 10_000 // page_size
    far = await listing(h, headers, {"tenant_id": "bulk", "page": deepest, "page_size": page_size})
    assert far["items"] == [] and far["total"] == 45
    # ...and one past it is refused, not a slow scan (deeper pages go by cursor).
    r = await h.client.get(
        "/admin/activity",
        headers=headers,
        params={"tenant_id": "bulk", "page": deepest + 1, "page_size": page_size},
    )
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"


async def test_newest_first_ties_by_id_desc(h: Harness, bulk: list[int]) -> None:
    headers = await h.auth()
    body = await listing(h, headers, {"tenant_id": "bulk", "page_size": 10})
    items = body["items"]
    keys = [(datetime.fromisoformat(i["occurred_at"]), i["id"]) for i in items]
    assert keys == sorted(keys, reverse=True)
    # The first three share the newest instant (14 minutes after T0).
    assert len({i["occurred_at"] for i in items[:3]}) == 1
    assert datetime.fromisoformat(items[0]["occurred_at"]) == T0 + timedelta(minutes=14)
    assert items[0]["id"] > items[1]["id"] > items[2]["id"]
    assert [i["id"] for i in items] == bulk[:10]


async def test_default_page_size_is_20(h: Harness, bulk: list[int]) -> None:
    headers = await h.auth()
    body = await listing(h, headers, {"tenant_id": "bulk"})
    assert (body["page"], body["page_size"], body["total"]) == (1, 20, 45)
    assert [i["id"] for i in body["items"]] == bulk[:20]


# --- what viewing records --------------------------------------------------------------------


async def test_viewing_records_the_filters_and_the_page(h: Harness, seeded: Seeded) -> None:
    headers = await h.auth()
    params: list[tuple[str, Any]] = [
        ("actor", "alice"),
        ("action", "user.created"),
        ("action", "user.deleted"),
        ("ip", "2001:db8::/64"),
        ("since", "2024-05-01T13:00:00+02:00"),
        ("q", "test"),
        ("page", "1"),
        ("page_size", "10"),
    ]
    r = await h.client.get("/admin/activity", headers=headers, params=params)
    assert r.status_code == 200
    assert [seeded.keys[i["event_id"]] for i in r.json()["items"]] == ["e", "d"]
    e = await h.last_event()
    assert (e.action, e.module, e.outcome, e.status_code, e.actor_name, e.method, e.path) == (
        "activity.viewed",
        "activity",
        "success",
        200,
        "admin",
        "GET",
        "/admin/activity",
    )
    assert e.request_id == r.headers["x-request-id"]
    filters = e.event_metadata["filters"]
    assert filters == {
        "actor": "alice",
        "action": ["user.created", "user.deleted"],
        "ip": "2001:db8::/64",
        "since": "2024-05-01T13:00:00+02:00",
        "q": "test",
    }
    assert e.event_metadata["page"] == 1 and e.event_metadata["page_size"] == 10
    assert e.event_metadata["total"] == 2 and e.event_metadata["returned"] == 2


async def test_viewing_without_filters_records_empty_filters(h: Harness) -> None:
    headers = await h.auth()
    r = await h.client.get("/admin/activity", headers=headers, params={"page": 2, "page_size": 50})
    assert r.status_code == 200
    e = await h.last_event()
    assert e.event_metadata["filters"] == {}
    assert (e.event_metadata["page"], e.event_metadata["page_size"]) == (2, 50)


# --- one event -------------------------------------------------------------------------------


async def test_single_event_by_id(h: Harness, seeded: Seeded) -> None:
    headers = await h.auth("audrey", role="auditor")
    event_id = seeded.ids["b"]
    r = await h.client.get(f"/admin/activity/{event_id}", headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == event_id
    assert seeded.keys[body["event_id"]] == "b"
    assert (body["action"], body["module"], body["actor_id"], body["actor_name"]) == (
        "auth.logout",
        "auth",
        "u2",
        "bob",
    )
    assert (body["outcome"], body["source"], body["tenant_id"], body["ip"]) == (
        "success",
        "lms",
        "t2",
        "10.1.200.9",
    )
    assert (body["description"], body["target_type"], body["target_id"]) == (
        "Paid 50% of invoice",
        "course",
        "7",
    )
    assert datetime.fromisoformat(body["occurred_at"]) == T0 + timedelta(hours=1)
    assert body["metadata"] == {"seed": "b"}
    assert "ip_bytes" not in body
    e = await h.last_event()
    assert (e.action, e.outcome, e.target_type, e.target_id, e.actor_name) == (
        "activity.viewed",
        "success",
        "audit_event",
        str(event_id),
        "audrey",
    )


async def test_unknown_id_is_404_problem_and_recorded(h: Harness) -> None:
    headers = await h.auth()
    r = await h.client.get("/admin/activity/987654321", headers=headers)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == 404 and body["title"] == "Not Found"
    assert body["type"].endswith("/not-found")
    assert body["request_id"] == r.headers["x-request-id"]
    e = await h.last_event()
    assert (e.action, e.outcome, e.status_code, e.target_type, e.target_id) == (
        "activity.viewed",
        "failure",
        404,
        "audit_event",
        "987654321",
    )


@pytest.mark.parametrize("bad", ["0", "-1", "abc", str(2**63), "1.5"])
async def test_bad_id_is_422(h: Harness, bad: str) -> None:
    headers = await h.auth()
    r = await h.client.get(f"/admin/activity/{bad}", headers=headers)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert ["path", "event_id"] in [e["loc"] for e in r.json()["errors"]]


# --- bad input -------------------------------------------------------------------------------


BAD_INPUT: list[tuple[str, list[tuple[str, str]], str | tuple[str, ...]]] = [
    ("page_size 7", [("page_size", "7")], "page_size"),
    ("page_size 0", [("page_size", "0")], "page_size"),
    ("page_size text", [("page_size", "ten")], "page_size"),
    ("page 0", [("page", "0")], "page"),
    ("page negative", [("page", "-3")], "page"),
    # Too deep for OFFSET paging: page * page_size is what is refused, so either may be named.
    ("page 10**9", [("page", str(10**9))], ("page", "page_size")),
    (
        "page 10**9, page_size 10",
        [("page", str(10**9)), ("page_size", "10")],
        ("page", "page_size"),
    ),
    ("page 1001, page_size 10", [("page", "1001"), ("page_size", "10")], ("page", "page_size")),
    ("naive since", [("since", "2024-05-01T10:00:00")], "since"),
    ("naive until", [("until", "2024-05-01")], "until"),
    ("since garbage", [("since", "yesterday")], "since"),
    ("ip bad prefix", [("ip", "10.0.0.0/99")], "ip"),
    ("ip not an ip", [("ip", "not-an-ip")], "ip"),
    ("ip v6 bad prefix", [("ip", "2001:db8::/129")], "ip"),
    ("ip empty", [("ip", "")], "ip"),
    ("unknown outcome", [("outcome", "maybe")], "outcome"),
    ("unknown parameter", [("acter", "alice")], "acter"),
    ("action too long", [("action", "a" * 101)], "action"),
    ("second action too long", [("action", "auth.login"), ("action", "b" * 101)], "action"),
    ("empty action", [("action", "")], "action"),
    ("q empty", [("q", "")], "q"),
    ("q too long", [("q", "x" * 201)], "q"),
]


@pytest.mark.parametrize(
    ("params", "field"), [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT]
)
async def test_bad_input_is_422_naming_the_field(
    h: Harness, params: list[tuple[str, Any]], field: str | tuple[str, ...]
) -> None:
    headers = await h.auth()
    r = await h.client.get("/admin/activity", headers=headers, params=params)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == 422 and body["title"] == "Validation Error"
    assert body["request_id"] == r.headers["x-request-id"]
    locs = [e["loc"] for e in body["errors"]]
    fields = (field,) if isinstance(field, str) else field
    assert any(loc[:1] == ["query"] and len(loc) > 1 and loc[1] in fields for loc in locs), locs
    e = await h.last_event()
    assert (e.action, e.outcome, e.status_code) == ("activity.viewed", "failure", 422)


async def test_since_after_until_is_422(h: Harness) -> None:
    headers = await h.auth()
    r = await h.client.get(
        "/admin/activity",
        headers=headers,
        params={"since": "2024-05-02T00:00:00Z", "until": "2024-05-01T00:00:00Z"},
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["request_id"] == r.headers["x-request-id"]
    assert ["query", "until"] in [e["loc"] for e in body["errors"]], body
    assert "since" in body["errors"][0]["msg"]
    # Equal instants in different offsets are not "after".
    ok = await h.client.get(
        "/admin/activity",
        headers=headers,
        params={"since": "2024-05-01T02:00:00+02:00", "until": "2024-05-01T00:00:00Z"},
    )
    assert ok.status_code == 200 and ok.json()["total"] == 0


async def test_rejected_input_is_not_echoed(h: Harness) -> None:
    headers = await h.auth()
    r = await h.client.get(
        "/admin/activity", headers=headers, params={"ip": "<script>alert(1)</script>"}
    )
    assert r.status_code == 422
    assert "<script>" not in r.text


WEIRD: list[tuple[str, str]] = [
    ("q", "\x00"),
    ("actor", "a\x00b"),
    ("action", "x\x00"),
    ("target_id", "\x00"),
    ("since", "9999-12-31T23:59:59-05:00"),
    ("until", "0001-01-01T00:00:00+01:00"),
    ("since", "0001-01-01T00:00:00Z"),
    ("until", "9999-12-31T23:59:59.999999Z"),
    ("ip", "fe80::1%eth0"),
    ("ip", "::ffff:0.0.0.0/96"),
    ("q", "é" * 200),
    ("q", "\U0001f600"),
    ("page", "100"),  # with page_size 100: the deepest OFFSET page
]


@pytest.mark.parametrize(("name", "value"), WEIRD)
async def test_odd_input_never_500(h: Harness, name: str, value: str) -> None:
    headers = await h.auth()
    r = await h.client.get(
        "/admin/activity", headers=headers, params={name: value, "page_size": 100}
    )
    assert r.status_code in (200, 422), r.text
    assert r.status_code != 500
    if r.status_code == 422:
        assert r.headers["content-type"] == "application/problem+json"
        assert any(e["loc"][:2] == ["query", name] for e in r.json()["errors"])
