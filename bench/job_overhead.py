"""What the job runtime costs per run: a no-op job with interval 0, run by 1 and 3 runtimes
(own engines, as separate processes), on a private PostgreSQL and on SQLite.

    .venv/bin/python bench/job_overhead.py [--seconds 5]

Each run is two short transactions (claim, finish); with several runtimes the losers' claim
attempts compete for the same row. Prints runs/s and how long stop() took.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import select

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.pg import TempPostgres

from audit_service.core import migrations
from audit_service.core.db import create_engine
from audit_service.core.jobs import Job, JobContext, JobRuntime
from audit_service.core.jobs_models import JobLease


async def noop(ctx: JobContext) -> None:
    return None


async def runs(url: str) -> int:
    engine = create_engine(url)
    async with engine.connect() as conn:
        count = await conn.scalar(select(JobLease.runs).where(JobLease.name == "noop"))
    await engine.dispose()
    return int(count or 0)


async def measure(url: str, runtimes: int, seconds: float) -> None:
    engines = [create_engine(url) for _ in range(runtimes)]
    started = [JobRuntime(e, [Job("noop", 0.0, noop)], poll_seconds=0.05) for e in engines]
    for runtime in started:
        await runtime.start()
    await asyncio.sleep(0.5)  # warm up the pools
    before, t0 = await runs(url), time.monotonic()
    await asyncio.sleep(seconds)
    after, elapsed = await runs(url), time.monotonic() - t0
    t1 = time.monotonic()
    for runtime in started:
        await runtime.stop(5)
    stopped = time.monotonic() - t1
    for engine in engines:
        await engine.dispose()
    dialect = url.split("+")[0]
    print(
        f"{dialect:<10} runtimes={runtimes}: {(after - before) / elapsed:6.0f} runs/s, "
        f"stop {stopped * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    server = TempPostgres()
    try:
        urls = [server.start(), f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/jobs.db"]
        for url in urls:
            migrations.upgrade(url)
            for runtimes in (1, 3):
                asyncio.run(measure(url, runtimes, args.seconds))
                # Reset so the next measurement starts from a free, due lease.
                asyncio.run(_reset(url))
    finally:
        server.stop()


async def _reset(url: str) -> None:
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(JobLease.__table__.delete())
    await engine.dispose()


if __name__ == "__main__":
    main()
