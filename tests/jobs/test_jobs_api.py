"""`serve` runs the jobs in-process by default, and GET /admin/jobs shows them (admin,
auditor), recorded like every admin read."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from audit_service.auth.jobs import PRUNE_REVOKED_TOKENS
from audit_service.auth.models import RevokedToken
from audit_service.core.config import Settings
from audit_service.core.db import create_engine
from audit_service.core.jobs_models import JobLease
from audit_service.detections.jobs import EVALUATE_JOB
from audit_service.forwarding.jobs import DELIVER_JOB
from audit_service.integrity.jobs import LOG_JOB
from audit_service.integrity.verify_jobs import VERIFY_JOB
from audit_service.notifications.jobs import DELIVER_JOB as NOTIFY_JOB
from audit_service.reports.jobs import SCHEDULER_JOB
from audit_service.retention.jobs import RUN_JOB as RETENTION_JOB
from audit_service.stats.jobs import ROLLUP_JOB
from tests.conftest import Harness, make_settings, start_harness

harness = asynccontextmanager(start_harness)


async def add_revocations(url: str) -> None:
    """One revocation of a long-expired token (prunable) and one still valid (kept)."""
    engine = create_engine(url)
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(
            RevokedToken.__table__.insert(),
            [
                {
                    "jti": "expired",
                    "user_id": None,
                    "expires_at": now - timedelta(days=1),
                    "revoked_at": now - timedelta(days=2),
                },
                {
                    "jti": "valid",
                    "user_id": None,
                    "expires_at": now + timedelta(hours=1),
                    "revoked_at": now,
                },
            ],
        )
    await engine.dispose()


async def runs_of(h: Harness, name: str, at_least: int = 1) -> JobLease:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        async with h.app.state.sessionmaker() as session:
            row = await session.get(JobLease, name)
            if row is not None and row.runs >= at_least:
                return row
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} did not run")


@asynccontextmanager
async def serving(url: str, **overrides: object) -> AsyncIterator[Harness]:
    settings: Settings = make_settings(url, **{"run_jobs": True, **overrides})
    async with harness(settings) as h:
        yield h


async def test_serve_runs_the_jobs_in_process_by_default(db_url: str) -> None:
    assert Settings.model_fields["run_jobs"].default is True
    await add_revocations(db_url)
    async with serving(db_url) as h:
        row = await runs_of(h, PRUNE_REVOKED_TOKENS)
        assert (row.failures, row.last_error) == (0, None)
        async with h.app.state.sessionmaker() as session:
            left = (await session.scalars(select(RevokedToken.jti))).all()
        assert left == ["valid"]
        [event] = await h.events(action="auth.revocations_pruned")
        assert (event.actor_type, event.actor_id) == ("system", f"job:{PRUNE_REVOKED_TOKENS}")
        assert event.event_metadata["count"] == 1
    # Shutdown released the lease (nothing left to expire).
    engine = create_engine(db_url)
    async with engine.connect() as conn:
        until = await conn.scalar(select(JobLease.lease_until))
    await engine.dispose()
    assert until is not None and until <= datetime.now(UTC)


async def test_run_jobs_false_runs_none(db_url: str) -> None:
    await add_revocations(db_url)
    async with serving(db_url, run_jobs=False) as h:
        await asyncio.sleep(0.5)
        async with h.app.state.sessionmaker() as session:
            assert await session.scalar(select(func.count()).select_from(JobLease)) == 0
            assert await session.scalar(select(func.count()).select_from(RevokedToken)) == 2


async def test_admin_jobs_needs_admin_or_auditor_and_is_recorded(db_url: str) -> None:
    async with serving(db_url) as h:
        await runs_of(h, PRUNE_REVOKED_TOKENS)
        r = await h.client.get("/admin/jobs")
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        r = await h.client.get("/admin/jobs", headers=await h.auth("bob", "user"))
        assert r.status_code == 403
        for who, role in (("admin", None), ("carol", "auditor")):
            headers = await h.auth(who, role)
            # The loops take their leases as the process starts; on a loaded box (SQLite: one
            # writer for eight jobs) that can take a moment.
            for _ in range(100):
                r = await h.client.get("/admin/jobs", headers=headers)
                assert r.status_code == 200, r.text
                jobs = {j["name"]: j for j in r.json()["items"]}
                if jobs[LOG_JOB]["running"] and jobs[ROLLUP_JOB]["running"]:
                    break
                await asyncio.sleep(0.1)
            assert set(jobs) == {
                PRUNE_REVOKED_TOKENS,
                LOG_JOB,
                VERIFY_JOB,
                ROLLUP_JOB,
                SCHEDULER_JOB,
                EVALUATE_JOB,
                DELIVER_JOB,
                NOTIFY_JOB,
                RETENTION_JOB,
            }
            # The log job and the rollup loop inside their leases while the process runs.
            assert jobs[LOG_JOB]["running"] is True
            assert jobs[ROLLUP_JOB]["running"] is True
            job = jobs[PRUNE_REVOKED_TOKENS]
            assert job["running"] is False
            assert job["holder"].split(":")[-2].isdigit()  # host:pid:id
            assert job["interval_seconds"] == 3600.0
            assert job["runs"] >= 1 and job["failures"] == 0
            assert job["last_started_at"] <= job["last_finished_at"]
            assert job["next_run_at"] > job["last_finished_at"]
            assert job["last_error"] is None and job["lag_seconds"] is None
        viewed = await h.events(action="jobs.viewed")
        seen = [(e.outcome, e.actor_name) for e in viewed]
        assert [x for i, x in enumerate(seen) if i == 0 or seen[i - 1] != x] == [
            ("denied", None),
            ("denied", "bob"),
            ("success", "admin"),
            ("success", "carol"),
        ]
        assert viewed[-1].event_metadata["count"] == 9


async def test_admin_jobs_shows_failures_and_lag(db_url: str) -> None:
    async with serving(db_url) as h:
        await runs_of(h, PRUNE_REVOKED_TOKENS)
        async with h.app.state.sessionmaker() as session:
            session.add(
                JobLease(
                    name="other.sequencer",
                    holder="worker-1:42:abc",
                    interval_seconds=0.25,
                    lease_until=datetime.now(UTC) + timedelta(seconds=30),
                    runs=9,
                    failures=2,
                    consecutive_failures=1,
                    last_error="ConnectionError: server closed the connection",
                    lag_seconds=1.5,
                )
            )
            await session.commit()
        r = await h.client.get("/admin/jobs", headers=await h.auth())
        jobs = {j["name"]: j for j in r.json()["items"]}
        other = jobs["other.sequencer"]
        assert other["running"] is True
        assert (other["runs"], other["failures"], other["consecutive_failures"]) == (9, 2, 1)
        assert other["last_error"] == "ConnectionError: server closed the connection"
        assert other["lag_seconds"] == 1.5
