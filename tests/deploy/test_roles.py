"""docs/roles.sql + docs/grants.sql: migrate as the owner role, serve as the runtime role on a
private PostgreSQL; the runtime role cannot UPDATE, DELETE or TRUNCATE audit_event."""

from __future__ import annotations

import re
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from audit_service.core import migrations
from tests.conftest import make_settings, start_harness
from tests.ingestion.helpers import bearer, event, make_key

ROOT = Path(__file__).resolve().parents[2]
harness = asynccontextmanager(start_harness)


def _sql(name: str, names: dict[str, str]) -> str:
    script = (ROOT / "docs" / name).read_text()
    for old, new in names.items():
        script = re.sub(rf"\b{old}\b", new, script)
    return script


def _dsn(url: str, user: str, database: str) -> str:
    u = make_url(url).set(username=user, database=database)
    return u.render_as_string(hide_password=False)


async def test_owner_migrates_runtime_role_serves_and_cannot_rewrite_history(
    pg_url: str,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    names = {
        "audit_owner": f"owner_{suffix}",
        "audit_app": f"app_{suffix}",
        "audit": f"audit_{suffix}",
    }
    superuser = make_url(pg_url).set(drivername="postgresql").render_as_string(False)
    conn = await asyncpg.connect(superuser)
    try:
        for statement in _sql("roles.sql", names).split(";"):
            body = "\n".join(line for line in statement.splitlines() if not line.startswith("--"))
            if body.strip():
                await conn.execute(body)  # one by one: CREATE DATABASE refuses a transaction
    finally:
        await conn.close()

    owner_url = _dsn(pg_url, names["audit_owner"], names["audit"])
    app_url = _dsn(pg_url, names["audit_app"], names["audit"])
    migrations.upgrade(owner_url)
    owner = await asyncpg.connect(
        make_url(owner_url).set(drivername="postgresql").render_as_string(False)
    )
    try:
        await owner.execute(_sql("grants.sql", names))
    finally:
        await owner.close()

    # The service runs as the runtime role: bootstrap admin, login, users, keys, ingestion,
    # maintenance (runtime settings), listing the record.
    async with harness(make_settings(app_url)) as h:
        admin = await h.auth()
        assert (
            await h.client.get("/me", headers=await h.auth("alice", role="user"))
        ).status_code == 200
        key = await make_key(h)
        assert (
            await h.client.post("/events", headers=bearer(key), json=event())
        ).status_code == 201
        r = await h.client.put("/admin/maintenance", headers=admin, json={"enabled": False})
        assert r.status_code == 200
        r = await h.client.get("/admin/activity", headers=admin)
        assert r.status_code == 200 and r.json()["total"] >= 3
        r = await h.client.post("/logout", headers=admin)
        assert r.status_code == 204

    runtime = await asyncpg.connect(
        make_url(app_url).set(drivername="postgresql").render_as_string(False)
    )
    try:
        assert await runtime.fetchval("SELECT count(*) FROM audit_event") >= 3
        # "permission denied": the missing privilege, not the append-only trigger (which
        # answers the same SQLSTATE) — even through the trigger's retention door.
        async with runtime.transaction():
            await runtime.execute("SET LOCAL audit.allow_delete = 'on'")
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                await runtime.execute("DELETE FROM audit_event")
        for statement in (
            "UPDATE audit_event SET description = 'rewritten'",
            "DELETE FROM audit_event",
            "TRUNCATE audit_event",
            "CREATE TABLE sneaky (id int)",
            "DELETE FROM alembic_version",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                await runtime.execute(statement)
    finally:
        await runtime.close()
