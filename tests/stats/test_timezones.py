"""Local intervals in the caller's zone: Europe/Berlin across both DST changes (days of 23
and 25 hours) and Asia/Kolkata (+05:30: days and hours begin at :30 UTC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import Harness
from tests.stats.helpers import event, post_events, roll_up


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


async def _series(h: Harness, **params: Any) -> list[dict[str, Any]]:
    r = await h.client.get("/admin/stats/timeseries", headers=await h.auth(), params=params)
    assert r.status_code == 200, r.text
    buckets: list[dict[str, Any]] = r.json()["buckets"]
    return buckets


def _hours(bucket: dict[str, Any]) -> float:
    span = datetime.fromisoformat(bucket["end"]) - datetime.fromisoformat(bucket["start"])
    return span / timedelta(hours=1)


async def test_berlin_days_across_dst(h: Harness) -> None:
    await post_events(
        h,
        "lms",
        [
            event(_utc("2026-03-28T23:45:00+01:00")),  # Saturday, last quarter hour
            event(_utc("2026-03-29T00:30:00+01:00")),  # Sunday, 23 hours long
            event(_utc("2026-03-29T23:45:00+02:00")),
            event(_utc("2026-03-30T00:00:00+02:00")),  # Monday
            event(_utc("2026-10-25T02:30:00+02:00")),  # the first 02:30 of a 25-hour day
            event(_utc("2026-10-25T02:30:00+01:00")),  # the second
        ],
    )
    await roll_up(h)
    spring = await _series(
        h,
        interval="day",
        tz="Europe/Berlin",
        since="2026-03-28T00:00:00+01:00",
        until="2026-03-31T00:00:00+02:00",
    )
    assert [(b["start"], b["count"]) for b in spring] == [
        ("2026-03-28T00:00:00+01:00", 1),
        ("2026-03-29T00:00:00+01:00", 2),
        ("2026-03-30T00:00:00+02:00", 1),
    ]
    assert [_hours(b) for b in spring] == [24, 23, 24]
    # In UTC the same events fall on other days.
    utc = await _series(
        h, interval="day", since="2026-03-28T00:00:00Z", until="2026-03-31T00:00:00Z"
    )
    assert [b["count"] for b in utc] == [2, 2, 0]
    autumn = await _series(
        h,
        interval="hour",
        tz="Europe/Berlin",
        since="2026-10-25T00:00:00+02:00",
        until="2026-10-26T00:00:00+01:00",
    )
    assert len(autumn) == 25
    twice = [b for b in autumn if b["start"][11:13] == "02"]
    assert [(b["start"], b["count"]) for b in twice] == [
        ("2026-10-25T02:00:00+02:00", 1),
        ("2026-10-25T02:00:00+01:00", 1),
    ]
    day = await _series(
        h,
        interval="day",
        tz="Europe/Berlin",
        since="2026-10-25T00:00:00+02:00",
        until="2026-10-26T00:00:00+01:00",
    )
    assert [(_hours(b), b["count"]) for b in day] == [(25, 2)]


async def test_kolkata_days_and_hours_begin_at_half_past(h: Harness) -> None:
    await post_events(
        h,
        "lms",
        [
            event(_utc("2026-11-10T18:15:00Z")),  # 23:45 IST on the 10th
            event(_utc("2026-11-10T18:30:00Z")),  # 00:00 IST on Wednesday the 11th
            event(_utc("2026-11-10T18:44:59Z")),
        ],
    )
    await roll_up(h)
    days = await _series(
        h,
        interval="day",
        tz="Asia/Kolkata",
        since="2026-11-10T00:00:00+05:30",
        until="2026-11-12T00:00:00+05:30",
    )
    assert [(b["start"], b["count"]) for b in days] == [
        ("2026-11-10T00:00:00+05:30", 1),
        ("2026-11-11T00:00:00+05:30", 2),
    ]
    hours = await _series(
        h,
        interval="hour",
        tz="Asia/Kolkata",
        since="2026-11-10T23:00:00+05:30",
        until="2026-11-11T01:00:00+05:30",
    )
    assert [(b["start"], b["count"]) for b in hours] == [
        ("2026-11-10T23:00:00+05:30", 1),
        ("2026-11-11T00:00:00+05:30", 2),
    ]
    admin = await h.auth()
    r = await h.client.get(
        "/admin/stats/summary",
        headers=admin,
        params={
            "tz": "Asia/Kolkata",
            "since": "2026-11-11T00:00:00+05:30",
            "until": "2026-11-12T00:00:00+05:30",
        },
    )
    assert r.json()["figures"]["events"] == 2
    assert r.json()["period"]["since"] == "2026-11-11T00:00:00+05:30"
    r = await h.client.get(
        "/admin/stats/peak-hours",
        headers=admin,
        params={
            "tz": "Asia/Kolkata",
            "since": "2026-11-09T00:00:00Z",
            "until": "2026-11-12T00:00:00Z",
        },
    )
    heat = r.json()["heatmap"]
    assert (heat[1][23], heat[2][0]) == (1, 2)  # Tuesday 23:00, Wednesday 00:00 local


async def test_default_tz_comes_from_settings(db_url: str) -> None:
    from tests.conftest import make_settings, start_harness

    async for h in start_harness(make_settings(db_url, stats_default_tz="Asia/Kolkata")):
        await post_events(h, "lms", [event(_utc("2026-11-10T18:30:00Z"))])
        await roll_up(h)
        buckets = await _series(
            h, interval="day", since="2026-11-10T18:30:00Z", until="2026-11-11T18:30:00Z"
        )
        assert [(b["start"], b["count"]) for b in buckets] == [("2026-11-11T00:00:00+05:30", 1)]
