"""The write path under stress: values fitted to columns, failures isolated to their row,
timeouts that tell the truth, a bounded stop, the metrics hook, header limits."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from audit_service.audit_log.context import column_widths, system_event
from audit_service.audit_log.models import AuditEvent
from audit_service.audit_log.writer import GroupCommitWriter, RecordingFailed
from audit_service.core.db import create_engine
from audit_service.kit.net import ip_key, parse_ip
from tests.audit_log.test_real_server import _serve
from tests.conftest import ADMIN_PASSWORD, CLIENT_IP, Harness, make_settings, start_harness

POISON = "poison-user-agent/1"


async def _refuse_marked_rows(h: Harness) -> None:
    """The database refuses only rows carrying the marker user agent: a row that cannot be
    stored, among rows that can."""
    async with h.admin() as conn:  # DDL: not the service's role
        if h.engine.dialect.name == "postgresql":
            await conn.execute(
                text(
                    "CREATE OR REPLACE FUNCTION test_refuse_marked() RETURNS trigger "
                    "LANGUAGE plpgsql AS "
                    f"$$ BEGIN IF NEW.user_agent = '{POISON}' THEN "
                    "RAISE EXCEPTION 'marked row refused (test)'; END IF; RETURN NEW; END $$"
                )
            )
            await conn.execute(
                text(
                    "CREATE TRIGGER test_refuse_marked BEFORE INSERT ON audit_event "
                    "FOR EACH ROW EXECUTE FUNCTION test_refuse_marked()"
                )
            )
        else:
            await conn.execute(
                text(
                    "CREATE TRIGGER test_refuse_marked BEFORE INSERT ON audit_event "
                    f"WHEN NEW.user_agent = '{POISON}' "
                    "BEGIN SELECT RAISE(ABORT, 'marked row refused (test)'); END"
                )
            )


async def _allow_marked_rows(h: Harness) -> None:
    async with h.admin() as conn:
        if h.engine.dialect.name == "postgresql":
            await conn.execute(text("DROP TRIGGER IF EXISTS test_refuse_marked ON audit_event"))
            await conn.execute(text("DROP FUNCTION IF EXISTS test_refuse_marked()"))
        else:
            await conn.execute(text("DROP TRIGGER IF EXISTS test_refuse_marked"))


async def _count(h: Harness, *where: Any) -> int:
    async with h.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(AuditEvent).where(*where)))


async def test_one_unstorable_row_fails_alone_in_a_shared_batch(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    headers = await h.auth()
    writer = h.app.state.recorder.writer
    attempts: list[tuple[int, float, bool]] = []
    writer._on_batch = lambda rows, seconds, ok: attempts.append((rows, seconds, ok))
    failures = writer.failures
    await _refuse_marked_rows(h)

    async def call(i: int) -> httpx.Response:
        ua = POISON if i == 7 else f"fine/{i}"
        return await h.client.get("/me", headers={**headers, "User-Agent": ua})

    try:
        with caplog.at_level(logging.ERROR, logger="audit_service"):
            responses = await asyncio.gather(*(call(i) for i in range(40)))
    finally:
        await _allow_marked_rows(h)
    statuses = [r.status_code for r in responses]
    assert statuses[7] == 503 and responses[7].headers["retry-after"]
    assert statuses[:7] + statuses[8:] == [200] * 39
    ids = [r.headers["x-request-id"] for i, r in enumerate(responses) if i != 7]
    assert await _count(h, AuditEvent.request_id.in_(ids)) == 39
    assert await _count(h, AuditEvent.user_agent == POISON) == 0
    assert writer.failures - failures == 1
    # It really shared a batch: some refused attempt held more than the poisoned row.
    assert any(rows > 1 and not ok for rows, _, ok in attempts), attempts
    assert all(seconds >= 0 for _, seconds, _ in attempts)
    # The log names the cause: class, the database's message and (Postgres) SQLSTATE.
    logged = [r.getMessage() for r in caplog.records if "could not store" in r.getMessage()]
    assert logged and "marked row refused (test)" in logged[0]
    assert "IntegrityError" in logged[0] or "Error" in logged[0]
    if h.engine.dialect.name == "postgresql":
        assert "SQLSTATE P0001" in logged[0]


async def test_long_values_are_fitted_to_their_columns(db_url: str) -> None:
    zone = "fe80::1%" + "z" * 60  # a scoped IPv6 longer than the 45-character column
    async for h in start_harness(make_settings(db_url, trusted_proxies=f"{CLIENT_IP}/32")):
        headers = await h.auth()
        r = await h.client.get(
            "/nowhere/" + "p" * 700, headers={**headers, "X-Forwarded-For": zone}
        )
        assert r.status_code == 404
        event = await h.last_event()
        assert event.request_id == r.headers["x-request-id"]
        assert event.ip == "fe80::1" and event.ip_bytes == ip_key(parse_ip("fe80::1"))
        assert event.path is not None and len(event.path) == column_widths()["path"]
        assert "path" in event.event_metadata["truncated"]
    widths = column_widths()
    assert widths["method"] == 10 and widths["ip"] == 45 and widths["action"] == 100
    row = system_event("x" * 300, "m" * 300, "fine", target_id="t" * 300, target_type="\x00" * 300)
    for name in ("action", "module", "target_id", "target_type"):
        assert len(row[name]) == widths[name], name
    assert "\x00" not in row["target_type"]
    assert sorted(row["metadata"]["truncated"]) == ["action", "module", "target_id", "target_type"]


async def test_eleven_character_methods_among_gets_over_a_socket(pg_only_url: str) -> None:
    """30 GET + 30 `UNSUBSCRIBE /x` at once: before, the long method could not be stored and
    sank every batch it shared (all 60 got 503)."""
    async for app, base in _serve(pg_only_url):
        limits = httpx.Limits(max_connections=60)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
            r = await client.post("/login", json={"username": "admin", "password": ADMIN_PASSWORD})
            auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
            calls = [client.get("/me", headers=auth) for _ in range(30)]
            calls += [client.request("UNSUBSCRIBE", "/x") for _ in range(30)]
            responses = await asyncio.gather(*calls)
        statuses = [r.status_code for r in responses]
        assert statuses[:30] == [200] * 30
        assert set(statuses[30:]) <= {404, 405} and len(statuses[30:]) == 30
        ids = [r.headers["x-request-id"] for r in responses]
        async with app.state.sessionmaker() as session:
            stored = (
                await session.execute(
                    select(AuditEvent.request_id, AuditEvent.method).where(
                        AuditEvent.request_id.in_(ids)
                    )
                )
            ).all()
        assert len(stored) == 60
        methods = sorted({method for _, method in stored})
        assert methods == ["GET", "UNSUBSCRIB"]  # cut to String(10), and marked as cut


@pytest.fixture
async def pg_engine(pg_only_url: str) -> AsyncIterator[Any]:
    engine = create_engine(pg_only_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def locker(pg_admin_url: str) -> AsyncIterator[Any]:
    """The superuser's engine: LOCK TABLE in EXCLUSIVE mode needs a privilege (UPDATE,
    DELETE or TRUNCATE) the service's role does not have on audit_event."""
    engine = create_engine(pg_admin_url)
    yield engine
    await engine.dispose()


