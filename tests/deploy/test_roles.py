"""docs/roles.sql + docs/grants.sql: the owner (NOLOGIN) migrates through an administrator's
login, the service runs as its restricted role, verify reads as the read-only role; the
service's role cannot UPDATE, DELETE or TRUNCATE the log tables (the triggers refusing the
same verbs, for every role, are tests/test_append_only.py)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from audit_service.models import Base
from tests.conftest import make_settings, start_harness
from tests.ingestion.helpers import bearer, event, make_key
from tests.integrity.helpers import seal
from tests.pg import ROLE_NAMES, Roles, _bin_dir, docs_sql, drop_roles, dsn, statements
from tests.test_cli import cli

harness = asynccontextmanager(start_harness)

# What the service's role may do to the log tables (grants.sql), and the verbs it may not.
LOG_TABLES = {
    "audit_event": {"SELECT", "INSERT"},
    "audit_leaf": {"SELECT", "INSERT"},
    "integrity_checkpoint": {"SELECT", "INSERT"},
    "integrity_log": {"SELECT", "INSERT"},
    "integrity_tile": {"SELECT", "INSERT", "UPDATE"},  # growth only: the trigger guards it
    "integrity_key": {"SELECT", "INSERT"},
    "log_cursor": {"SELECT", "UPDATE"},
    "alembic_version": {"SELECT"},
}
# Written only through the retention path's SECURITY DEFINER functions (migration 0023).
RESTRICTED_TABLES = {"integrity_commitment": {"SELECT"}, "retention_door": {"SELECT"}}
VERIFIER_TABLES = set(LOG_TABLES) - {"alembic_version"}
VERBS = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
# A statement of each refused verb on each log table (no WHERE: every row, as an attacker).
REWRITES = {
    "UPDATE": {
        "audit_event": "UPDATE audit_event SET description = 'rewritten'",
        "audit_leaf": "UPDATE audit_leaf SET leaf_hash = leaf_hash",
        "integrity_checkpoint": "UPDATE integrity_checkpoint SET note = note",
        "integrity_log": "UPDATE integrity_log SET origin = 'evil.example/log'",
        "integrity_key": "UPDATE integrity_key SET key = key",
        "log_cursor": None,  # the sequencer moves it forward
        "integrity_tile": None,  # growth only, the trigger's business (test_append_only)
    },
    "DELETE": {t: f"DELETE FROM {t}" for t in LOG_TABLES if t != "alembic_version"},  # noqa: S608
    "TRUNCATE": {t: f"TRUNCATE {t}" for t in LOG_TABLES if t != "alembic_version"},
}
CASES = [
    (verb, table, sql) for verb, by_table in REWRITES.items() for table, sql in by_table.items()
]


async def _connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn(url, drivername="postgresql"))


async def _privileges(url: str, role: str) -> dict[str, set[str]]:
    conn = await _connect(url)
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
        out: dict[str, set[str]] = {}
        for row in rows:
            table = row["tablename"]
            out[table] = {
                verb
                for verb in VERBS
                if await conn.fetchval(
                    "SELECT has_table_privilege($1, quote_ident($2), $3)", role, table, verb
                )
            }
        return out
    finally:
        await conn.close()


@pytest.fixture
async def sealed_log(pg_only_url: str) -> AsyncIterator[str]:
    """A few events (ingested ones too), sequenced and covered by a signed checkpoint: a row
    in every log table."""
    async with harness(make_settings(pg_only_url)) as h:
        key = await make_key(h)
        r = await h.client.post("/events", headers=bearer(key), json=event(ip="198.51.100.4"))
        assert r.status_code == 201
        assert await seal(h) >= 3
    yield pg_only_url


async def _count_rows(url: str) -> dict[str, int]:
    conn = await _connect(url)
    try:
        return {
            t: await conn.fetchval(f"SELECT count(*) FROM {t}")  # noqa: S608 (our names)
            for t in LOG_TABLES
        }
    finally:
        await conn.close()


@pytest.mark.parametrize(("verb", "table", "sql"), [c for c in CASES if c[2]])
async def test_the_services_role_may_not_rewrite_the_log(
    sealed_log: str, pg_admin_url: str, verb: str, table: str, sql: str
) -> None:
    before = await _count_rows(pg_admin_url)
    assert all(before.values()), before  # every table has rows to lose
    service = await _connect(sealed_log)
    try:
        # "permission denied for table": the missing privilege, before any trigger runs.
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await service.execute(sql)
    finally:
        await service.close()
    assert await _count_rows(pg_admin_url) == before


async def test_privileges_are_those_of_grants_sql(pg_roles: Roles) -> None:
    """Every table: the log tables as LOG_TABLES says, every other table read + write (no
    TRUNCATE, REFERENCES or TRIGGER anywhere); the verify role reads the log and the keys,
    nothing else. A table a new migration adds is covered by the catch-all."""
    tables = {t.name for t in Base.metadata.sorted_tables} | {"alembic_version"}
    service = await _privileges(pg_roles.admin_url, pg_roles.service)
    assert set(service) == tables
    for table, got in service.items():
        expected = LOG_TABLES.get(table) or RESTRICTED_TABLES.get(table)
        assert got == (expected or {"SELECT", "INSERT", "UPDATE", "DELETE"}), table
    verifier = await _privileges(pg_roles.admin_url, pg_roles.verifier)
    # The verifier also reads the kept commitments of anonymised/erased rows.
    readable = VERIFIER_TABLES | {"integrity_commitment"}
    assert {t for t, got in verifier.items() if got} == readable
    assert all(verifier[t] == {"SELECT"} for t in readable)


async def test_the_verify_role_reads_the_log_and_nothing_else(
    sealed_log: str, pg_verifier_url: str, pg_admin_url: str
) -> None:
    before = await _count_rows(pg_admin_url)
    verifier = await _connect(pg_verifier_url)
    try:
        for table in VERIFIER_TABLES:
            count = await verifier.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608
            assert count == before[table]
        for sql in (
            'SELECT count(*) FROM "user"',
            "SELECT count(*) FROM api_key",
            "INSERT INTO integrity_log (id, origin, created_at) VALUES (9, 'x', now())",
            "UPDATE log_cursor SET next_position = 0",
            "DELETE FROM audit_event",
            "TRUNCATE audit_leaf",
            "CREATE TABLE sneaky (id int)",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                await verifier.execute(sql)
    finally:
        await verifier.close()
    assert await _count_rows(pg_admin_url) == before


async def test_from_scratch_as_deployment_md_says(pg_admin_url: str, tmp_path: Path) -> None:
    """docs/roles.sql as the superuser; an administrator's own login (a member of the NOLOGIN
    owner) migrates with the real `audit-service migrate --role` and applies docs/grants.sql
    with psql; the service serves as its role; nobody can log in as the owner."""
    suffix = uuid.uuid4().hex[:8]
    names = {n: f"{n}_{suffix}" for n in ROLE_NAMES}
    owner, app, database = names["audit_owner"], names["audit_app"], names["audit"]
    dba = f"dba_{suffix}"
    superuser = await _connect(pg_admin_url)
    try:
        for statement in statements(docs_sql("roles.sql", names)):
            await superuser.execute(statement)
        await superuser.execute(f"CREATE ROLE {dba} LOGIN PASSWORD 'dba-pw' IN ROLE {owner}")
        await superuser.execute(f"ALTER ROLE {app} PASSWORD 'app-pw'")
    finally:
        await superuser.close()
    roles = Roles(
        admin_url=dsn(pg_admin_url, database=database),
        service_url=dsn(pg_admin_url, database=database, username=app, password="app-pw"),
        verifier_url="",
        owner=owner,
        service=app,
        verifier=names["audit_verifier"],
        database=database,
    )
    dba_url = dsn(pg_admin_url, database=database, username=dba, password="dba-pw")
    try:
        with pytest.raises(
            asyncpg.InvalidAuthorizationSpecificationError, match="not permitted to log in"
        ):
            await _connect(dsn(pg_admin_url, database=database, username=owner))

        refused = await cli(dba_url, "migrate", "--role", app, cwd=tmp_path)
        assert refused.code != 0 and "Traceback" not in refused.err
        assert f"cannot run as role '{app}'" in refused.err and "permission denied" in refused.err

        run = await cli(dba_url, "migrate", "--role", owner, cwd=tmp_path)
        assert run.code == 0, run.err
        grants = tmp_path / "grants.sql"
        grants.write_text(docs_sql("grants.sql", names))
        url = dsn(dba_url, drivername="postgresql")
        env = {**os.environ, "PGOPTIONS": f"-c role={owner}"}
        proc = await _run(
            str(_bin_dir() / "psql"), url, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(grants), env=env
        )
        assert proc == 0

        conn = await _connect(roles.admin_url)
        try:
            owners = await conn.fetch(
                "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
            )
        finally:
            await conn.close()
        assert [r["tableowner"] for r in owners] == [owner]  # not the administrator's login

        # The service as its role: bootstrap admin, login, keys, ingestion, maintenance
        # (runtime settings), listing the record, logout; then the log sealed by its job code.
        async with harness(make_settings(roles.service_url)) as h:
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
            assert (await h.client.post("/logout", headers=admin)).status_code == 204
            assert await seal(h) >= 5

        service = await _connect(roles.service_url)
        try:
            # Not even through the old retention door of the trigger (migration 0004).
            async with service.transaction():
                await service.execute("SET LOCAL audit.allow_delete = 'on'")
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                    await service.execute("DELETE FROM audit_event")
            for sql in ("CREATE TABLE sneaky (id int)", "DELETE FROM alembic_version"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                    await service.execute(sql)
        finally:
            await service.close()
    finally:
        conn = await _connect(pg_admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await conn.execute(f"DROP ROLE IF EXISTS {dba}")
        finally:
            await conn.close()
        await drop_roles(pg_admin_url, roles)


async def _run(*args: str, env: dict[str, str]) -> int:
    import asyncio

    proc = await asyncio.create_subprocess_exec(*args, env=env)
    return await asyncio.wait_for(proc.wait(), timeout=60)
