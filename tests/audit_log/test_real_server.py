"""The few things that need a real socket: the peer address as uvicorn reports it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select, text

from audit_service.audit_log.models import AuditEvent
from audit_service.main import create_app
from tests.conftest import ADMIN_PASSWORD, make_settings
from tests.pg import free_port


async def _serve(url: str, **overrides: Any) -> AsyncIterator[tuple[Any, str]]:
    app = create_app(make_settings(url, **overrides))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", proxy_headers=False)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.02)
    try:
        yield app, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def served(pg_only_url: str) -> AsyncIterator[tuple[Any, str]]:
    async for pair in _serve(pg_only_url):
        yield pair


async def _last(app: Any) -> AuditEvent:
    async with app.state.sessionmaker() as session:
        return (await session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()))).first()


async def test_socket_peer_is_recorded_and_spoofed_forwarding_ignored(
    served: tuple[Any, str],
) -> None:
    app, base = served
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        r = await client.post(
            "/login",
            json={"username": "admin", "password": ADMIN_PASSWORD},
            headers={"X-Forwarded-For": "6.6.6.6", "User-Agent": "real-socket/1"},
        )
        assert r.status_code == 200
    event = await _last(app)
    assert (event.ip, event.user_agent, event.action) == (
        "127.0.0.1",
        "real-socket/1",
        "auth.login",
    )


async def test_forwarded_for_is_used_behind_a_trusted_proxy(pg_only_url: str) -> None:
    async for app, base in _serve(pg_only_url, trusted_proxies="127.0.0.1/32"):
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            r = await client.get("/me", headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.23"})
            assert r.status_code == 401
        event = await _last(app)
        assert event.ip == "198.51.100.23"


@pytest.mark.parametrize(
    ("header", "expected"), [("x-forwarded-for", "203.0.113.5"), ("forwarded", "6.6.6.6")]
)
async def test_only_the_configured_forwarding_header_is_believed(
    pg_only_url: str, header: str, expected: str
) -> None:
    # nginx/ALB/Traefik append to X-Forwarded-For and pass a client's Forwarded through.
    forged = {"Forwarded": "for=6.6.6.6", "X-Forwarded-For": "203.0.113.5"}
    async for app, base in _serve(
        pg_only_url, trusted_proxies="127.0.0.1/32", forwarded_header=header
    ):
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            r = await client.get("/me", headers=forged)
            assert r.status_code == 401
        event = await _last(app)
        assert event.request_id == r.headers["x-request-id"]
        assert event.ip == expected


async def test_many_concurrent_clients_over_sockets(served: tuple[Any, str]) -> None:
    app, base = served
    limits = httpx.Limits(max_connections=40)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        r = await client.post("/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        responses = await asyncio.gather(*(client.get("/me", headers=headers) for _ in range(200)))
    assert {r.status_code for r in responses} == {200}
    ids = {r.headers["x-request-id"] for r in responses}
    async with app.state.sessionmaker() as session:
        stored = await session.scalar(select(func.count()).where(AuditEvent.request_id.in_(ids)))
    assert stored == 200


async def test_a_client_that_leaves_mid_export_leaves_nothing_running(
    served: tuple[Any, str],
) -> None:
    app, base = served
    async with app.state.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO audit_event (event_id, occurred_at, recorded_at, source, actor_type,"
                " action, module, outcome, description, metadata) "
                "SELECT gen_random_uuid(), now() - n * interval '1 second', now(), 'bulk',"
                " 'system', 'bulk.loaded', 'bulk', 'success', 'bulk row ' || n, '{}'::jsonb "
                "FROM generate_series(1, 50000) AS n"
            )
        )

    async def copies_running() -> int:
        async with app.state.engine.connect() as conn:
            count = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                    "AND query ILIKE 'COPY%' AND pid <> pg_backend_pid()"
                )
            )
            return int(count or 0)

    async with asyncio.timeout(60), httpx.AsyncClient(base_url=base, timeout=30) as client:
        r = await client.post("/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        async with client.stream(
            "GET", "/admin/activity/export", params={"format": "csv"}, headers=headers
        ) as response:
            assert response.status_code == 200
            assert int(response.headers["x-export-row-count"]) > 50_000
            async for _chunk in response.aiter_raw():
                break  # one chunk, then hang up with most of the export unsent
        for _ in range(100):
            if await copies_running() == 0:
                break
            await asyncio.sleep(0.1)
        assert await copies_running() == 0
        # The connection the export held went back (or was discarded) cleanly: the service
        # still answers, and a whole export still streams to the end.
        r = await client.get("/admin/activity?page_size=10", headers=headers)
        assert r.status_code == 200 and len(r.json()["items"]) == 10
        r = await client.get(
            "/admin/activity/export",
            params={"format": "ndjson", "action": "bulk.loaded"},
            headers=headers,
        )
        assert r.status_code == 200 and len(r.text.splitlines()) == 50_000