async def _stored(engine: Any, rows: list[dict[str, Any]]) -> int:
    async with engine.connect() as conn:
        ids = [row["event_id"] for row in rows]
        return int(
            await conn.scalar(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.event_id.in_(ids))
            )
        )


async def _lock_audit_table(engine: Any) -> tuple[Any, Any]:
    """Another transaction holding a lock that blocks inserts (reads still pass)."""
    conn = await engine.connect()
    transaction = await conn.begin()
    await conn.execute(text("LOCK TABLE audit_event IN EXCLUSIVE MODE"))
    return conn, transaction


async def test_a_request_that_gave_up_is_never_recorded_later(pg_engine: Any, locker: Any) -> None:
    writer = GroupCommitWriter(pg_engine, timeout=0.3)
    writer.start()
    lock, transaction = await _lock_audit_table(locker)
    try:
        first, second = system_event("t.first", "t", "in flight"), system_event("t.q", "t", "q")
        in_flight = asyncio.create_task(writer.write(first))
        await asyncio.sleep(0.05)  # `first` is now being inserted (and blocked)
        started = time.perf_counter()
        with pytest.raises(RecordingFailed):
            await writer.write(second)  # queued behind it: gives up after its timeout
        assert time.perf_counter() - started < 1.0
        with pytest.raises(RecordingFailed):
            await in_flight  # its own attempts timed out: answered with the truth (failed)
    finally:
        await transaction.rollback()
        await lock.close()
    third = system_event("t.third", "t", "after")
    await writer.write(third)  # the writer recovered
    await asyncio.sleep(0.3)
    await writer.stop()
    assert await _stored(pg_engine, [third]) == 1
    # Neither failed row was written afterwards, when the database became writable again.
    assert await _stored(pg_engine, [first, second]) == 0
    assert writer.failures == 2 and writer.events == 1


