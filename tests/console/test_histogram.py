"""The activity page's volume histogram (`/console/activity/histogram`): its bars count
exactly what `/admin/activity` counts for the same filters (both dialects; from the rollups
where they carry the filters, over the events otherwise, and both at once for a period off
the 15-minute grid), bars in the viewer's zone, bad input as a problem, and "not available"
instead of a slow page when counting runs out of time (Postgres)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import text

from audit_service.stats import service as stats_service
from tests.conftest import Harness, make_settings, start_harness
from tests.console.support import https_client, signed_in
from tests.stats.helpers import post_events, roll_up

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
JSON = {"Accept": "application/json"}


def _event(i: int, **fields: Any) -> dict[str, Any]:
    # 120 events, one every 53 minutes: about 4.4 days back from now.
    return {
        "action": ("exam.submitted", "exam.graded", "course.viewed")[i % 3],
        "actor_id": f"u{i % 4}",
        "actor_name": f"user {i % 4}",
        "outcome": ("success", "failure", "denied")[i % 3],
        "description": f"histogram event {i}" + (" URGENT" if i % 5 == 0 else ""),
        "target_type": "exam" if i % 2 else "course",
        "target_id": str(i % 3),
        "ip": f"10.0.{i % 2}.{i % 250}",
        "tenant_id": ("t1", "t2")[i % 2],
        "occurred_at": (NOW - timedelta(minutes=53 * i, seconds=i % 7)).isoformat(),
        **fields,
    }


async def _seed(h: Harness) -> None:
    await post_events(h, "lms", [_event(i) for i in range(120)])
    # Weeks back: a period with these needs day bars.
    old = [_event(i, occurred_at=(NOW - timedelta(days=3 * i + 5)).isoformat()) for i in range(8)]
    await post_events(h, "hr", old)
    await roll_up(h)


def _iso(moment: datetime) -> str:
    return moment.isoformat()


async def _total(h: Harness, headers: dict[str, str], params: list[tuple[str, str]]) -> int:
    # The API's total is exact within a 20 ms budget on Postgres; a busy test machine can
    # miss it (then it is an estimate): ask again.
    for _ in range(10):
        r = await h.client.get("/admin/activity", params=params, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        if not body["total_is_estimate"]:
            return int(body["total"])
    raise AssertionError(f"/admin/activity gave only estimates for {params}")


def _at(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


# (filters, where the counts come from)
CASES: list[tuple[list[tuple[str, str]], str]] = [
    ([("source", "lms")], "rollups"),
    (
        [
            ("source", "lms"),
            ("action", "exam.graded"),
            ("action", "course.viewed"),
            ("outcome", "failure"),
        ],
        "rollups",
    ),
    ([("tenant_id", "t2"), ("module", "exam")], "rollups"),
    ([("q", "urgent")], "events"),
    ([("ip", "10.0.1.0/24")], "events"),
    ([("actor", "user 2"), ("source", "lms")], "events"),
    ([("target_type", "exam"), ("target_id", "1")], "events"),
    # The excludes (the rollups cannot leave anything out): counted over the events.
    ([("source", "lms"), ("exclude_action", "exam.graded")], "events"),
    ([("source", "lms"), ("exclude_actor", "user 1"), ("exclude_ip", "10.0.1.0/24")], "events"),
    # Off the 15-minute grid at both ends: rollups inside, events at the edges.
    (
        [
            ("source", "lms"),
            ("since", _iso(NOW - timedelta(days=2, minutes=7, seconds=31, milliseconds=250))),
            ("until", _iso(NOW - timedelta(hours=5, minutes=3, seconds=2))),
        ],
        "rollups",
    ),
    # Two hours: minute bars, counted over the events.
    (
        [("source", "lms"), ("since", _iso(NOW - timedelta(hours=2))), ("until", _iso(NOW))],
        "events",
    ),
    # Within one minute: one bar.
    (
        [
            ("source", "lms"),
            ("since", _iso(NOW - timedelta(seconds=30))),
            ("until", _iso(NOW + timedelta(seconds=1))),
        ],
        "events",
    ),
    # Decades asked for: bars over the matching events' days, the first from 1990.
    (
        [
            ("source", "hr"),
            ("since", "1990-01-01T00:00:00+00:00"),
            ("until", _iso(NOW + timedelta(hours=1))),
        ],
        "rollups",
    ),
    # Weeks: day bars (local days of the viewer's zone, below).
    ([("source", "hr")], "rollups"),
]


async def test_bars_count_what_the_activity_api_counts(h: Harness) -> None:
    await _seed(h)
    headers = await h.auth()
    async with https_client(h) as client:
        await signed_in(client)
        for params, expected_source in CASES:
            await _check(h, client, headers, params, expected_source)


async def _check(
    h: Harness,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    params: list[tuple[str, str]],
    expected_source: str,
) -> None:
    r = await client.get("/console/activity/histogram", params=[*params, ("tz", "Asia/Kolkata")])
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    data = r.json()
    assert data["available"] is True and data["source"] == expected_source, params
    total = await _total(h, headers, params)
    assert total > 0
    assert data["total"] == sum(data["counts"]) == total
    n = len(data["counts"])
    assert 1 <= n <= stats_service.HISTOGRAM_BARS
    assert len(data["starts"]) == len(data["ends"]) == n
    assert all(a < b for a, b in zip(data["starts"], data["ends"], strict=True))
    assert all(b == a for a, b in zip(data["ends"], data["starts"][1:], strict=False))
    # Bars of their own period count what the API counts for that period: the busiest
    # one, and the first and last (whose ends are the filters' exact since/until).
    others = [(k, v) for k, v in params if k not in ("since", "until")]
    busiest = sorted(range(n), key=lambda i: -data["counts"][i])[:1]
    for i in sorted({0, n - 1, *busiest}):
        since = data["since"] if i == 0 else _at(data["starts"][i])
        until = data["until"] if i == n - 1 else _at(data["ends"][i])
        expected = await _total(h, headers, [*others, ("since", since), ("until", until)])
        assert data["counts"][i] == expected, (i, since, until)
    if data["step"] in ("hour", "day"):
        # Local hours and days of Asia/Kolkata (+05:30): inner bars start at :30 UTC.
        inner = data["starts"][1:]
        local = [datetime.fromtimestamp(s, ZoneInfo("Asia/Kolkata")) for s in inner]
        assert all(t.minute == 0 for t in local) and all(s % 3600 == 1800 for s in inner)
    if data["step"] == "day":
        assert all(t.hour == 0 for t in local)


async def test_the_step_follows_the_period(h: Harness) -> None:
    await _seed(h)
    async with https_client(h) as client:
        await signed_in(client)
        steps = {}
        for span, step in [
            (timedelta(hours=3), "minute"),
            (timedelta(hours=40), "15 minutes"),
            (timedelta(days=7), "hour"),
            (timedelta(days=90), "day"),
            (timedelta(days=400), "week"),
        ]:
            until = NOW + timedelta(minutes=1)  # the newest event is at NOW: include it
            params = {"source": "lms", "since": _iso(until - span), "until": _iso(until)}
            r = await client.get("/console/activity/histogram", params=params)
            assert r.status_code == 200, r.text
            steps[step] = r.json()
            assert steps[step]["step"] == step
            assert 20 <= len(steps[step]["counts"]) <= stats_service.HISTOGRAM_BARS
        # Year 1 to 9999 with nothing matching: month bars, at most MAX_HISTOGRAM_BARS.
        params = {
            "source": "nobody",
            "since": "0001-01-01T00:00:00Z",
            "until": "9999-01-01T00:00:00Z",
        }
        r = await client.get("/console/activity/histogram", params=params)
        assert r.status_code == 200, r.text
        assert r.json()["step"] == "month" and r.json()["total"] == 0
        assert 200 < len(r.json()["counts"]) <= stats_service.MAX_HISTOGRAM_BARS
        # Every period holds all 120 lms events but the 3-hour and 40-hour ones.
        assert steps["week"]["total"] == steps["day"]["total"] == 120


async def test_rollups_behind_the_log_give_way_to_counting_events(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _seed(h)
    # Five more, not rolled up yet (an hour back: inside the rollups' part of the period,
    # not its newest quarter hour, which is counted over the events anyway).
    late = [(NOW - timedelta(hours=1, minutes=i)).isoformat() for i in range(5)]
    await post_events(h, "lms", [_event(i, occurred_at=t) for i, t in enumerate(late)])
    async with https_client(h) as client:
        await signed_in(client)
        r = await client.get("/console/activity/histogram", params={"source": "lms"})
        # Seconds behind: the rollups answer, as of their watermark (the dashboard's figures).
        assert r.json()["source"] == "rollups" and r.json()["total"] == 120
        monkeypatch.setattr(stats_service, "HISTOGRAM_ROLLUP_LAG", -1.0)
        r = await client.get("/console/activity/histogram", params={"source": "lms"})
        assert r.json()["source"] == "events" and r.json()["total"] == 125


async def test_bad_input_is_a_problem_not_a_stack_trace(h: Harness) -> None:
    async with https_client(h) as client:
        await signed_in(client)
        for params in (
            {"since": "yesterday"},
            {"tz": "Mars/Olympus"},
            {"ip": "10.0.0.0/99"},
            {"nonsense": "1"},
            {"since": _iso(NOW), "until": _iso(NOW - timedelta(hours=1))},
        ):
            # As the chart's script asks: the API's problem+json, naming the field.
            r = await client.get("/console/activity/histogram", params=params, headers=JSON)
            assert r.status_code == 422, (params, r.status_code, r.text[:300])
            assert r.headers["content-type"].startswith("application/problem+json")
            problem = r.json()
            assert problem["status"] == 422 and problem["errors"], problem
            assert "Traceback" not in r.text
        # Opened as a page (no Accept: JSON): the console's problem page.
        r = await client.get("/console/activity/histogram", params={"since": "yesterday"})
        assert r.status_code == 422 and r.headers["content-type"].startswith("text/html")
    # Signed out: 401 problem+json for the script, a redirect to sign-in for a page; no counts.
    async with https_client(h) as client:
        r = await client.get("/console/activity/histogram", headers=JSON)
        assert r.status_code == 401 and r.json()["status"] == 401 and "counts" not in r.text
        r = await client.get("/console/activity/histogram")
        assert r.status_code == 303 and "/console/login" in r.headers["location"]


async def test_out_of_time_says_not_available(
    pg_only_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async for h in start_harness(make_settings(pg_only_url)):
        await _out_of_time(h, monkeypatch)


async def _out_of_time(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    # 20,000 events straight into the table: a bucketed count over them (a substring filter
    # the rollups do not carry) takes far more than the 1 ms budget set below.
    async with h.admin() as conn:
        await conn.execute(
            text(
                "INSERT INTO audit_event (event_id, occurred_at, recorded_at, source, "
                "actor_type, action, module, outcome, description, metadata) "
                "SELECT gen_random_uuid(), now() - g * interval '1 second', now(), 'bulk', "
                "'system', 'bulk.made', 'bulk', 'success', 'bulk row ' || g, '{}' "
                "FROM generate_series(1, 20000) g"
            )
        )
    monkeypatch.setattr(stats_service, "HISTOGRAM_BUDGET_MS", 1)
    async with https_client(h) as client:
        await signed_in(client)
        r = await client.get("/console/activity/histogram", params={"q": "row 1"})
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["available"] is False and "not available" in data["message"]
        assert data["counts"] == []
        # The page's request still answers normally afterwards (the budget was contained).
        page = await client.get("/console/activity", params={"source": "bulk", "page_size": 10})
        assert page.status_code == 200 and "Showing 1" in page.text
