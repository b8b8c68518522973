"""The client library against the real app: in-process (async) and over a socket (sync).

Failures are real too: small ASGI wrappers in front of the app answer 5xx/429 for the first
requests, or let the app store the events and then lose its response (as a proxy might), and
one server only starts listening after the client has begun to retry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from audit_service.client import (
    AsyncAuditClient,
    AuditClient,
    AuditError,
    AuditRejected,
    AuditUnavailable,
    RetryPolicy,
    prepare,
)
from audit_service.main import create_app
from tests.conftest import Harness, make_settings, start_harness
from tests.ingestion.helpers import ingested, make_key
from tests.pg import free_port

FAST = RetryPolicy(max_attempts=6, base_delay=0.01, max_delay=0.05)


def _ingesting(scope: Scope) -> bool:
    return scope["type"] == "http" and scope["path"].startswith("/events")


class FailFirst:
    """Answers the first `n` ingestion requests itself with `status` (the app never sees them)."""

    def __init__(self, app: ASGIApp, n: int, status: int = 503, retry_after: str | None = None):
        self.app, self.n, self.status, self.retry_after = app, n, status, retry_after
        self.failed = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _ingesting(scope) or self.failed >= self.n:
            await self.app(scope, receive, send)
            return
        self.failed += 1
        headers = [(b"content-type", b"application/problem+json")]
        if self.retry_after is not None:
            headers.append((b"retry-after", self.retry_after.encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"title": "try again"}'})


class LoseResponses:
    """The first `n` ingestion requests are fully handled (stored, committed), but the client
    gets a 502 instead of the answer, as from a proxy that dropped it."""

    def __init__(self, app: ASGIApp, n: int):
        self.app, self.n, self.lost = app, n, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _ingesting(scope) or self.lost >= self.n:
            await self.app(scope, receive, send)
            return
        self.lost += 1

        async def swallow(_message: Message) -> None:
            return None

        await self.app(scope, receive, swallow)
        await send({"type": "http.response.start", "status": 502, "headers": []})
        await send({"type": "http.response.body", "body": b"bad gateway"})


def _client(h: Harness, key: str, app: ASGIApp | None = None, **kw: Any) -> AsyncAuditClient:
    transport = httpx.ASGITransport(app=app or h.app)
    return AsyncAuditClient("http://testserver", key, transport=transport, retry=FAST, **kw)


def ev(i: int = 0, **extra: Any) -> dict[str, Any]:
    return {"action": "exam.started", "actor_id": f"student-{i}", **extra}


async def test_send_and_send_batch(h: Harness) -> None:
    key = await make_key(h)
    async with _client(h, key) as client:
        one = await client.send(ev(metadata={"answers": 3}), target_id="exam-1")
        assert one.duplicate is False and len(one.idempotency_key) == 32
        # More than the service takes in one request: split, results still in input order.
        batch = await client.send_batch([ev(i) for i in range(2_500)])
        assert (batch.inserted, batch.duplicates, len(batch.results)) == (2_500, 0, 2_500)
        assert client.attempts == 1 + 3
    stored = {e.id: e for e in await ingested(h)}
    assert len(stored) == 2_501
    assert stored[one.id].target_id == "exam-1" and stored[one.id].event_metadata["answers"] == 3
    assert [stored[r.id].actor_id for r in batch.results[:3]] == [
        "student-0",
        "student-1",
        "student-2",
    ]
    assert all(stored[r.id].idempotency_key == r.idempotency_key for r in batch.results)


async def test_send_batch_splits_by_size_too(h: Harness) -> None:
    key = await make_key(h)
    big = [ev(i, description="x" * 9_000) for i in range(600)]  # ~5.5 MB as one request
    async with _client(h, key) as client:
        result = await client.send_batch(big)
    assert client.attempts == 2 and result.inserted == 600
    assert [r.idempotency_key for r in result.results] == [
        e.idempotency_key for e in sorted(await ingested(h), key=lambda e: e.id)
    ]


def test_prepare_assigns_a_key_once_and_formats_times() -> None:
    when = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    first = prepare(ev(), occurred_at=when)
    assert first["occurred_at"] == "2026-03-01T09:30:00+00:00"
    assert prepare(first)["idempotency_key"] == first["idempotency_key"]
    assert prepare(ev())["idempotency_key"] != prepare(ev())["idempotency_key"]
    with pytest.raises(ValueError, match="timezone-aware"):
        prepare(ev(), occurred_at=datetime(2026, 3, 1, 9, 30))


async def test_retries_server_errors(h: Harness) -> None:
    key = await make_key(h)
    flaky = FailFirst(h.app, 2, status=503)
    async with _client(h, key, flaky) as client:
        result = await client.send(ev())
    assert (flaky.failed, client.attempts, result.duplicate) == (2, 3, False)
    assert len(await ingested(h)) == 1


async def test_a_lost_response_is_retried_without_a_duplicate(h: Harness) -> None:
    key = await make_key(h)
    lossy = LoseResponses(h.app, 1)
    async with _client(h, key, lossy) as client:
        one = await client.send(ev())
        lossy.lost = 0  # and lose the batch's first answer too
        batch = await client.send_batch([ev(i) for i in range(10)])
    assert client.attempts == 4
    # Each was stored by its first attempt; the retry got the stored ids back.
    assert one.duplicate is True and (batch.inserted, batch.duplicates) == (0, 10)
    stored = await ingested(h)
    assert len(stored) == 11
    assert {e.id for e in stored} == {one.id, *(r.id for r in batch.results)}


async def test_honours_retry_after(h: Harness) -> None:
    key = await make_key(h)
    busy = FailFirst(h.app, 1, status=429, retry_after="1")
    async with _client(h, key, busy) as client:
        started = time.monotonic()
        await client.send(ev())
        waited = time.monotonic() - started
    assert waited >= 0.95  # the backoff alone would have waited at most 0.05 s
    assert client.attempts == 2


@pytest.fixture
async def limited(db_url: str) -> AsyncIterator[Harness]:
    async for harness in start_harness(make_settings(db_url, ingest_rate_limit="2/second")):
        yield harness


async def test_rides_out_the_real_rate_limit(limited: Harness) -> None:
    h = limited
    key = await make_key(h)
    async with _client(h, key) as client:
        started = time.monotonic()
        results = [await client.send(ev(i)) for i in range(5)]
        elapsed = time.monotonic() - started
    assert not any(r.duplicate for r in results)
    assert client.attempts > 5 and elapsed >= 0.9  # it waited for the window, as told
    assert len(await ingested(h)) == 5


async def test_client_errors_are_not_retried(h: Harness) -> None:
    key = await make_key(h)
    async with _client(h, key) as client:
        with pytest.raises(AuditRejected) as raised:
            await client.send(ev(ip="not-an-ip"))
        assert raised.value.status == 422 and client.attempts == 1
        assert [e["loc"] for e in raised.value.errors] == [["body", "ip"]]
    async with _client(h, key + "x") as bad_key:
        with pytest.raises(AuditRejected) as raised:
            await bad_key.send(ev())
        assert raised.value.status == 401 and bad_key.attempts == 1
    assert await ingested(h) == []


async def test_gives_up_after_max_attempts(h: Harness) -> None:
    key = await make_key(h)
    down = FailFirst(h.app, 100, status=503)
    policy = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02)
    async with AsyncAuditClient(
        "http://testserver", key, transport=httpx.ASGITransport(app=down), retry=policy
    ) as client:
        with pytest.raises(AuditUnavailable) as raised:
            await client.send(ev())
    assert raised.value.status == 503 and down.failed == 3


async def test_record_flushes_by_size_and_on_close(h: Harness) -> None:
    key = await make_key(h)
    client = _client(h, key, batch_size=10, flush_interval=60)
    for i in range(10):
        await client.record(ev(i))
    for _ in range(100):
        if len(await ingested(h)) == 10:
            break
        await asyncio.sleep(0.02)
    assert len(await ingested(h)) == 10 and client.pending == 0
    for i in range(3):
        await client.record(ev(100 + i))
    await asyncio.sleep(0.2)
    assert len(await ingested(h)) == 10 and client.pending == 3  # below size, before time
    await client.aclose()
    assert len(await ingested(h)) == 13 and client.pending == 0
    with pytest.raises(RuntimeError):
        await client.record(ev())


async def test_record_flushes_by_time(h: Harness) -> None:
    key = await make_key(h)
    async with _client(h, key, batch_size=100, flush_interval=0.1) as client:
        for i in range(3):
            await client.record(ev(i))
        for _ in range(100):
            if len(await ingested(h)) == 3:
                break
            await asyncio.sleep(0.02)
        assert len(await ingested(h)) == 3 and client.attempts == 1


async def test_record_sets_aside_only_the_refused_events(h: Harness) -> None:
    key = await make_key(h)
    refused: list[tuple[dict[str, Any], AuditError]] = []
    async with _client(h, key, on_error=lambda e, err: refused.append((e, err))) as client:
        await client.record(ev(0))
        await client.record(ev(1, ip="999.0.0.1"))
        await client.record(ev(2))
        await client.record(ev(3, occurred_at="2026-01-01T00:00:00"))
        await client.flush()
    assert [e["actor_id"] for e, _ in refused] == ["student-1", "student-3"]
    assert all(isinstance(err, AuditRejected) for _, err in refused)
    assert sorted(e.actor_id for e in await ingested(h)) == ["student-0", "student-2"]


async def test_record_keeps_events_while_the_service_is_down(h: Harness) -> None:
    key = await make_key(h)
    down = FailFirst(h.app, 5, status=503)
    policy = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.01)
    client = AsyncAuditClient(
        "http://testserver",
        key,
        transport=httpx.ASGITransport(app=down),
        retry=policy,
        flush_interval=0.05,
    )
    for i in range(4):
        await client.record(ev(i))
    for _ in range(200):
        if client.pending == 0 and down.failed == 5:
            break
        await asyncio.sleep(0.02)
    await client.aclose()
    assert down.failed == 5  # two flushes gave up, the third got through
    assert sorted(e.actor_id for e in await ingested(h)) == [f"student-{i}" for i in range(4)]


# --- the blocking client over a real socket --------------------------------------------------


@asynccontextmanager
async def serving(app: ASGIApp, port: int, delay: float = 0.0) -> AsyncIterator[str]:
    """A real uvicorn on `port` (started after `delay` seconds) in this event loop."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)

    async def run() -> None:
        await asyncio.sleep(delay)
        await server.serve()

    task = asyncio.create_task(run())
    while not delay and not server.started and not task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn has a flag
            await asyncio.sleep(0.01)
        server.should_exit = True
        await task


