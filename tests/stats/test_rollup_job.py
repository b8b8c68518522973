"""The `stats.rollup` job: registered, crash-safe (the watermark moves with the counts or
not at all), and fast enough that a committed, back-dated event shows within 3 s."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.audit_log.sequencer import no_fence
from audit_service.integrity.jobs import make_sequencer
from audit_service.main import background_jobs
from audit_service.stats import rollup
from tests.conftest import Harness, make_settings, start_harness
from tests.stats.helpers import event, post_events, raw_group_by, stored_rollups


class Crash(Exception):
    pass


async def _crash(_session: AsyncSession) -> None:
    raise Crash("the process died before its commit")


async def _watermark(h: Harness) -> int | None:
    async with h.engine.connect() as conn:
        value = await conn.scalar(text("SELECT position FROM stats_watermark"))
    return None if value is None else int(value)


async def test_a_round_that_dies_counts_nothing_and_the_rerun_counts_once(h: Harness) -> None:
    when = datetime(2026, 5, 4, 10, tzinfo=UTC)
    await post_events(h, "lms", [event(when), event(when, outcome="failure")])
    await make_sequencer().catch_up(h.app.state.sessionmaker, no_fence)
    async with h.app.state.sessionmaker() as session:
        with pytest.raises(Crash):
            await rollup.run_round(session, _crash, batch=1000)
    assert await _watermark(h) is None
    assert (await stored_rollups(h))["bucket"] == {}
    first = await rollup.catch_up(h.app.state.sessionmaker, no_fence, batch=3)
    assert first.counted > 2 and first.watermark == await _watermark(h)
    again = await rollup.catch_up(h.app.state.sessionmaker, no_fence)
    assert (again.counted, again.watermark) == (0, first.watermark)
    assert await stored_rollups(h) == await raw_group_by(h, first.watermark)
    quarter = int(when.timestamp())
    bucket = (await stored_rollups(h))["bucket"]
    assert bucket[(quarter, "", "lms", "exam", "exam.submitted", "user", "success")] == 1
    assert bucket[(quarter, "", "lms", "exam", "exam.submitted", "user", "failure")] == 1


def test_the_job_is_registered() -> None:
    settings = make_settings("sqlite+aiosqlite:///unused.db")
    jobs = {j.name: j for j in background_jobs(settings)}
    assert "stats.rollup" in jobs
    assert jobs["stats.rollup"].interval == 0.0  # it loops by itself, every ≤ 1 s
    off = make_settings("sqlite+aiosqlite:///unused.db", stats_rollup_enabled=False)
    assert "stats.rollup" not in {j.name for j in background_jobs(off)}
    assert "log.sequencer" in {j.name for j in background_jobs(off)}


@pytest.mark.slow
async def test_a_back_dated_event_shows_in_the_stats_within_3_seconds(db_url: str) -> None:
    settings = make_settings(db_url, run_jobs=True, stats_rollup_interval=0.5)
    async for h in start_harness(settings):
        admin = await h.auth()
        when = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=90)
        quarter = when - timedelta(minutes=when.minute % 15)
        window = {
            "since": quarter.isoformat(),
            "until": (quarter + timedelta(minutes=15)).isoformat(),
        }
        await post_events(h, "lms", [event(when)])
        started = time.monotonic()
        events = 0
        while time.monotonic() - started < 3.0:
            r = await h.client.get("/admin/stats/summary", headers=admin, params=window)
            events = r.json()["figures"]["events"]
            if events:
                break
            await asyncio.sleep(0.1)
        assert events == 1, f"not reflected after {time.monotonic() - started:.1f} s"
        r = await h.client.get("/admin/stats/freshness", headers=admin)
        assert r.json()["watermark"] >= 0
        r = await h.client.get("/admin/jobs", headers=admin)
        assert "stats.rollup" in {j["name"] for j in r.json()["items"]}, r.json()
