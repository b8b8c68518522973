"""The coarser rollup levels: how a period is cut into day, hour and 15-minute rows
(buckets.pieces) for any zone, and the statistics read that way equal a count over the raw
events for random periods, zones and intervals (both dialects)."""

from __future__ import annotations

import bisect
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit_service.stats import buckets as b
from tests.conftest import Harness
from tests.stats.helpers import event, post_events, roll_up

SIZES = (86400, 3600, 900)
ZONES = (
    "UTC",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "America/St_Johns",
    "Australia/Lord_Howe",
    "America/New_York",
)


def _utc(text: str) -> int:
    return b.epoch(datetime.fromisoformat(text))


def _rows(plan: dict[int, list[b.Range]]) -> list[tuple[int, int]]:
    """Every row the plan reads: (size, start)."""
    return [
        (size, t) for size, ranges in plan.items() for lo, hi in ranges for t in range(lo, hi, size)
    ]


def _check(starts: list[int], start: int, end: int, sizes: tuple[int, ...] = SIZES) -> None:
    plan = b.pieces(starts, start, end, sizes)
    covered: Counter[int] = Counter()
    for size, t in _rows(plan):
        assert t % size == 0  # a stored row of that level
        quarters = range(t, t + size, 900)
        covered.update(quarters)
        # The row lies inside the period and inside one interval, whole.
        assert start <= t and t + size <= end
        if starts:
            assert bisect.bisect_right(starts, t) == bisect.bisect_right(starts, t + size - 1)
    assert covered == Counter(range(start, end, 900))  # every quarter hour exactly once


@settings(max_examples=300, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    interval=st.sampled_from(["hour", "day", "week", "month"]),
    start_q=st.integers(0, 4 * 365 * 96),
    length_q=st.integers(0, 120 * 96),
    actor_levels=st.booleans(),
)
def test_pieces_cover_each_quarter_once_inside_one_interval(
    zone: str, interval: b.Interval, start_q: int, length_q: int, actor_levels: bool
) -> None:
    start = _utc("2024-01-01T00:00:00Z") + start_q * 900
    end = start + length_q * 900
    if interval == "hour":
        end = min(end, start + 20 * 86400)  # the walk over quarter hours is slow
    starts = b.interval_starts(start, end, ZoneInfo(zone), interval)
    _check(starts, start, end, (86400, 900) if actor_levels else SIZES)
    _check([], start, end)  # one period, no intervals (summary, top)


def test_a_utc_day_is_one_day_row() -> None:
    start, end = _utc("2026-11-10T00:00:00Z"), _utc("2026-11-12T00:00:00Z")
    starts = b.interval_starts(start, end, ZoneInfo("UTC"), "day")
    assert b.pieces(starts, start, end, SIZES) == {86400: [(start, end)], 3600: [], 900: []}


def test_berlin_days_read_hour_rows_across_dst() -> None:
    tz = ZoneInfo("Europe/Berlin")
    # Saturday (24 h), Sunday 29 March (23 h: 23:00 UTC to 22:00 UTC), Monday.
    start, end = _utc("2026-03-28T00:00:00+01:00"), _utc("2026-03-31T00:00:00+02:00")
    starts = b.interval_starts(start, end, tz, "day")
    assert [e - s for s, e in zip(starts, [*starts[1:], end], strict=True)] == [
        24 * 3600,
        23 * 3600,
        24 * 3600,
    ]
    plan = b.pieces(starts, start, end, SIZES)
    # A Berlin day (23:00 or 22:00 UTC to the next) never holds a whole UTC day: the
    # daily series reads hour rows, 23 for the Sunday, none across two local days.
    assert plan == {86400: [], 3600: [(start, end)], 900: []}
    _check(starts, start, end)
    # Sunday 25 October is 25 hours, 22:00 UTC on the 24th to 23:00 UTC on the 25th.
    start, end = _utc("2026-10-25T00:00:00+02:00"), _utc("2026-10-26T00:00:00+01:00")
    starts = b.interval_starts(start, end, tz, "day")
    assert starts == [start] and end - start == 25 * 3600
    assert b.pieces(starts, start, end, SIZES) == {86400: [], 3600: [(start, end)], 900: []}
    # A week of Berlin days as one period (a summary): whole UTC days in the middle.
    start, end = _utc("2026-10-19T00:00:00+02:00"), _utc("2026-10-26T00:00:00+01:00")
    plan = b.pieces([], start, end, SIZES)
    assert plan[86400] == [(_utc("2026-10-19T00:00:00Z"), _utc("2026-10-25T00:00:00Z"))]
    assert plan[3600] == [
        (start, _utc("2026-10-19T00:00:00Z")),
        (_utc("2026-10-25T00:00:00Z"), end),
    ]
    _check([], start, end)


