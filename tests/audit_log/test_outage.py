"""A database outage is a 503 to retry, never a 500 or a traceback; and a replaced response
never leaks its internal exception to the server."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from audit_service.audit_log.models import AuditEvent
from audit_service.core import migrations
from tests.audit_log.test_real_server import _serve
from tests.audit_log.test_write_path import POISON, _allow_marked_rows, _refuse_marked_rows
from tests.conftest import ADMIN_PASSWORD, Harness
from tests.pg import TempPostgres


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def attach(self) -> None:
        logging.getLogger("uvicorn.error").addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def server_log() -> Iterator[_Lines]:
    """What uvicorn logs (its loggers do not propagate to pytest's capture). Call `attach()`
    once the server runs: uvicorn's logging setup replaces the handlers of its loggers."""
    handler = _Lines()
    try:
        yield handler
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)


@pytest.fixture
def own_postgres() -> Iterator[TempPostgres]:
    """A server of this test's own, so restarting it disturbs no other test."""
    server = TempPostgres()
    try:
        url = server.start()
        migrations.upgrade(url)
        # The test server runs with synchronous_commit=off (speed), which lets an immediate
        # shutdown lose acknowledged commits; a real deployment's durability is what is
        # tested here.
        server._run(
            str(server.bin / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(server.port),
            "-U",
            "postgres",
            "-c",
            # Per database: outranks the server's command-line -c (ALTER SYSTEM would not).
            "ALTER DATABASE postgres SET synchronous_commit = on",
        )
        yield server
    finally:
        server.stop()


async def test_database_restart_under_load_gives_503s_not_500s(
    own_postgres: TempPostgres, server_log: _Lines
) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{own_postgres.port}/postgres"
    results: list[tuple[int, str, str | None]] = []
    dropped: list[str] = []
    restarted = asyncio.Event()
    debug: list[Any] = []
    restart_at: list[float] = []
    async for app, base in _serve(url):
        server_log.attach()
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
            r = await client.post("/login", json={"username": "admin", "password": ADMIN_PASSWORD})
            auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
            deadline = time.monotonic() + 60

            async def worker(i: int, auth: dict[str, str], deadline: float) -> None:
                after = 0
                path = "/me" if i % 2 else "/admin/activity?page_size=10"
                while time.monotonic() < deadline and after < 15:
                    try:
                        resp = await client.get(path, headers=auth)
                    except httpx.TransportError as exc:
                        dropped.append(repr(exc))
                        continue
                    debug.append((path, resp.headers.get("x-request-id"), time.monotonic()))
                    results.append(
                        (
                            resp.status_code,
                            resp.headers.get("x-request-id", ""),
                            resp.headers.get("retry-after"),
                        )
                    )
                    if resp.status_code == 503:
                        assert resp.headers["content-type"] == "application/problem+json"
                        assert "Traceback" not in resp.text
                    if restarted.is_set():
                        after += resp.status_code == 200
                        if resp.status_code != 200:
                            await asyncio.sleep(0.05)

            async def restart() -> None:
                await asyncio.sleep(1.0)
                restart_at.append(time.monotonic())
                await asyncio.to_thread(
                    own_postgres._run,
                    str(own_postgres.bin / "pg_ctl"),
                    "-D",
                    str(own_postgres.data),
                    "-m",
                    "immediate",
                    "-w",
                    # Without -l the new postmaster would hold the captured pipes open.
                    "-l",
                    str(own_postgres.root / "server.log"),
                    "restart",
                )
                restart_at.append(time.monotonic())
                restarted.set()

            await asyncio.gather(restart(), *(worker(i, auth, deadline) for i in range(12)))
        statuses = Counter(status for status, _, _ in results)
        assert statuses[500] == 0, statuses
        assert set(statuses) <= {200, 503}, statuses
        assert statuses[200] > 0
        assert all(retry for status, _, retry in results if status == 503)
        assert dropped == []
        tracebacks = [line for line in server_log.lines if "Exception in ASGI application" in line]
        assert tracebacks == []
        # What held before must still hold: every 2xx has its row, and no row is doubled.
        ok_ids = [rid for status, rid, _ in results if status == 200]
        async with app.state.engine.connect() as conn:
            stored = await conn.scalar(
                select(func.count()).where(AuditEvent.request_id.in_(ok_ids))
            )
            doubled = await conn.scalar(
                text(
                    "SELECT count(*) FROM (SELECT request_id FROM audit_event "
                    "WHERE request_id IS NOT NULL GROUP BY request_id HAVING count(*) > 1) d"
                )
            )
            found = set(
                (
                    await conn.execute(
                        select(AuditEvent.request_id).where(AuditEvent.request_id.in_(ok_ids))
                    )
                ).scalars()
            )
        missing = [r for r in debug if r[1] in set(ok_ids) - found]
        assert stored == len(ok_ids), (missing, restart_at)
        assert doubled == 0


async def test_refused_database_at_authentication_is_503(pg_only_url: str) -> None:
    """The pool cannot reach the database at all (connection refused) while a request
    authenticates: 503 problem+json with Retry-After, not an unhandled 500."""
    dead = "postgresql+asyncpg://postgres@127.0.0.1:1/postgres"
    async for app, base in _serve(pg_only_url):
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            r = await client.post("/login", json={"username": "admin", "password": ADMIN_PASSWORD})
            auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
            from audit_service.core.db import create_engine, create_sessionmaker

            live = app.state.recorder.sessionmaker
            dead_engine = create_engine(dead)
            app.state.recorder.sessionmaker = create_sessionmaker(dead_engine)
            try:
                r = await client.get("/me", headers=auth)
            finally:
                app.state.recorder.sessionmaker = live
                await dead_engine.dispose()
            assert r.status_code == 503, r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert r.headers["retry-after"]
            assert r.json()["request_id"] == r.headers["x-request-id"]
        # Recorded (the writer's own connection still reaches the database).
        async with app.state.sessionmaker() as session:
            event = await session.scalar(
                select(AuditEvent).where(AuditEvent.request_id == r.headers["x-request-id"])
            )
        assert event is not None
        assert (event.action, event.status_code, event.outcome) == (
            "system.unavailable",
            503,
            "error",
        )


async def test_a_replaced_streaming_response_leaks_nothing_to_the_server(
    pg_only_url: str, server_log: _Lines
) -> None:
    """An export whose record cannot be stored: the client gets a complete 503, the export
    stops, and uvicorn sees no exception (before: "Exception in ASGI application")."""
    async for app, base in _serve(pg_only_url):
        server_log.attach()
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            r = await client.post("/login", json={"username": "admin", "password": ADMIN_PASSWORD})
            auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
            h: Any = Harness(app, client)
            await _refuse_marked_rows(h)
            try:
                for fmt in ("csv", "ndjson", "json"):
                    r = await client.get(
                        f"/admin/activity/export?format={fmt}",
                        headers={**auth, "User-Agent": POISON},
                    )
                    assert r.status_code == 503 and r.headers["retry-after"]
            finally:
                await _allow_marked_rows(h)
            assert (await client.get("/me", headers=auth)).status_code == 200
        await asyncio.sleep(0.1)
    assert [line for line in server_log.lines if "Exception in ASGI" in line] == []