async def test_a_row_in_flight_past_the_timeout_is_answered_by_its_outcome(
    pg_engine: Any, locker: Any
) -> None:
    writer = GroupCommitWriter(pg_engine, timeout=0.3)
    writer.start()
    lock, transaction = await _lock_audit_table(locker)
    row = system_event("t.slow", "t", "slow commit")
    in_flight = asyncio.create_task(writer.write(row))
    await asyncio.sleep(0.4)  # past the waiter's timeout: the first attempt was cancelled
    await transaction.rollback()
    await lock.close()
    await in_flight  # success: the retry stored it, and the waiter was told so
    assert await _stored(pg_engine, [row]) == 1
    await writer.stop()


async def test_stop_is_bounded_and_late_rows_resolve(pg_engine: Any, locker: Any) -> None:
    writer = GroupCommitWriter(pg_engine, timeout=30)
    writer.start()
    lock, transaction = await _lock_audit_table(locker)
    try:
        stuck = asyncio.create_task(writer.write(system_event("t.stuck", "t", "blocked")))
        await asyncio.sleep(0.05)
        queued = asyncio.create_task(writer.write(system_event("t.queued", "t", "behind")))
        await asyncio.sleep(0.05)
        assert writer.queue_depth == 1
        started = time.perf_counter()
        await writer.stop(within=0.5)
        assert time.perf_counter() - started < 2.0
        for task in (stuck, queued):
            with pytest.raises(RecordingFailed):
                await asyncio.wait_for(task, 2)
        with pytest.raises(RecordingFailed):
            await asyncio.wait_for(writer.write(system_event("t.late", "t", "late")), 1)
    finally:
        await transaction.rollback()
        await lock.close()


async def test_the_metrics_hook_sees_every_store_attempt(pg_engine: Any) -> None:
    seen: list[tuple[int, float, bool]] = []
    writer = GroupCommitWriter(pg_engine, on_batch=lambda n, s, ok: seen.append((n, s, ok)))
    writer.start()
    rows = [system_event("t.m", "t", str(i)) for i in range(25)]
    await asyncio.gather(*(writer.write(row) for row in rows))
    await writer.stop()
    assert sum(n for n, _, ok in seen if ok) == 25 and all(ok for *_, ok in seen)
    assert (writer.events, writer.failures, writer.batches) == (25, 0, len(seen))
    assert writer.queue_depth == 0


async def test_enormous_headers_are_refused_with_431_and_recorded(h: Harness) -> None:
    headers = await h.auth()
    r = await h.client.get("/me", headers={**headers, "User-Agent": "u" * (1024 * 1024)})
    assert r.status_code == 431
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["request_id"] == r.headers["x-request-id"]
    event = await h.last_event()
    assert (event.action, event.status_code, event.request_id) == (
        "http.headers_too_large",
        431,
        r.headers["x-request-id"],
    )
    assert event.user_agent is not None and len(event.user_agent) == 512
    assert (await h.client.get("/me", headers=headers)).status_code == 200
