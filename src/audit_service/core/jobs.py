"""The background job runtime: named periodic jobs, each leased so that any number of
service processes run it exactly once at a time.

A job is an async callable taking a `JobContext`. Each process runs one loop per job:
claim the job's lease row when it is due (one atomic `INSERT … ON CONFLICT DO UPDATE …
WHERE … RETURNING`), run it while a renewer extends the lease, then release the lease and
schedule the next run (`next_run_at`, shared by all processes). An error counts as a
failure, is kept as `last_error` (class and message only) and delays the next run by an
exponential, capped backoff. A holder that dies keeps its lease only until `lease_until`;
then another process takes the job over. Nothing here holds a session-level lock, so it
works behind PgBouncer's transaction pooling.

Jobs must be idempotent (a crash anywhere, then a rerun, gives the same result) and should
watch `ctx.stop`. A job that writes can call `ctx.fence(session)` in its transaction: it
raises `LeaseLost` if another process took the job over meanwhile, and keeps the lease
until that transaction ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import secrets
import socket
import traceback
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from audit_service.core import jobs_repository as repo
from audit_service.core.db import create_sessionmaker
from audit_service.core.jobs_models import ERROR_LENGTH, HOLDER_LENGTH, JOB_NAME_LENGTH

log = logging.getLogger(__name__)

_JOB_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
# Values a database message quotes: "…", '…' and (…) as in `Key (email)=(…)`.
_QUOTED = re.compile(r""""[^"]*"|'[^']*'|\([^()]*\)""")
# user:password@ in any URL-like text (a DSN in a connection error, say).
_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]*@")


class LeaseLost(Exception):
    """Another process took this job over (our lease expired): stop and write nothing."""


@dataclass(frozen=True, slots=True)
class Job:
    """A named periodic job. `interval`: seconds from the end of one run to the next start."""

    name: str
    interval: float
    run: Callable[[JobContext], Coroutine[Any, Any, None]]
    # None: the runtime's lease length. A run may take longer: the lease is renewed.
    lease_seconds: float | None = None
    backoff_base: float = 1.0
    backoff_max: float = 300.0

    def __post_init__(self) -> None:
        if not _JOB_NAME.match(self.name) or len(self.name) > JOB_NAME_LENGTH:
            raise ValueError(f"job name {self.name!r}: lowercase letters, digits, . _ -")
        if self.interval < 0 or self.backoff_base <= 0 or self.backoff_max < self.backoff_base:
            raise ValueError(f"job {self.name!r}: bad interval or backoff")

    def backoff(self, consecutive_failures: int) -> float:
        """Delay after the (n+1)-th failure in a row: base, 2·base, 4·base, … ≤ backoff_max."""
        return float(min(self.backoff_max, self.backoff_base * 2 ** min(consecutive_failures, 32)))


@dataclass(slots=True)
class JobContext:
    """What a running job gets: the database, a stop signal, and a way to report its lag."""

    name: str
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    stop: asyncio.Event
    holder: str
    generation: int
    lag_seconds: float | None = None
    lease_lost: bool = False

    def report_lag(self, seconds: float | None) -> None:
        """How far behind the job is (e.g. the age of the oldest event it has not handled);
        shown at GET /admin/jobs, written with the next lease renewal and at the end."""
        self.lag_seconds = None if seconds is None else max(0.0, float(seconds))

    async def sleep(self, seconds: float) -> bool:
        """Wait, unless asked to stop; False if the job should stop now."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)
        return not self.stop.is_set()

    async def fence(self, bind: AsyncSession | AsyncConnection) -> None:
        """In the job's write transaction, before its commit: raise `LeaseLost` unless the
        lease is still ours; if it is, nobody can take it until this transaction ends."""
        if not await repo.fence(bind, self.name, self.holder, self.generation):
            self.lease_lost = True
            raise LeaseLost(f"job {self.name}: lease taken over by another process")


def describe_error(exc: BaseException) -> str:
    """`Class: message` for `last_error` and logs, with nothing sensitive in it.

    SQLAlchemy's messages quote the statement and its parameters, and database messages quote
    the offending values (`invalid input syntax …: "<value>"`, `Key (email)=(<value>)`): of a
    database error only the driver's class and its first line are kept, quoted values masked.
    URL credentials are masked everywhere; one line, length-capped.
    """
    shown: BaseException = exc
    database = isinstance(exc, StatementError)
    if isinstance(exc, StatementError) and exc.orig is not None:
        # The asyncpg adapter chains the driver's own, more precise error as the cause.
        shown = exc.orig.__cause__ or exc.orig
    lines = str(shown).strip().splitlines()
    message = lines[0] if lines else ""
    if database:
        message = _QUOTED.sub(lambda m: m.group(0)[0] + "…" + m.group(0)[-1], message)
    message = _CREDENTIALS.sub(r"\g<scheme>***@", message)
    text = f"{type(shown).__name__}: {message}" if message else type(shown).__name__
    return text if len(text) <= ERROR_LENGTH else text[: ERROR_LENGTH - 1] + "…"


def default_holder() -> str:
    """host:pid:random — unique per runtime, readable in GET /admin/jobs."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"[-HOLDER_LENGTH:]


