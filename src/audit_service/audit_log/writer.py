"""The group-commit writer: one background task storing queued events, many requests per
commit. The request fails closed (RecordingFailed → 503) when its event cannot be stored.

Three rules keep the record truthful:

- Failures are isolated. A batch the database refuses is split in halves and each half
  retried, down to single rows, so only a row that cannot be stored fails (with its own
  request); everyone else sharing the batch is recorded normally. An outage (connection
  refused or lost) fails the batch at once: splitting cannot help, and would only multiply
  connection attempts against a database that is down.
- A request that gave up waiting is never recorded later. Its row is skipped when a batch is
  assembled. A row already in flight when its waiter's time runs out is *not* abandoned: the
  waiter keeps waiting for that store attempt (itself bounded by the same timeout), because
  only its outcome tells whether the record says "done" — so the client is answered with
  what the database holds, never 503 for a row that was committed. The alternative, writing
  a compensating "this request failed" event, would still leave a success row in an
  append-only table.
- An ambiguous failure (the connection died or the attempt timed out mid-commit) is checked,
  not guessed: the rows' event_ids are looked up on a new connection; rows found were
  committed and succeed, only the rest are retried (once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from audit_service.audit_log import repository
from audit_service.core.db import describe_error, is_outage

log = logging.getLogger(__name__)

# (rows in the attempt, seconds it took, whether it stored them): for metrics.
BatchHook = Callable[[int, float, bool], None]


class RecordingFailed(Exception):
    """The event could not be made durable; the request must fail closed."""


@dataclass(eq=False, slots=True)
class _Pending:
    row: dict[str, Any]
    future: asyncio.Future[None]
    in_flight: bool = False
    abandoned: bool = False


class GroupCommitWriter:
    """One background task storing queued events; concurrent requests share one commit.

    No timer: while one batch commits, the next accumulates, so batches grow with load and a
    lone request is written at once.

    `batches` counts stored batches (store attempts that succeeded), `events` stored rows,
    `failures` rows that could not be stored (each answered 503).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_batch: int = 1000,
        timeout: float = 10.0,
        stop_timeout: float = 30.0,
        on_batch: BatchHook | None = None,
    ):
        self._engine = engine
        self._max_batch = max_batch
        self._timeout = timeout
        self._stop_timeout = stop_timeout
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._conn: AsyncConnection | None = None
        self._stopping = False
        self._in_flight: list[_Pending] = []
        self.batches = 0
        self.events = 0
        self.failures = 0

    @property
    def queue_depth(self) -> int:
        """Rows waiting for a batch (during a stop, its end marker counts as one)."""
        return self._queue.qsize()

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="audit-group-commit")

    async def stop(self, within: float | None = None) -> None:
        """Write whatever is queued, then stop; give up after `within` seconds (default
        `stop_timeout`). Rows still queued then, or written after stop began, fail with
        RecordingFailed: nothing waits forever on a writer that is gone."""
        if self._task is None:
            return
        self._stopping = True
        self._queue.put_nowait(None)
        task, self._task = self._task, None
        limit = self._stop_timeout if within is None else within
        try:
            await asyncio.wait_for(asyncio.shield(task), limit)
        except TimeoutError:
            log.error("audit writer did not finish within %.1f s; stopping it", limit)
            task.cancel()
            # Cancelling interrupts the insert; dropping its connection is bounded too.
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, 1.0)
        # Rows of an interrupted batch, and rows queued behind the end marker, resolve now.
        self._fail(self._in_flight, "recorder stopped")
        self._fail_queued("recorder stopped")
        await self._drop_connection()

    async def write(self, row: dict[str, Any]) -> None:
        if self._stopping or self._task is None or self._task.done():
            raise RecordingFailed("recorder is not running")
        item = _Pending(row, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(item)
        try:
            # asyncio.timeout, not wait_for: no extra waiter future and callbacks per request
            # (wait_for was ~2 % of a cached `GET /me`). The shield keeps the timeout from
            # cancelling the item's future, which the batch still resolves.
            async with asyncio.timeout(self._timeout):
                await asyncio.shield(item.future)
        except TimeoutError as exc:
            if not item.in_flight:
                item.abandoned = True  # never written: batch assembly skips it
                self.failures += 1
                raise RecordingFailed("recorder timed out before the event was written") from exc
            # Being stored right now: its outcome decides the answer (see module docstring).
            await item.future

    def _fail(self, items: list[_Pending], reason: str) -> None:
        for item in items:
            if not item.future.done():
                self.failures += 1
                item.future.set_exception(RecordingFailed(reason))

    def _fail_queued(self, reason: str) -> None:
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None and not item.abandoned:
                self._fail([item], reason)

    async def _run(self) -> None:
        try:
            stopping = False
            while not stopping:
                first = await self._queue.get()
                if first is None:
                    break
                batch = [first]
                while len(batch) < self._max_batch and not self._queue.empty():
                    item = self._queue.get_nowait()
                    if item is None:
                        stopping = True
                        break
                    batch.append(item)
                live = [item for item in batch if not item.abandoned and not item.future.done()]
                for item in live:
                    item.in_flight = True
                if live:
                    self._in_flight = live
                    await self._flush(live)
                    self._in_flight = []
        finally:
            # Rows queued behind the end marker (or left by a cancelled run) resolve now.
            self._fail_queued("recorder stopped")

    async def _connection(self) -> AsyncConnection:
        """The writer's own connection, kept across batches: no pool wait, no pre-ping."""
        if self._conn is None:
            conn = await self._engine.connect()
            if conn.dialect.name == "postgresql":
                # A batch is one executemany: one asyncpg pipeline ending in one Sync, so one
                # implicit transaction, atomic and committed when it returns. No BEGIN and
                # COMMIT round trips. (SQLite keeps a real transaction.)
                await conn.execution_options(isolation_level="AUTOCOMMIT")
            self._conn = conn
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()
                await conn.close()

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        conn = await self._connection()
        try:
            async with asyncio.timeout(self._timeout), conn.begin():
                await repository.insert_events(conn, rows)
        except BaseException:
            await self._drop_connection()
            raise

    async def _stored_ids(self, rows: list[dict[str, Any]]) -> set[Any]:
        async with asyncio.timeout(self._timeout), self._engine.connect() as conn:
            return await repository.existing_event_ids(conn, [row["event_id"] for row in rows])

    async def _store(self, rows: list[dict[str, Any]]) -> None:
        """Store all `rows` or raise. After an ambiguous failure, rows that did get committed
        count as stored and only the others are retried, once, on a new connection."""
        pending = rows
        for attempt in (1, 2):
            try:
                await self._insert(pending)
                return
            except Exception as exc:
                if not is_outage(exc):
                    raise
                stored = await self._stored_ids(pending)  # raises if still unreachable
                pending = [row for row in pending if row["event_id"] not in stored]
                if not pending:
                    return
                if attempt == 2:
                    raise

    async def _flush(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            await self._store([item.row for item in batch])
        except Exception as exc:
            self._report(len(batch), started, ok=False)
            if len(batch) > 1 and not is_outage(exc):
                # A row the database refuses: find it (them) by halves.
                middle = len(batch) // 2
                await self._flush(batch[:middle])
                await self._flush(batch[middle:])
                return
            log.error(
                "audit writer could not store %d event(s): %s", len(batch), describe_error(exc)
            )
            self.failures += len(batch)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(RecordingFailed(describe_error(exc)))
            return
        self._report(len(batch), started, ok=True)
        self.batches += 1
        self.events += len(batch)
        for item in batch:
            if not item.future.done():
                item.future.set_result(None)

    def _report(self, rows: int, started: float, *, ok: bool) -> None:
        if self._on_batch is not None:
            try:
                self._on_batch(rows, time.perf_counter() - started, ok)
            except Exception:  # a metrics bug must not fail the record
                log.exception("audit writer on_batch hook failed")
