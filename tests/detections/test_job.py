"""The `detections.evaluate` job in the running service (in-process jobs): failed logins
become an alert, and its `alert.opened` event, without anyone asking."""

from __future__ import annotations

import asyncio

from audit_service.detections.jobs import detection_jobs
from tests.conftest import make_settings, start_harness
from tests.detections.helpers import alerts, failures, post


async def test_the_job_opens_an_alert_within_seconds(pg_only_url: str) -> None:
    settings = make_settings(pg_only_url, run_jobs=True, detections_poll_interval=0.2)
    async for h in start_harness(settings):
        await post(h, failures("198.51.100.9", "mallory", 10))
        found = []
        for _ in range(150):
            found = await alerts(h, "brute_force_ip")
            if found:
                break
            await asyncio.sleep(0.1)
        assert [a.entity_value for a in found] == ["198.51.100.9"]
        for _ in range(50):
            opened = await h.events(action="alert.opened", target_id=str(found[0].id))
            if opened:
                break
            await asyncio.sleep(0.1)
        assert opened and opened[0].actor_type == "system"


async def test_disabled_leaves_the_job_out() -> None:
    settings = make_settings("sqlite+aiosqlite:///unused.db", detections_enabled=False)
    assert detection_jobs(settings) == []
    assert [j.name for j in detection_jobs(make_settings("sqlite+aiosqlite:///x.db"))] == [
        "detections.evaluate"
    ]
