"""/admin/api-keys, the `api-keys` CLI and authenticating services with their keys."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from audit_service.auth import service as auth_service
from audit_service.auth.models import ApiKey
from audit_service.kit.models import utcnow
from tests.conftest import Harness, make_settings, start_harness
from tests.ingestion.helpers import bearer, event, ingested, make_key

KEY_FORMAT = re.compile(r"^ask_[A-Za-z0-9]{12}_[A-Za-z0-9]{40}$")
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/admin/api-keys"), ("GET", "/admin/api-keys"), ("DELETE", "/admin/api-keys/1")],
)
async def test_only_admins(h: Harness, method: str, path: str) -> None:
    body = {"name": "billing", "scopes": ["events:write"]}
    assert (await h.client.request(method, path, json=body)).status_code == 401
    for role in ("user", "auditor"):
        headers = await h.auth(f"a-{role}", role=role)
        r = await h.client.request(method, path, headers=headers, json=body)
        assert r.status_code == 403, (role, r.text)
        e = await h.last_event()
        assert (e.outcome, e.actor_role, e.module) == ("denied", role, "auth")
    async with h.app.state.sessionmaker() as session:
        assert (await session.scalars(select(ApiKey))).all() == []


async def test_create_shows_the_secret_once(h: Harness) -> None:
    admin = await h.auth()
    r = await h.client.post(
        "/admin/api-keys", headers=admin, json={"name": "exam-platform", "scopes": ["events:write"]}
    )
    assert r.status_code == 201, r.text
    created = r.json()
    secret = created["key"]
    assert KEY_FORMAT.match(secret)
    assert created["prefix"] == secret[:16] and secret.startswith(created["prefix"] + "_")
    assert (created["name"], created["scopes"], created["revoked_at"], created["last_used_at"]) == (
        "exam-platform",
        ["events:write"],
        None,
        None,
    )
    e = await h.last_event()
    assert (e.action, e.module, e.outcome, e.target_type, e.target_id, e.actor_name) == (
        "api_key.created",
        "auth",
        "success",
        "api_key",
        str(created["id"]),
        "admin",
    )
    assert e.event_metadata["prefix"] == created["prefix"]

    listing = await h.client.get("/admin/api-keys", headers=admin)
    assert listing.status_code == 200
    page = listing.json()
    assert page["total"] == 1 and [k["prefix"] for k in page["items"]] == [created["prefix"]]
    assert "key" not in page["items"][0] and "secret_sha256" not in page["items"][0]
    secret_part = secret.rsplit("_", 1)[1]
    assert secret_part not in listing.text
    assert (await h.last_event()).action == "api_key.listed"

    # Stored only as a hash, and never in any event.
    async with h.app.state.sessionmaker() as session:
        row = await session.scalar(select(ApiKey))
        assert row is not None
        assert row.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
        for column in ApiKey.__table__.columns:
            assert secret_part not in str(getattr(row, column.key)), column.key
    await h.client.post("/events", headers=bearer(secret), json=event())
    await h.client.post("/events", headers=bearer(secret + "x"), json=event())
    for stored in await h.events():
        assert secret_part not in json.dumps(
            {c: str(getattr(stored, c)) for c in ("description", "event_metadata", "user_agent")}
        )


async def test_each_key_is_different(h: Harness) -> None:
    keys = {await make_key(h, name="billing") for _ in range(3)}
    assert len(keys) == 3 and len({k[:16] for k in keys}) == 3


@pytest.mark.parametrize(
    "body",
    [
        {"name": "audit-service", "scopes": ["events:write"]},
        {"name": "Audit-Service", "scopes": ["events:write"]},
        {"name": "has spaces", "scopes": ["events:write"]},
        {"name": "", "scopes": ["events:write"]},
        {"name": "x" * 101, "scopes": ["events:write"]},
        {"name": "billing", "scopes": []},
        {"name": "billing", "scopes": ["events:read"]},
        {"name": "billing"},
        {"name": "billing", "scopes": ["events:write"], "expires": "never"},
    ],
)
async def test_create_rejects_bad_input(h: Harness, body: dict[str, object]) -> None:
    r = await h.client.post("/admin/api-keys", headers=await h.auth(), json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    async with h.app.state.sessionmaker() as session:
        assert (await session.scalars(select(ApiKey))).all() == []
    assert (await h.last_event()).outcome == "failure"


async def test_revoke(h: Harness) -> None:
    key = await make_key(h)
    assert (await h.client.post("/events", headers=bearer(key), json=event())).status_code == 201
    admin = await h.auth()
    key_id = (await h.client.get("/admin/api-keys", headers=admin)).json()["items"][0]["id"]
    r = await h.client.delete(f"/admin/api-keys/{key_id}", headers=admin)
    assert r.status_code == 204
    e = await h.last_event()
    assert (e.action, e.target_id, e.outcome) == ("api_key.revoked", str(key_id), "success")
    listed = (await h.client.get("/admin/api-keys", headers=admin)).json()["items"][0]
    assert listed["revoked_at"] is not None

    r = await h.client.post("/events", headers=bearer(key), json=event())
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    denied = await h.last_event()
    # The secret was right, so the service is named; the key just no longer works.
    assert (denied.actor_type, denied.actor_id, denied.outcome) == ("service", key[:16], "denied")
    assert denied.event_metadata["auth_error"] == "api_key_revoked"
    assert len(await ingested(h)) == 1

    again = await h.client.delete(f"/admin/api-keys/{key_id}", headers=admin)
    assert again.status_code == 204
    assert (await h.last_event()).event_metadata.get("already_revoked") is True
    assert (await h.client.delete("/admin/api-keys/999", headers=admin)).status_code == 404
    assert (await h.last_event()).target_id == "999"


async def test_how_a_key_may_be_presented(h: Harness) -> None:
    key = await make_key(h)
    ok = [bearer(key), {"X-API-Key": key}, {**bearer(key), "X-API-Key": key}]
    for headers in ok:
        r = await h.client.post("/events", headers=headers, json=event())
        assert r.status_code == 201, (headers.keys(), r.text)
    other = await make_key(h, name="billing")
    unknown = "ask_" + "A" * 12 + "_" + "b" * 40
    wrong_secret = key[:17] + ("a" if key[17] != "a" else "b") + key[18:]
    refused: dict[str, tuple[dict[str, str], str | None]] = {
        "missing": ({}, None),
        "two different keys": ({**bearer(key), "X-API-Key": other}, None),
        "unknown prefix": (bearer(unknown), "unknown_api_key"),
        "wrong secret": (bearer(wrong_secret), "unknown_api_key"),
        "truncated": (bearer(key[:-1]), "malformed_api_key"),
        "garbage": (bearer("hello"), "malformed_api_key"),
        "basic auth": ({"Authorization": "Basic YWRtaW46YWRtaW4="}, None),
    }
    for name, (headers, auth_error) in refused.items():
        r = await h.client.post("/events", headers=headers, json=event())
        assert r.status_code == 401, (name, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        e = await h.last_event()
        assert (e.action, e.outcome, e.actor_type) == (
            "ingestion.event_posted",
            "denied",
            "anonymous",
        ), name
        assert e.event_metadata.get("auth_error") == auth_error, name
        assert key.rsplit("_", 1)[1] not in json.dumps(e.event_metadata)
    assert len(await ingested(h)) == 3


async def test_user_token_is_forbidden_on_events(h: Harness) -> None:
    headers = await h.auth("carol", role="user")
    for path, body in (("/events", event()), ("/events/batch", {"events": [event()]})):
        r = await h.client.post(path, headers=headers, json=body)
        assert r.status_code == 403, r.text
        e = await h.last_event()
        assert (e.outcome, e.actor_type, e.actor_name) == ("denied", "user", "carol")
    admin = await h.auth()
    assert (await h.client.post("/events", headers=admin, json=event())).status_code == 403
    # …and a service key opens no user endpoint.
    key = await make_key(h)
    assert (await h.client.get("/me", headers=bearer(key))).status_code == 401
    assert (await h.client.get("/admin/activity", headers=bearer(key))).status_code == 401


async def test_key_without_the_scope_is_forbidden(h: Harness) -> None:
    async with h.app.state.sessionmaker() as session:
        _, secret = await auth_service.new_api_key(
            session, name="reporting", scopes=[], created_by=None
        )
        await session.commit()
    r = await h.client.post("/events", headers=bearer(secret), json=event())
    assert r.status_code == 403
    e = await h.last_event()
    assert (e.outcome, e.actor_type, e.actor_name) == ("denied", "service", "reporting")
    assert e.event_metadata["auth_error"] == "missing_scope"


async def test_last_used_at_without_a_write_per_request(h: Harness) -> None:
    key = await make_key(h)

    async def last_used() -> object:
        async with h.app.state.sessionmaker() as session:
            return await session.scalar(select(ApiKey.last_used_at))

    assert await last_used() is None
    assert (await h.client.post("/events", headers=bearer(key), json=event())).status_code == 201
    first = await last_used()
    assert first is not None
    await asyncio.sleep(0.01)
    assert (await h.client.post("/events", headers=bearer(key), json=event())).status_code == 201
    assert await last_used() == first  # within the minute: not written again
    stale = utcnow() - timedelta(minutes=5)
    async with h.app.state.sessionmaker() as session:
        await session.execute(update(ApiKey).values(last_used_at=stale))
        await session.commit()
    assert (await h.client.post("/events", headers=bearer(key), json=event())).status_code == 201
    refreshed = await last_used()
    assert isinstance(refreshed, type(stale)) and refreshed > stale + timedelta(minutes=4)


@pytest.fixture
async def limited(db_url: str) -> AsyncIterator[Harness]:
    settings = make_settings(db_url, ingest_rate_limit="3/minute", default_rate_limit="2/minute")
    async for harness in start_harness(settings):
        yield harness


async def test_rate_limits_are_per_key(limited: Harness) -> None:
    """Ingestion has its own limit per verified key, not the (here lower) default one."""
    h = limited
    first, second = await make_key(h), await make_key(h, name="billing")
    codes = [
        (await h.client.post("/events", headers=bearer(first), json=event())).status_code
        for _ in range(4)
    ]
    assert codes == [201, 201, 201, 429]
    r = await h.client.post("/events", headers=bearer(first), json=event())
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    e = await h.last_event()
    assert (e.outcome, e.actor_type, e.actor_name) == ("denied", "service", "exam-platform")
    assert (await h.client.post("/events", headers=bearer(second), json=event())).status_code == 201
    assert len(await ingested(h)) == 3


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": db_url}
    return subprocess.run(
        [sys.executable, "-m", "audit_service.cli", "api-keys", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
        check=False,
    )


async def test_cli_create_list_revoke(h: Harness, db_url: str) -> None:
    created = await asyncio.to_thread(
        _cli, db_url, "create", "--name", "exam-platform", "--scope", "events:write"
    )
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert KEY_FORMAT.match(secret), created.stdout  # the secret alone on stdout
    assert secret not in created.stderr and secret[:16] in created.stderr
    e = await h.last_event()
    assert (e.action, e.actor_type, e.actor_id, e.target_type) == (
        "api_key.created",
        "system",
        "cli",
        "api_key",
    )
    assert secret.rsplit("_", 1)[1] not in json.dumps(e.event_metadata)

    r = await h.client.post("/events", headers=bearer(secret), json=event())
    assert r.status_code == 201, r.text
    (stored,) = await ingested(h)
    assert stored.source == "exam-platform"

    listed = await asyncio.to_thread(_cli, db_url, "list")
    assert listed.returncode == 0 and secret[:16] in listed.stdout
    assert secret.rsplit("_", 1)[1] not in listed.stdout

    refused = await asyncio.to_thread(
        _cli, db_url, "create", "--name", "audit-service", "--scope", "events:write"
    )
    assert refused.returncode != 0 and "reserved" in refused.stderr

    async with h.app.state.sessionmaker() as session:
        key_id = await session.scalar(select(ApiKey.id).where(ApiKey.prefix == secret[:16]))
        assert await session.scalar(text("SELECT count(*) FROM api_key")) == 1
    revoked = await asyncio.to_thread(_cli, db_url, "revoke", "--id", str(key_id))
    assert revoked.returncode == 0, revoked.stderr
    assert (await h.last_event()).action == "api_key.revoked"
    r = await h.client.post("/events", headers=bearer(secret), json=event())
    assert r.status_code == 401