async def test_blocking_client_over_http(h: Harness, db_url: str) -> None:
    key = await make_key(h)
    flaky = FailFirst(create_app(make_settings(db_url)), 2, status=502)
    async with serving(flaky, free_port()) as url:
        client = AuditClient(url, key, retry=FAST, batch_size=5, flush_interval=60, timeout=60)
        one = await asyncio.to_thread(client.send, ev())
        batch = await asyncio.to_thread(client.send_batch, [ev(i) for i in range(1_500)])
        for i in range(7):
            await asyncio.to_thread(client.record, ev(10_000 + i))
        await asyncio.to_thread(client.close)
    assert flaky.failed == 2 and one.duplicate is False
    assert (batch.inserted, len(batch.results)) == (1_500, 1_500)
    assert client.pending == 0
    assert len(await ingested(h)) == 1 + 1_500 + 7


async def test_blocking_client_waits_for_the_server_to_come_up(h: Harness, db_url: str) -> None:
    key = await make_key(h)
    port = free_port()
    policy = RetryPolicy(max_attempts=100, base_delay=0.02, max_delay=0.1)
    with AuditClient(f"http://127.0.0.1:{port}", key, retry=policy) as client:
        async with serving(create_app(make_settings(db_url)), port, delay=0.5):
            started = time.monotonic()
            result = await asyncio.to_thread(client.send, ev())
            assert time.monotonic() - started >= 0.3
    assert client.attempts > 1 and result.duplicate is False
    assert len(await ingested(h)) == 1
