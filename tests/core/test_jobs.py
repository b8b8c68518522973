"""The leased job runtime on real Postgres and SQLite: several runtimes (each with its own
engine, as separate processes would have) never run a job at the same time; a dead holder's
lease is taken over after it expires; failures back off and are recorded without anything
sensitive; stop is clean and bounded; a lost lease stops the run and fences its writes."""

from __future__ import annotations

import asyncio
import itertools
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_service.core.db import create_engine
from audit_service.core.jobs import Job, JobContext, JobRuntime, LeaseLost
from audit_service.core.jobs_models import JobLease
from tests.conftest import admin_connection

PROBE_DDL = "CREATE TABLE job_probe (holder VARCHAR(200), started FLOAT, finished FLOAT)"


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_url)
    # DDL is the superuser's (the service's role creates nothing); the probe is the jobs'.
    async with admin_connection(db_url) as conn:
        await conn.execute(text("DROP TABLE IF EXISTS job_probe"))
        await conn.execute(text(PROBE_DDL))
        if conn.dialect.name == "postgresql":
            await conn.execute(
                text(f'GRANT SELECT, INSERT ON job_probe TO "{engine.url.username}"')
            )
    try:
        yield engine
    finally:
        async with admin_connection(db_url) as conn:
            await conn.execute(text("DROP TABLE job_probe"))
        await engine.dispose()


def probe(work: float = 0.05) -> Job:
    """A job that writes its own start and end times (wall clock) once it is done."""

    async def run(ctx: JobContext) -> None:
        started = time.time()
        await asyncio.sleep(work)
        async with ctx.engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO job_probe VALUES (:h, :s, :f)"),
                {"h": ctx.holder, "s": started, "f": time.time()},
            )

    return Job("probe", 0.0, run)


async def probe_runs(engine: AsyncEngine) -> list[tuple[str, float, float]]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT holder, started, finished FROM job_probe"))
        return sorted((r.holder, r.started, r.finished) for r in rows)


def overlaps(runs: list[tuple[str, float, float]]) -> list[tuple[object, object]]:
    ordered = sorted(runs, key=lambda r: r[1])
    return [(a, b) for a, b in itertools.pairwise(ordered) if b[1] < a[2]]


async def lease(engine: AsyncEngine, name: str) -> JobLease:
    async with engine.connect() as conn:
        row = (await conn.execute(select(JobLease.__table__).where(JobLease.name == name))).one()
    return JobLease(**row._mapping)


async def wait_for(condition: object, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert callable(condition)
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_runtimes_with_their_own_engines_never_run_a_job_concurrently(
    engine: AsyncEngine, db_url: str
) -> None:
    engines = [create_engine(db_url) for _ in range(3)]
    runtimes = [JobRuntime(e, [probe()], lease_seconds=5, poll_seconds=0.05) for e in engines]
    try:
        for runtime in runtimes:
            await runtime.start()
        await asyncio.sleep(3)
    finally:
        for runtime in runtimes:
            await runtime.stop(5)
        for e in engines:
            await e.dispose()
    runs = await probe_runs(engine)
    assert len(runs) >= 10
    assert overlaps(runs) == []
    row = await lease(engine, "probe")
    # The lease row counts exactly the runs the job itself recorded.
    assert row.runs == len(runs)
    assert row.failures == 0


async def test_a_dead_holders_lease_is_taken_over_only_after_it_expires(
    engine: AsyncEngine,
) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=1.5)
    async with engine.begin() as conn:
        await conn.execute(
            JobLease.__table__.insert().values(
                name="probe",
                holder="dead-host:1:abcdef",
                generation=7,
                lease_until=expires,
                interval_seconds=0.0,
            )
        )
    runtime = JobRuntime(engine, [probe()], lease_seconds=5, poll_seconds=0.2)
    await runtime.start()
    try:
        await wait_for(lambda: _has_runs(engine))
    finally:
        await runtime.stop(5)
    runs = await probe_runs(engine)
    assert runs[0][1] >= expires.timestamp()  # nothing ran while the dead lease was valid
    assert runs[0][1] < expires.timestamp() + 2.0  # and it was taken over promptly
    row = await lease(engine, "probe")
    assert row.holder == runtime.holder
    assert row.generation > 7


async def _has_runs(engine: AsyncEngine) -> bool:
    return bool(await probe_runs(engine))


