"""The group-commit writer: one background task storing queued events, many requests per
commit. The request fails closed (RecordingFailed → 503) when its event cannot be stored."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from audit_service.audit_log import repository

log = logging.getLogger(__name__)


class RecordingFailed(Exception):
    """The event could not be made durable; the request must fail closed."""


class GroupCommitWriter:
    """One background task storing queued events; concurrent requests share one commit.

    No timer: while one batch commits, the next accumulates, so batches grow with load and a
    lone request is written at once.
    """

    def __init__(self, engine: AsyncEngine, *, max_batch: int = 1000, timeout: float = 10.0):
        self._engine = engine
        self._max_batch = max_batch
        self._timeout = timeout
        self._queue: asyncio.Queue[tuple[dict[str, Any], asyncio.Future[None]] | None] = (
            asyncio.Queue()
        )
        self._task: asyncio.Task[None] | None = None
        self._conn: AsyncConnection | None = None
        self.batches = 0
        self.events = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-group-commit")

    async def stop(self) -> None:
        """Write whatever is queued, then stop."""
        if self._task is None:
            return
        self._queue.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        await self._drop_connection()

    async def write(self, row: dict[str, Any]) -> None:
        if self._task is None or self._task.done():
            raise RecordingFailed("recorder is not running")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((row, future))
        try:
            await asyncio.wait_for(asyncio.shield(future), self._timeout)
        except TimeoutError as exc:
            raise RecordingFailed("recorder timed out") from exc

    async def _run(self) -> None:
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
            await self._flush(batch)

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

    async def _store(self, rows: list[dict[str, Any]]) -> None:
        for attempt in (1, 2):
            conn = await self._connection()
            try:
                async with conn.begin():
                    await repository.insert_events(conn, rows)
                return
            except DBAPIError as exc:
                await self._drop_connection()
                # The kept connection died (database restart, idle timeout): retry once on a
                # new one, as the pool's pre-ping would have. Should the lost batch have been
                # committed after all, the unique event_id makes the retry fail, not double.
                if attempt == 2 or not exc.connection_invalidated:
                    raise
            except BaseException:
                await self._drop_connection()
                raise

    async def _flush(self, batch: list[tuple[dict[str, Any], asyncio.Future[None]]]) -> None:
        try:
            await self._store([row for row, _ in batch])
        except Exception as exc:
            log.error(
                "audit writer could not store %d event(s): %s", len(batch), type(exc).__name__
            )
            for _, future in batch:
                if not future.done():
                    future.set_exception(RecordingFailed(str(type(exc).__name__)))
            return
        self.batches += 1
        self.events += len(batch)
        for _, future in batch:
            if not future.done():
                future.set_result(None)
