"""/admin/stats over a known, back-dated week (both dialects): the figures, the filters, the
recorded `stats.viewed`, permissions and bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from tests.conftest import Harness
from tests.stats.helpers import event, post_events, roll_up

MONDAY = datetime(2026, 11, 2, tzinfo=UTC)
WEEK = {"since": MONDAY.isoformat(), "until": (MONDAY + timedelta(days=7)).isoformat()}
A = "198.51.100.7"


async def _seed(h: Harness) -> None:
    t = MONDAY
    await post_events(
        h,
        "lms",
        [
            *[event(t + timedelta(hours=1), tenant_id="t1", ip=A) for _ in range(3)],
            event(
                t + timedelta(days=1, hours=2),
                action="exam.graded",
                actor_id="u2",
                outcome="failure",
                tenant_id="t1",
            ),
            *[event(t + timedelta(hours=2), action="auth.login", tenant_id="t1", ip=A)] * 2,
            event(
                t + timedelta(hours=2, minutes=10),
                action="auth.login",
                actor_id="u3",
                outcome="failure",
                tenant_id="t1",
                ip=A,
            ),
            # The week before: one event.
            event(t - timedelta(days=7) + timedelta(hours=1), tenant_id="t1"),
        ],
    )
    await post_events(
        h,
        "hr-portal",
        [
            event(
                t + timedelta(days=3, minutes=5),
                action="user.updated",
                actor_id="svc-9",
                actor_type="service",
                outcome="denied",
                tenant_id="t2",
            )
        ]
        * 2,
    )
    await roll_up(h)


@pytest.fixture
async def seeded(h: Harness) -> Harness:
    await _seed(h)
    return h


async def _get(h: Harness, path: str, headers: dict[str, str], **params: Any) -> Any:
    r = await h.client.get(f"/admin/stats/{path}", headers=headers, params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def test_summary_figures_filters_and_comparison(seeded: Harness) -> None:
    h = seeded
    admin = await h.auth()
    body = await _get(h, "summary", admin, **WEEK, compare="previous_week")
    assert body["figures"] == {
        "events": 9,
        "distinct_actors": 4,
        "distinct_users": 3,
        "logins_ok": 2,
        "logins_failed": 1,
        "login_failure_rate": pytest.approx(1 / 3, abs=1e-6),
        "failures": 2,
        "denied": 2,
        "errors": 0,
    }
    comparison = body["comparison"]
    assert comparison["figures"]["events"] == 1
    assert comparison["delta"]["events"] == {"abs": 8, "pct": 800.0}
    assert comparison["delta"]["logins_ok"] == {"abs": 2, "pct": None}
    assert comparison["period"]["since"].startswith("2026-10-26T00:00:00")
    same = await _get(h, "summary", admin, **WEEK, compare="previous_period")
    assert same["comparison"]["figures"] == comparison["figures"]
    month = await _get(h, "summary", admin, **WEEK, compare="previous_month")
    assert month["comparison"]["period"]["since"] == "2026-10-02T00:00:00Z"
    assert month["comparison"]["period"]["until"] == "2026-10-09T00:00:00Z"
    assert month["comparison"]["figures"]["events"] == 0
    assert month["comparison"]["delta"]["events"] == {"abs": 9, "pct": None}
    for params, events in (
        ({"module": "exam"}, 4),
        ({"outcome": "denied"}, 2),
        ({"actor": "u1"}, 5),
        ({"source": "hr-portal"}, 2),
        ({"action": ["auth.login", "exam.graded"]}, 4),
        ({"tenant_id": "t2"}, 2),
        ({"tenant_id": "nobody"}, 0),
    ):
        figures = (await _get(h, "summary", admin, **WEEK, **params))["figures"]
        assert figures["events"] == events, params
    u1 = (await _get(h, "summary", admin, **WEEK, actor="u1"))["figures"]
    assert (u1["distinct_actors"], u1["logins_ok"], u1["logins_failed"]) == (1, 2, 0)
    viewed = await h.last_event()
    assert (viewed.action, viewed.module, viewed.outcome) == ("stats.viewed", "stats", "success")
    assert viewed.event_metadata["endpoint"] == "summary"
    assert viewed.event_metadata["filters"]["actor"] == "u1"


async def test_timeseries_gap_filled_and_grouped(seeded: Harness) -> None:
    h = seeded
    admin = await h.auth()
    body = await _get(h, "timeseries", admin, **WEEK, interval="day")
    assert [b["count"] for b in body["buckets"]] == [6, 1, 0, 2, 0, 0, 0]
    assert body["buckets"][0]["start"] == "2026-11-02T00:00:00Z"
    assert body["buckets"][-1]["end"] == "2026-11-09T00:00:00Z"
    grouped = await _get(h, "timeseries", admin, **WEEK, interval="day", group_by="module")
    assert grouped["buckets"][0]["groups"] == {"auth": 3, "exam": 3}
    assert grouped["buckets"][2]["groups"] == {}
    outcomes = await _get(h, "timeseries", admin, **WEEK, interval="week", group_by="outcome")
    assert outcomes["buckets"] == [
        {
            "start": "2026-11-02T00:00:00Z",
            "end": "2026-11-09T00:00:00Z",
            "count": 9,
            "groups": {"denied": 2, "failure": 2, "success": 5},
        }
    ]
    empty = await _get(h, "timeseries", admin, since=WEEK["since"], until=WEEK["since"])
    assert empty["buckets"] == []
    hours = await _get(
        h, "timeseries", admin, since=WEEK["since"], until="2026-11-02T03:00:00Z", interval="hour"
    )
    assert [b["count"] for b in hours["buckets"]] == [0, 3, 3]


async def test_top_lists_with_share_and_change(seeded: Harness) -> None:
    h = seeded
    admin = await h.auth()
    actors = await _get(h, "top", admin, **WEEK, dimension="actor", limit=2)
    assert actors["total"] == 9
    assert actors["items"] == [
        {
            "key": "u1",
            "actor_type": "user",
            "count": 5,
            "share": pytest.approx(5 / 9, abs=1e-6),
            "previous": 1,
            "change_abs": 4,
            "change_pct": 400.0,
        },
        {
            "key": "svc-9",
            "actor_type": "service",
            "count": 2,
            "share": pytest.approx(2 / 9, abs=1e-6),
            "previous": 0,
            "change_abs": 2,
            "change_pct": None,
        },
    ]
    tenants = await _get(h, "top", admin, **WEEK, dimension="tenant")
    assert [(i["key"], i["count"]) for i in tenants["items"]] == [("t1", 7), ("t2", 2)]
    ips = await _get(h, "top", admin, **WEEK, dimension="ip", outcome="success")
    assert [(i["key"], i["count"], i["share"]) for i in ips["items"]] == [(A, 5, 1.0)]
    actions = await _get(h, "top", admin, **WEEK, dimension="action", module="auth")
    assert [(i["key"], i["count"]) for i in actions["items"]] == [("auth.login", 3)]


async def test_peak_hours_and_freshness(seeded: Harness) -> None:
    h = seeded
    admin = await h.auth()
    body = await _get(h, "peak-hours", admin, **WEEK)
    assert len(body["heatmap"]) == 7 and all(len(row) == 24 for row in body["heatmap"])
    assert [(c["weekday"], c["hour"], c["count"]) for c in body["busiest"]] == [
        (0, 1, 3),
        (0, 2, 3),
        (3, 0, 2),
        (1, 2, 1),
    ]
    assert sum(map(sum, body["heatmap"])) == 9
    fresh = await _get(h, "freshness", admin)
    assert fresh["watermark"] == fresh["tree_size"] - 1 >= 9
    assert fresh["pending"] == 0
    assert fresh["updated_at"] is not None


async def test_auditor_may_look_a_user_may_not(h: Harness) -> None:
    auditor = await h.auth("audrey", role="auditor")
    r = await h.client.get("/admin/stats/summary", headers=auditor)
    assert r.status_code == 200, r.text
    assert r.json()["figures"]["events"] == 0  # nothing rolled up yet
    user = await h.auth("ursula", role="user")
    for path in ("summary", "timeseries", "top?dimension=action", "peak-hours", "freshness"):
        r = await h.client.get(f"/admin/stats/{path}", headers=user)
        assert r.status_code == 403, path
        assert r.headers["content-type"] == "application/problem+json"
    denied = await h.last_event()
    assert (denied.action, denied.outcome) == ("stats.viewed", "denied")
    r = await h.client.get("/admin/stats/summary")
    assert r.status_code == 401


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("timeseries", {"interval": "minute"}, "interval"),
        ("timeseries", {"group_by": "actor"}, "group_by"),
        ("top", {"dimension": "country"}, "dimension"),
        ("top", {}, "dimension"),
        ("top", {"dimension": "action", "limit": 101}, "limit"),
        ("top", {"dimension": "ip", "module": "exam"}, "module"),
        ("summary", {"tz": "Mars/Olympus_Mons"}, "tz"),
        ("summary", {"tz": "../../etc/passwd"}, "tz"),
        ("summary", {"since": "2026-11-03T00:00:00Z", "until": "2026-11-02T00:00:00Z"}, "until"),
        ("summary", {"since": "2026-11-02T10:07:00Z"}, "since"),
        ("summary", {"since": "1700000000"}, "since"),
        ("summary", {"since": "2026-11-02T10:00:00"}, "since"),
        ("summary", {"compare": "yesterday"}, "compare"),
        ("summary", {"colour": "red"}, "colour"),
        (
            "timeseries",
            {"interval": "hour", "since": "2010-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
            "interval",
        ),
        ("peak-hours", {"since": "0001-01-01T00:00:00Z"}, "since"),
        ("timeseries", {"until": "9999-12-31T23:45:00Z"}, "until"),
        ("summary", {"since": "1900-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "since"),
    ],
)
async def test_bad_input_is_a_422_problem(
    h: Harness, path: str, params: dict[str, Any], field: str
) -> None:
    admin = await h.auth()
    r = await h.client.get(f"/admin/stats/{path}", headers=admin, params=params)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert field in [e["loc"][-1] for e in r.json()["errors"]], r.json()


async def test_failed_logins_count_per_ip_under_the_attempted_name(h: Harness) -> None:
    admin = await h.auth()
    for _ in range(2):
        r = await h.client.post("/login", json={"username": "mallory", "password": "guess-1234"})
        assert r.status_code == 401
    await roll_up(h)
    async with h.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT actor_type, actor_key, logins_ok, logins_failed, n_failure "
                    "FROM stats_ip_bucket WHERE actor_key = 'name:mallory'"
                )
            )
        ).all()
    assert [tuple(r) for r in rows] == [("anonymous", "name:mallory", 0, 2, 2)]
    figures = (await _get(h, "summary", admin))["figures"]
    assert (figures["logins_failed"], figures["logins_ok"]) == (2, 1)  # admin's own login
    ips = await _get(h, "top", admin, dimension="ip", actor="name:mallory")
    assert [i["count"] for i in ips["items"]] == [2]