async def test_a_failing_job_backs_off_exponentially_and_records_its_error(
    engine: AsyncEngine,
) -> None:
    attempts: list[float] = []

    async def fail_then_succeed(ctx: JobContext) -> None:
        attempts.append(time.monotonic())
        if len(attempts) <= 6:
            raise RuntimeError("boom")

    job = Job("flaky", 0.0, fail_then_succeed, backoff_base=0.1, backoff_max=0.8)
    assert [job.backoff(n) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 0.8, 0.8]
    runtime = JobRuntime(engine, [job], lease_seconds=5, poll_seconds=1.0)
    await runtime.start()
    try:
        await wait_for(lambda: _finished_runs(engine, "flaky", 6))
        row = await lease(engine, "flaky")
        assert (row.failures, row.consecutive_failures, row.runs) == (6, 6, 6)
        assert row.last_error == "RuntimeError: boom"
        assert row.last_error_at is not None
        await wait_for(lambda: _finished_runs(engine, "flaky", 7))
    finally:
        await runtime.stop(5)
    gaps = [b - a for a, b in itertools.pairwise(attempts)][:6]
    # Never earlier than the backoff; later only by scheduling slack (uncapped, the last two
    # would be 1.6 and 3.2 s).
    for gap, expected in zip(gaps, [0.1, 0.2, 0.4, 0.8, 0.8, 0.8], strict=True):
        assert expected * 0.95 <= gap < expected * 1.1 + 0.7, gaps
    row = await lease(engine, "flaky")
    assert (row.failures, row.consecutive_failures) == (6, 0)  # a success resets the streak
    assert row.last_error == "RuntimeError: boom"  # and the last error stays visible


async def _finished_runs(engine: AsyncEngine, name: str, n: int) -> bool:
    async with engine.connect() as conn:
        runs = await conn.scalar(select(JobLease.runs).where(JobLease.name == name))
    return runs is not None and runs >= n


async def test_database_errors_are_recorded_without_their_parameters_or_values(
    engine: AsyncEngine,
) -> None:
    secret = "hunter2-do-not-store"

    async def leaky(ctx: JobContext) -> None:
        async with ctx.engine.begin() as conn:
            await conn.execute(text("INSERT INTO no_such_table VALUES (:v)"), {"v": secret})

    async def leaky_value(ctx: JobContext) -> None:
        async with ctx.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # The server's own message quotes the bad value here.
                await conn.execute(text("SELECT CAST(:v AS INTEGER)"), {"v": secret})
            await conn.execute(text("SELECT zz FROM job_probe WHERE holder = :v"), {"v": secret})

    jobs = [Job("leaky", 60.0, leaky), Job("leaky-value", 60.0, leaky_value)]
    runtime = JobRuntime(engine, jobs, lease_seconds=5, poll_seconds=1.0)
    await runtime.start()
    try:
        await wait_for(lambda: _finished_runs(engine, "leaky", 1))
        await wait_for(lambda: _finished_runs(engine, "leaky-value", 1))
    finally:
        await runtime.stop(5)
    for name in ("leaky", "leaky-value"):
        row = await lease(engine, name)
        assert row.failures == 1
        assert row.last_error
        assert secret not in row.last_error
        assert "INSERT" not in row.last_error and "SELECT" not in row.last_error
        assert row.last_error.split(":")[0].endswith("Error")


async def test_stop_is_bounded_and_releases_the_lease_of_a_job_that_ignores_it(
    engine: AsyncEngine,
) -> None:
    started = asyncio.Event()

    async def stubborn(ctx: JobContext) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(3)  # even swallowing the cancellation for a while

    runtime = JobRuntime(engine, [Job("stubborn", 60.0, stubborn)], lease_seconds=30)
    await runtime.start()
    await asyncio.wait_for(started.wait(), 10)
    assert (await lease(engine, "stubborn")).holder == runtime.holder
    t0 = time.monotonic()
    await runtime.stop(0.3)
    assert time.monotonic() - t0 < 2.0  # grace + 1 s for the cancellation, no more
    row = await lease(engine, "stubborn")
    now = datetime.now(UTC)
    assert row.lease_until is not None and row.lease_until <= now  # released, not left to expire
    assert row.next_run_at is not None and row.next_run_at <= now  # due again for others
    assert row.runs == 0  # a run cut short is not counted as done


async def test_stop_lets_a_cooperative_job_finish_its_run(engine: AsyncEngine) -> None:
    started = asyncio.Event()

    async def polite(ctx: JobContext) -> None:
        started.set()
        while await ctx.sleep(0.05):
            pass

    runtime = JobRuntime(engine, [Job("polite", 60.0, polite)], lease_seconds=30)
    await runtime.start()
    await asyncio.wait_for(started.wait(), 10)
    t0 = time.monotonic()
    await runtime.stop(10)
    assert time.monotonic() - t0 < 1.0
    row = await lease(engine, "polite")
    assert (row.runs, row.failures) == (1, 0)
    assert row.lease_until is not None and row.lease_until <= datetime.now(UTC)