@dataclass(eq=False)
class JobRuntime:
    """Runs `jobs` in this process until `stop()`; safe to run in any number of processes."""

    engine: AsyncEngine
    jobs: Sequence[Job]
    lease_seconds: float = 30.0
    # How often a process looks again at a job another process holds (takeover latency is
    # at most the lease's remaining time plus this).
    poll_seconds: float = 5.0
    holder: str = field(default_factory=default_holder)
    _sessionmaker: async_sessionmaker[AsyncSession] = field(init=False)
    _stopping: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(init=False, default_factory=list)
    _running: dict[str, JobContext] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        names = [j.name for j in self.jobs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate job names in {names}")
        if self.lease_seconds <= 0 or self.poll_seconds <= 0:
            raise ValueError("lease_seconds and poll_seconds must be positive")
        self._sessionmaker = create_sessionmaker(self.engine)

    async def start(self) -> None:
        for job in self.jobs:
            try:
                async with self.engine.begin() as conn:
                    await repo.register(conn, job.name, job.interval)
            except Exception as exc:  # the loop retries; start-up must not fail on it
                log.warning("job %s: cannot register: %s", job.name, describe_error(exc))
            self._tasks.append(asyncio.create_task(self._loop(job), name=f"job-loop:{job.name}"))
        log.info("job runtime %s started: %s", self.holder, ", ".join(j.name for j in self.jobs))

    async def stop(self, grace: float = 10.0) -> None:
        """Ask every job to stop, wait at most `grace` seconds, cancel what is left, and
        release this process's leases so another process can resume at once."""
        self._stopping.set()
        for ctx in list(self._running.values()):
            ctx.stop.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("jobs still running after %.1f s were cancelled", grace)
                # A job that swallows cancellation is not waited for beyond this.
                await asyncio.wait(pending, timeout=1.0)
        self._tasks.clear()
        try:
            async with self.engine.begin() as conn:
                await repo.release_all(conn, self.holder)
        except Exception as exc:  # the leases expire by themselves
            log.warning(
                "job runtime %s: cannot release leases: %s", self.holder, describe_error(exc)
            )

    # --- one job's loop --------------------------------------------------------------------

    def _lease(self, job: Job) -> timedelta:
        return timedelta(seconds=job.lease_seconds or self.lease_seconds)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=max(0.0, seconds))

    async def _loop(self, job: Job) -> None:
        while not self._stopping.is_set():
            try:
                async with self.engine.begin() as conn:
                    claim = await repo.claim(
                        conn, job.name, self.holder, job.interval, self._lease(job)
                    )
                    wait = None if claim else await self._until_due(conn, job)
            except Exception as exc:  # database away: try again later, never crash the loop
                log.warning("job %s: cannot claim its lease: %s", job.name, describe_error(exc))
                await self._pause(self.poll_seconds)
                continue
            if claim is None:
                assert wait is not None
                await self._pause(wait)
                continue
            await self._run_once(job, claim)

    async def _until_due(self, conn: AsyncConnection, job: Job) -> float:
        """Seconds until the job is worth claiming again (by the database's clock)."""
        state = await repo.state(conn, job.name)
        due = 0.0
        if state.next_run_at is not None:
            due = (state.next_run_at - state.now).total_seconds()
        if state.lease_until is not None and state.lease_until > state.now:
            # Held by another process: look again at expiry, or sooner (it may finish early
            # and set a new next_run_at).
            due = max(due, min((state.lease_until - state.now).total_seconds(), self.poll_seconds))
        # Jitter, so processes started together do not claim in lockstep forever.
        return min(max(due, 0.0), self.poll_seconds) * random.uniform(1.0, 1.1) + 0.005  # noqa: S311

    async def _run_once(self, job: Job, claim: repo.Claim) -> None:
        ctx = JobContext(
            name=job.name,
            engine=self.engine,
            sessionmaker=self._sessionmaker,
            stop=asyncio.Event(),
            holder=self.holder,
            generation=claim.generation,
        )
        if self._stopping.is_set():
            ctx.stop.set()
        self._running[job.name] = ctx
        run = asyncio.create_task(job.run(ctx), name=f"job:{job.name}")
        keeper = asyncio.create_task(self._keep_lease(job, ctx, run))
        try:
            await asyncio.wait({run})
        except asyncio.CancelledError:  # stop() ran out of patience
            run.cancel()
            raise
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            self._running.pop(job.name, None)

        if ctx.lease_lost:
            log.warning("job %s: lease lost to another process; run abandoned", job.name)
            return
        if run.cancelled():
            return  # stopped mid-run: stop() releases the lease without counting the run
        exc = run.exception()
        error = None if exc is None else describe_error(exc)
        if exc is not None:
            delay = job.backoff(claim.consecutive_failures)
            log.error(
                "job %s failed (%d in a row), next try in %.1f s: %s\n%s",
                job.name,
                claim.consecutive_failures + 1,
                delay,
                error,
                # Frames only: the exception's own text may hold statement parameters.
                "".join(traceback.format_tb(exc.__traceback__)),
            )
        else:
            delay = job.interval
        try:
            async with self.engine.begin() as conn:
                await repo.finish(
                    conn,
                    job.name,
                    self.holder,
                    ctx.generation,
                    next_run_in=timedelta(seconds=delay),
                    error=error,
                    lag=ctx.lag_seconds,
                )
        except Exception as exc2:  # the lease expires by itself; the run is just not counted
            log.warning("job %s: cannot record its run: %s", job.name, describe_error(exc2))
            await self._pause(min(self.poll_seconds, delay))

    async def _keep_lease(self, job: Job, ctx: JobContext, run: asyncio.Task[None]) -> None:
        """Renew the lease every third of its length while the job runs; if it was lost,
        cancel the run (another process may be running the job now)."""
        lease = self._lease(job)
        every = lease.total_seconds() / 3
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        while True:
            await asyncio.sleep(every)
            try:
                async with self.engine.begin() as conn:
                    ours = await repo.renew(
                        conn, job.name, self.holder, ctx.generation, lease, ctx.lag_seconds
                    )
                if ours:
                    renewed = loop.time()
                    continue
            except Exception as exc:
                log.warning("job %s: cannot renew its lease: %s", job.name, describe_error(exc))
                if loop.time() - renewed < lease.total_seconds():
                    continue  # not expired yet: keep trying
            ctx.lease_lost = True
            ctx.stop.set()
            run.cancel()
            return


async def run_until(
    engine: AsyncEngine,
    jobs: Sequence[Job],
    stop: asyncio.Event,
    *,
    lease_seconds: float = 30.0,
    stop_timeout: float = 10.0,
) -> None:
    """Run `jobs` until `stop` is set (a worker process: set it from SIGTERM/SIGINT)."""
    runtime = JobRuntime(engine, jobs, lease_seconds=lease_seconds)
    await runtime.start()
    try:
        await stop.wait()
    finally:
        await runtime.stop(stop_timeout)