def test_kolkata_days_read_two_quarters_at_each_edge() -> None:
    tz = ZoneInfo("Asia/Kolkata")
    start, end = _utc("2026-11-10T00:00:00+05:30"), _utc("2026-11-12T00:00:00+05:30")
    starts = b.interval_starts(start, end, tz, "day")
    plan = b.pieces(starts, start, end, SIZES)
    # 18:30 UTC to 18:30 UTC: 18:30-19:00 in quarters, 19:00-18:00 in hours (no UTC day
    # fits), 18:00-18:30 in quarters; the two days' quarters at 18:00-19:00 on the 10th
    # are adjacent and merged.
    assert plan == {
        86400: [],
        3600: [
            (_utc("2026-11-09T19:00:00Z"), _utc("2026-11-10T18:00:00Z")),
            (_utc("2026-11-10T19:00:00Z"), _utc("2026-11-11T18:00:00Z")),
        ],
        900: [
            (_utc("2026-11-09T18:30:00Z"), _utc("2026-11-09T19:00:00Z")),
            (_utc("2026-11-10T18:00:00Z"), _utc("2026-11-10T19:00:00Z")),
            (_utc("2026-11-11T18:00:00Z"), _utc("2026-11-11T18:30:00Z")),
        ],
    }
    _check(starts, start, end)
    # One period (a summary) over the same two local days: the whole UTC day in between.
    assert b.pieces([], start, end, SIZES)[86400] == [
        (_utc("2026-11-10T00:00:00Z"), _utc("2026-11-11T00:00:00Z"))
    ]


# --- against the raw events, both dialects ---------------------------------------------------

BASE = datetime(2026, 3, 20, tzinfo=UTC)
SPAN_DAYS = 45


