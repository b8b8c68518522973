"""A process's copy of rarely-changing rows (users, API keys, revoked tokens, action schemas,
the actions each source uses), dropped the moment any process changes them.

Why: an authenticated read spent about half its CPU on `BEGIN`, one `SELECT` of the user and
`ROLLBACK` (bench/request_path.py, docs/performance.md "Request path"), and a posted event
four more round trips for its key, schema and known actions — to read rows that change a few
times a day.

How it stays correct (PostgreSQL only; on SQLite nothing is cached):

- Every insert, update or delete of a watched table fires a trigger (migration 0027) that
  sends `NOTIFY audit_cache, '<table>'` in the writing transaction, so it is delivered when,
  and only if, that transaction commits — whichever process, CLI or psql made it.
- Each service process holds one connection that LISTENs (`listen()`); on a notice it drops
  every entry of that table. The process that made the change also drops them itself right
  after its commit (`note_commit`, from the tables core/db notes per session), so its own
  next request never sees the old row.
- A read that races a change cannot store the old row: `stamp()` is taken before the read and
  `put()` refuses to store if a notice arrived in between.
- While the listening connection is down (not yet open, lost, or failing its heartbeat) the
  cache is off and empty: every lookup goes to the database, as without a cache.
- And no entry is served longer than `ttl` seconds after it was read, whatever happens: the
  bound on staleness if notices could silently stop arriving (a network partition that the
  heartbeat has not noticed yet). Normally a change is seen everywhere within milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Hashable
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from audit_service.core.db import tables_written

log = logging.getLogger(__name__)

CHANNEL = "audit_cache"
# The tables whose rows may be cached; each has the notifying trigger (migration 0027).
WATCHED_TABLES = ("user", "api_key", "revoked_token", "action_schema", "source_action")
# Where a session finds its process's cache (async_sessionmaker(info=...)).
SESSION_KEY = "audit_service.cache"
# Bounds the entries per table: a flood of distinct tokens or keys must not grow memory.
MAX_ENTRIES = 10_000


class _Miss:
    pass


MISS: Any = _Miss()


class SharedCache:
    """See the module docstring. Single-threaded (the event loop): no locks needed."""

    def __init__(self, ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._entries: dict[str, dict[Hashable, tuple[float, Any]]] = {
            table: {} for table in WATCHED_TABLES
        }
        # Bumped on every drop of a table: a read stamped before it cannot be stored.
        self._generation = dict.fromkeys(WATCHED_TABLES, 0)
        self._listening = False
        # The server process of the LISTEN connection (as pg_stat_activity shows it).
        self.listener_pid: int | None = None
        self._warned = False
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self._listening and self.ttl > 0

    def get(self, table: str, key: Hashable) -> Any:
        """The cached value, or MISS."""
        if self.enabled:
            found = self._entries[table].get(key)
            if found is not None and self._clock() - found[0] < self.ttl:
                self.hits += 1
                return found[1]
        self.misses += 1
        return MISS

    def stamp(self, table: str) -> tuple[int, float]:
        """Take before reading what you will `put`."""
        return self._generation[table], self._clock()

    def put(self, table: str, key: Hashable, value: Any, stamp: tuple[int, float]) -> None:
        generation, read_at = stamp
        if not self.enabled or generation != self._generation[table]:
            return
        entries = self._entries[table]
        if len(entries) >= MAX_ENTRIES:
            entries.clear()
        entries[key] = (read_at, value)

    def invalidate(self, table: str) -> None:
        if table in self._generation:
            self._generation[table] += 1
            self._entries[table].clear()

    def invalidate_all(self) -> None:
        for table in WATCHED_TABLES:
            self.invalidate(table)

    def _set_listening(self, listening: bool) -> None:
        # Either way nothing read before can be trusted: notices may have been missed.
        self.invalidate_all()
        self._listening = listening

    async def listen(self, engine: AsyncEngine, *, heartbeat: float | None = None) -> None:
        """Hold the LISTEN connection until cancelled, reconnecting after any failure."""
        beat = heartbeat if heartbeat is not None else max(0.2, self.ttl / 2)
        while True:
            try:
                await self._listen_once(engine, beat)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Once per outage, not every second of it (reset once listening again).
                if not self._warned:
                    log.warning("cache: change notices unavailable (caching off): %s", exc)
                self._warned = True
            await asyncio.sleep(1.0)

    async def _listen_once(self, engine: AsyncEngine, beat: float) -> None:
        """One LISTEN connection, until it fails. It comes from the engine's pool (so it has
        the service's connect arguments) and is closed, never returned to the pool."""
        async with engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            lost = asyncio.Event()

            def on_notice(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
                self.invalidate(payload)

            driver.add_termination_listener(lambda _conn: lost.set())
            await driver.add_listener(CHANNEL, on_notice)
            self.listener_pid = driver.get_server_pid()
            self._set_listening(True)
            self._warned = False
            try:
                while True:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), beat)
                    if lost.is_set():
                        return
                    # A connection that cannot answer cannot be hearing notices either.
                    await asyncio.wait_for(driver.fetchval("SELECT 1"), beat)
            finally:
                self._set_listening(False)
                self.listener_pid = None
                with contextlib.suppress(Exception):
                    await conn.invalidate()


def cache_of(session: Session) -> SharedCache | None:
    cache = session.info.get(SESSION_KEY)
    return cache if isinstance(cache, SharedCache) else None


def usable(session: AsyncSession, *tables: str) -> SharedCache | None:
    """The process's cache, if `session` may use it for `tables`: the cache is on, and the
    session has not changed those tables itself (its uncommitted rows must neither be served
    from the cache nor stored in it). Repositories call this around their cached reads."""
    sync = session.sync_session
    cache = cache_of(sync)
    if cache is None or not cache.enabled:
        return None
    wrote = tables_written(sync)
    return None if any(table in wrote for table in tables) else cache


@event.listens_for(Session, "after_commit")
def note_commit(session: Session) -> None:
    """The writing process drops what it changed at once, without waiting for its notice."""
    cache = cache_of(session)
    if cache is not None:
        for table in tables_written(session):
            cache.invalidate(table)
