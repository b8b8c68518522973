"""`audit-service worker` as a real process: it starts, runs the jobs, and exits cleanly (0,
leases released) on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from datetime import UTC, datetime

from sqlalchemy import select

from audit_service.audit_log.models import AuditEvent
from audit_service.auth.jobs import PRUNE_REVOKED_TOKENS
from audit_service.auth.models import RevokedToken
from audit_service.core.db import create_engine
from audit_service.core.jobs_models import JobLease
from tests.jobs.test_jobs_api import add_revocations


def _env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_")}
    env.update(DATABASE_URL=url, AUDIT_HOUSEKEEPING_INTERVAL="3600", AUDIT_JOB_LEASE_SECONDS="5")
    return env


async def test_worker_runs_the_jobs_and_stops_cleanly_on_sigterm(
    db_url: str, tmp_path: object
) -> None:
    await add_revocations(db_url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "audit_service.cli",
        "worker",
        env=_env(db_url),
        cwd=str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    engine = create_engine(db_url)
    try:
        deadline = time.monotonic() + 30
        row: JobLease | None = None
        while time.monotonic() < deadline:
            async with engine.connect() as conn:
                found = (
                    await conn.execute(
                        select(JobLease.holder, JobLease.runs).where(
                            JobLease.name == PRUNE_REVOKED_TOKENS
                        )
                    )
                ).first()
            if found is not None and found.runs >= 1:
                row = JobLease(holder=found.holder, runs=found.runs)
                break
            assert proc.returncode is None, await proc.stderr.read()  # type: ignore[union-attr]
            await asyncio.sleep(0.1)
        assert row is not None, "the worker never ran its job"
        assert row.holder is not None and row.holder.split(":")[-2] == str(proc.pid)
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 0, err.decode()
        assert b"worker stopped" in out
        assert b"Traceback" not in err
        async with engine.connect() as conn:
            left = (await conn.scalars(select(RevokedToken.jti))).all()
            until = await conn.scalar(select(JobLease.lease_until))
            actors = (
                await conn.execute(
                    select(AuditEvent.actor_type, AuditEvent.actor_id).where(
                        AuditEvent.action == "auth.revocations_pruned"
                    )
                )
            ).all()
        assert left == ["valid"]
        assert until is not None and until <= datetime.now(UTC)
        assert [tuple(a) for a in actors] == [("system", f"job:{PRUNE_REVOKED_TOKENS}")]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await engine.dispose()