def _events(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for _ in range(400):
        when = BASE + timedelta(seconds=rng.randrange(SPAN_DAYS * 86400))
        out.append(
            event(
                when,
                actor_id=rng.choice(["u1", "u2", "u3", "u4", "svc-1"]),
                actor_type="user",
                action=rng.choice(["exam.submitted", "exam.graded", "auth.login"]),
                outcome=rng.choice(["success", "failure"]),
                tenant_id=rng.choice(["t1", "t2"]),
            )
        )
    return out


EVENTS = _events(9)


def _local_key(when: datetime, tz: ZoneInfo, interval: str) -> str:
    wall = when.astimezone(tz)
    if interval == "hour":
        return f"{wall.date()}T{wall.hour:02}{wall.utcoffset()}"
    if interval == "day":
        return str(wall.date())
    if interval == "week":
        return str(wall.date() - timedelta(days=wall.weekday()))
    return f"{wall.year}-{wall.month:02}"


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    zone=st.sampled_from(ZONES),
    interval=st.sampled_from(["hour", "day", "week", "month"]),
    start_q=st.integers(-2 * 96, SPAN_DAYS * 96),
    length_q=st.integers(0, 40 * 96),
    tenant=st.sampled_from([None, "t1"]),
)
async def test_statistics_from_the_levels_equal_the_raw_events(
    h: Harness, zone: str, interval: str, start_q: int, length_q: int, tenant: str | None
) -> None:
    state = h.app.state.__dict__
    if not state.get("_levels_seeded"):
        await post_events(h, "lms", EVENTS)
        await roll_up(h)
        state["_levels_seeded"] = True
    tz = ZoneInfo(zone)
    since = BASE + timedelta(minutes=15 * start_q)
    until = since + timedelta(minutes=15 * length_q)
    if interval == "hour":
        until = min(until, since + timedelta(days=10))
    inside = [
        e
        for e in EVENTS
        if since <= datetime.fromisoformat(e["occurred_at"]) < until
        and (tenant is None or e["tenant_id"] == tenant)
    ]
    params: dict[str, Any] = {"tz": zone, "since": since.isoformat(), "until": until.isoformat()}
    if tenant:
        params["tenant_id"] = tenant
    admin = await h.auth()
    r = await h.client.get(
        "/admin/stats/timeseries",
        headers=admin,
        params={**params, "interval": interval, "group_by": "action"},
    )
    assert r.status_code == 200, r.text
    got: Counter[tuple[str, str]] = Counter()
    for bucket in r.json()["buckets"]:
        key = _local_key(datetime.fromisoformat(bucket["start"]), tz, interval)
        for action, n in (bucket["groups"] or {}).items():
            got[(key, action)] += n
        assert bucket["count"] == sum((bucket["groups"] or {}).values())
    want = Counter(
        (_local_key(datetime.fromisoformat(e["occurred_at"]), tz, interval), e["action"])
        for e in inside
    )
    assert got == want
    r = await h.client.get("/admin/stats/summary", headers=admin, params=params)
    figures = r.json()["figures"]
    assert figures["events"] == len(inside)
    assert figures["distinct_actors"] == len({e["actor_id"] for e in inside})
    r = await h.client.get(
        "/admin/stats/top", headers=admin, params={**params, "dimension": "actor", "limit": 3}
    )
    top = r.json()
    per_actor = Counter(e["actor_id"] for e in inside)
    assert top["total"] == len(inside)
    assert [(i["key"], i["count"]) for i in top["items"]] == sorted(
        per_actor.items(), key=lambda kv: (-kv[1], kv[0])
    )[:3]
    r = await h.client.get("/admin/stats/peak-hours", headers=admin, params=params)
    heat = Counter()
    for e in inside:
        wall = datetime.fromisoformat(e["occurred_at"]).astimezone(tz)
        heat[(wall.weekday(), wall.hour)] += 1
    grid = r.json()["heatmap"]
    assert {(d, hh): grid[d][hh] for d in range(7) for hh in range(24) if grid[d][hh]} == heat


@settings(max_examples=60, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    interval=st.sampled_from(["hour", "day", "week", "month"]),
    start_q=st.integers(0, 3 * 365 * 96),
    length_q=st.integers(1, 400 * 96),
)
def test_interval_of_in_sql_agrees_with_bisection(
    zone: str, interval: b.Interval, start_q: int, length_q: int
) -> None:
    import sqlite3

    from sqlalchemy import column
    from sqlalchemy.dialects import sqlite

    from audit_service.stats.repository import interval_of

    start = _utc("2024-01-01T00:00:00Z") + start_q * 900
    end = start + length_q * 900
    if interval == "hour":
        end = min(end, start + 20 * 86400)
    starts = b.interval_starts(start, end, ZoneInfo(zone), interval)
    expr = interval_of(column("bucket"), starts, end)
    sql = str(expr.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    rng = random.Random(start_q)
    probes = sorted({start, end - 900, *(rng.randrange(start, end, 900) for _ in range(200))})
    probes += [s for s in starts if s >= start]
    with sqlite3.connect(":memory:") as conn:
        conn.execute("CREATE TABLE t (bucket INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?)", [(p,) for p in probes])
        got = dict(conn.execute(f"SELECT bucket, {sql} FROM t").fetchall())  # noqa: S608
    assert got == {p: bisect.bisect_right(starts, p) - 1 for p in probes}
