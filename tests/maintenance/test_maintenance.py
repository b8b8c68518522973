"""Maintenance mode: PUT/GET /admin/maintenance and the CLI; 503 + Retry-After for everything
but health, login, admins and ingestion; still recorded; kept in the database, so it holds
across restarts and replicas (two apps on one database)."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from pathlib import Path

from audit_service.audit_log.models import AuditEvent
from audit_service.core.db import create_engine, create_sessionmaker
from audit_service.maintenance.service import CACHE_SECONDS, MaintenanceCache
from tests.conftest import Harness, start_harness
from tests.ingestion.helpers import bearer, event, make_key
from tests.pg import free_port
from tests.test_cli import cli

harness = asynccontextmanager(start_harness)
MESSAGE = "Database upgrade until 22:00 UTC"


async def _switch(h: Harness, enabled: bool, message: str | None = MESSAGE) -> None:
    r = await h.client.put(
        "/admin/maintenance",
        headers=await h.auth(),
        json={"enabled": enabled, "message": message},
    )
    assert r.status_code == 200, r.text
    assert r.json()["enabled"] is enabled


async def _wait_for_status(h: Harness, headers: dict[str, str], status: int) -> float:
    """Seconds until GET /me answers `status` (polling); fails after 2.5 s."""
    start = time.monotonic()
    while True:
        r = await h.client.get("/me", headers=headers)
        if r.status_code == status:
            return time.monotonic() - start
        assert time.monotonic() - start < 2.5, (r.status_code, r.text)
        await asyncio.sleep(0.05)


async def test_access_and_bad_input(h: Harness) -> None:
    assert (await h.client.get("/admin/maintenance")).status_code == 401
    user = await h.auth("alice", role="user")
    assert (await h.client.get("/admin/maintenance", headers=user)).status_code == 403
    r = await h.client.put("/admin/maintenance", headers=user, json={"enabled": True})
    assert r.status_code == 403
    admin = await h.auth()
    for body in ({"enabled": None}, {}, {"enabled": "yes"}, {"enabled": True, "extra": 1}):
        r = await h.client.put("/admin/maintenance", headers=admin, json=body)
        assert r.status_code == 422, body
        assert r.headers["content-type"] == "application/problem+json"
    r = await h.client.put(
        "/admin/maintenance", headers=admin, json={"enabled": True, "message": "x" * 501}
    )
    assert r.status_code == 422 and "message" in str(r.json()["errors"])
    r = await h.client.get("/admin/maintenance", headers=admin)
    assert r.status_code == 200
    assert r.json()["enabled"] is False
    # user.role 'user' was refused before any change: still off
    assert (await h.client.get("/me", headers=user)).status_code == 200


async def test_maintenance_gates_users_but_not_health_login_admins_ingestion(h: Harness) -> None:
    user = await h.auth("alice", role="user")
    auditor = await h.auth("audrey", role="auditor")
    admin = await h.auth()
    key = await make_key(h)
    await _switch(h, True)

    r = await h.client.get("/me", headers=user)
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["retry-after"] == "60"
    assert r.json()["detail"] == MESSAGE
    r = await h.client.post(
        "/predict",
        headers=user,
        json={"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
    )
    assert r.status_code == 503
    # the refused request is recorded, as what the client got
    refused = (await h.events(path="/me", status_code=503))[-1]
    assert refused.outcome == "error" and refused.actor_name == "alice"

    assert (await h.client.get("/healthz")).status_code == 200
    r = await h.client.post("/login", json={"username": "alice", "password": "user-password-123"})
    assert r.status_code == 200
    assert (await h.client.get("/me", headers=admin)).status_code == 200
    assert (await h.client.get("/admin/users", headers=admin)).status_code == 200
    assert (await h.client.get("/admin/activity", headers=auditor)).status_code == 200
    assert (await h.client.post("/events", headers=bearer(key), json=event())).status_code == 201

    await _switch(h, False, None)
    assert (await h.client.get("/me", headers=user)).status_code == 200

    started = await h.events(action="system.maintenance_started")
    ended = await h.events(action="system.maintenance_ended")
    assert len(started) == 1 and len(ended) == 1
    assert started[0].actor_name == "admin" and started[0].event_metadata["message"] == MESSAGE
    changes = [e for e in await h.events(action="config.changed") if e.path == "/admin/maintenance"]
    assert [c.event_metadata["before"]["enabled"] for c in changes] == [False, True]
    assert [c.event_metadata["after"] for c in changes] == [
        {"enabled": True, "message": MESSAGE},
        {"enabled": False, "message": None},
    ]
    # the maintenance event and the config change commit together
    assert started[0].id == changes[0].id - 1 or started[0].id == changes[0].id + 1


async def test_state_holds_across_replicas_and_restarts(h: Harness) -> None:
    user = await h.auth("alice", role="user")
    async with harness(h.app.state.settings) as other:  # a second replica, same database
        assert (await other.client.get("/me", headers=user)).status_code == 200
        await _switch(h, True)
        seen_after = await _wait_for_status(other, user, 503)
        assert seen_after <= CACHE_SECONDS + 1
        r = await other.client.get("/me", headers=user)
        assert r.json()["detail"] == MESSAGE
        await _switch(other, False)
        await _wait_for_status(h, user, 200)
        await _switch(other, True, None)
    # a restart: a fresh app reads the stored state at once
    async with harness(h.app.state.settings) as restarted:
        r = await restarted.client.get("/me", headers=user)
        assert r.status_code == 503
        assert "maintenance" in r.json()["detail"]  # the default message


async def test_cli_switches_it_with_the_same_events(h: Harness, tmp_path: Path) -> None:
    url = h.app.state.settings.database_url
    user = await h.auth("alice", role="user")
    run = await cli(url, "maintenance", "on", "--message", MESSAGE, cwd=tmp_path)
    assert run.code == 0, run.err
    assert "maintenance mode on" in run.out
    await _wait_for_status(h, user, 503)
    run = await cli(url, "maintenance", "status", cwd=tmp_path)
    assert run.code == 0 and MESSAGE in run.out
    run = await cli(url, "maintenance", "off", cwd=tmp_path)
    assert run.code == 0, run.err
    await _wait_for_status(h, user, 200)
    actions = [
        (e.action, e.actor_type, e.actor_id)
        for e in await h.events()
        if e.action.startswith("system.maintenance") or e.action == "config.changed"
    ]
    assert actions == [
        ("system.maintenance_started", "system", "cli"),
        ("config.changed", "system", "cli"),
        ("system.maintenance_ended", "system", "cli"),
        ("config.changed", "system", "cli"),
    ]
    ev: AuditEvent = (await h.events(action="config.changed"))[-1]
    assert ev.event_metadata["before"] == {"enabled": True, "message": MESSAGE}


async def test_cache_keeps_the_last_state_when_the_database_is_unreachable() -> None:
    engine = create_engine(f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none")
    try:
        cache = MaintenanceCache(create_sessionmaker(engine))
        state = await cache.current()  # connection refused: no exception, the default state
        assert state.enabled is False
    finally:
        await engine.dispose()