async def test_a_run_whose_lease_was_taken_over_is_cancelled(engine: AsyncEngine) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def long_run(ctx: JobContext) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    runtime = JobRuntime(engine, [Job("long", 60.0, long_run)], lease_seconds=1.5)
    await runtime.start()
    try:
        await asyncio.wait_for(started.wait(), 10)
        async with engine.begin() as conn:  # another process took the job (say we were paused)
            await conn.execute(
                update(JobLease)
                .where(JobLease.name == "long")
                .values(holder="thief:1:x", generation=JobLease.generation + 1)
            )
        await asyncio.wait_for(cancelled.wait(), 3)  # noticed at the next renewal (0.5 s)
    finally:
        await runtime.stop(5)
    row = await lease(engine, "long")
    assert row.holder == "thief:1:x"  # the loser wrote nothing over the new holder's row
    assert row.runs == 0


async def test_fence_refuses_the_writes_of_a_holder_that_lost_its_lease(
    engine: AsyncEngine,
) -> None:
    started, stolen = asyncio.Event(), asyncio.Event()
    outcome: list[str] = []

    async def writer(ctx: JobContext) -> None:
        started.set()
        await stolen.wait()
        async with ctx.sessionmaker() as session:
            await session.execute(text("INSERT INTO job_probe VALUES ('late', 0, 0)"))
            try:
                await ctx.fence(session)
            except LeaseLost:
                outcome.append("lost")
                raise
            await session.commit()

    runtime = JobRuntime(engine, [Job("fenced", 60.0, writer)], lease_seconds=60)
    await runtime.start()
    try:
        await asyncio.wait_for(started.wait(), 10)
        async with engine.begin() as conn:
            await conn.execute(
                update(JobLease)
                .where(JobLease.name == "fenced")
                .values(holder="thief:1:x", generation=JobLease.generation + 1)
            )
        stolen.set()
        await wait_for(lambda: _true(outcome))
    finally:
        await runtime.stop(5)
    assert outcome == ["lost"]
    assert await probe_runs(engine) == []  # the late write was rolled back
    row = await lease(engine, "fenced")
    assert (row.holder, row.runs, row.failures) == ("thief:1:x", 0, 0)


async def _true(values: list[str]) -> bool:
    return bool(values)


def test_bad_job_definitions_are_refused() -> None:
    async def nothing(ctx: JobContext) -> None:
        return None

    for bad in (
        {"name": "Has Spaces", "interval": 1.0},
        {"name": "x" * 101, "interval": 1.0},
        {"name": "ok", "interval": -1.0},
        {"name": "ok", "interval": 1.0, "backoff_base": 0.0},
    ):
        with pytest.raises(ValueError):
            Job(run=nothing, **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duplicate"):
        JobRuntime(create_engine("sqlite+aiosqlite://"), [Job("a", 1, nothing)] * 2)


ROOT = Path(__file__).resolve().parents[2]


async def test_real_processes_never_overlap_and_a_killed_holder_is_taken_over(
    engine: AsyncEngine, db_url: str
) -> None:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.core.jobs_probe",
            db_url,
            "1.5",
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line.startswith(b"started"), line
        await asyncio.sleep(2.5)
        holder = (await lease(engine, "probe")).holder
        assert holder is not None
        victim = next(p for p in procs if p.pid == int(holder.split(":")[-2]))
        survivor = next(p for p in procs if p is not victim)
        victim.kill()  # SIGKILL: no chance to release its lease
        killed_at = time.time()
        await victim.wait()
        await wait_for(lambda: _runs_after(engine, killed_at), within=15)
        survivor.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(survivor.wait(), 15) == 0
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    runs = await probe_runs(engine)
    assert overlaps(runs) == []
    after = sorted(r[1] for r in runs if r[1] >= killed_at)
    # Taken over within the dead lease's 1.5 s plus one poll (and this loaded machine's slack).
    assert after and after[0] - killed_at < 5.0
    assert {r[0] for r in runs if r[1] >= killed_at} == {holder_of(survivor, runs)}


async def _runs_after(engine: AsyncEngine, moment: float) -> bool:
    return any(r[1] >= moment for r in await probe_runs(engine))


def holder_of(proc: asyncio.subprocess.Process, runs: list[tuple[str, float, float]]) -> str:
    return next(r[0] for r in runs if int(r[0].split(":")[-2]) == proc.pid)
