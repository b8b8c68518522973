"""Replicas starting together: concurrent `audit-service migrate` runs must not race."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import make_url

from audit_service.core import migrations
from audit_service.core.db import create_engine


def _env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_")}
    env["DATABASE_URL"] = url
    return env


async def _fresh_database(pg_url: str) -> str:
    name = f"race_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    return make_url(pg_url).set(database=name).render_as_string(hide_password=False)


async def test_concurrent_migrations_on_an_empty_postgres_all_succeed(pg_admin_url: str) -> None:
    head = ScriptDirectory.from_config(migrations.alembic_config(pg_admin_url)).get_current_head()
    url = await _fresh_database(pg_admin_url)
    engine = create_engine(url)
    # Make the race certain instead of a matter of timing: an uncommitted alembic_version
    # holds every runner at its first DDL until all of them are waiting, then it vanishes.
    gate = await engine.connect()
    await gate.execute(text("CREATE TABLE alembic_version (version_num varchar(32) NOT NULL)"))
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "audit_service.cli",
            "migrate",
            env=_env(url),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]
    try:
        async with engine.connect() as probe:
            for _ in range(600):
                waiting = await probe.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                )
                await probe.rollback()
                if waiting == len(procs):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the migrations never all reached the database")
    finally:
        await gate.rollback()
        await gate.close()
    results = [await p.communicate() for p in procs]
    for proc, (_out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err.decode()[-2000:]
    async with engine.connect() as conn:
        versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
        tables = await conn.scalar(
            text("SELECT count(*) FROM pg_tables WHERE tablename = 'audit_event'")
        )
    await engine.dispose()
    assert [v[0] for v in versions] == [head]
    assert tables == 1
