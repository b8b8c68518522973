"""docker-compose.yml deploys the roles of docs/roles.sql (Docker cannot run here, so: the file
is checked for what the service connects as, and its first-boot script runs for real against
a private PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import yaml

from tests.pg import DOCS, TempPostgres

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, dict[str, dict[str, object]]]:
    loaded: dict[str, dict[str, dict[str, object]]] = yaml.safe_load(
        (ROOT / "docker-compose.yml").read_text()
    )
    return loaded


def test_the_service_connects_as_its_role_and_the_owner_migrates() -> None:
    services = _compose()["services"]
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert isinstance(env, dict)
        assert str(env["DATABASE_URL"]).startswith("postgresql+asyncpg://audit_app:"), name
        assert "--no-migrate" in services[name]["command"]  # type: ignore[operator]
        assert env["AUDIT_ENV"] == "production" and "AUDIT_LOG_SIGNING_KEY" in env
    assert services["migrate"]["command"] == ["audit-service", "migrate", "--role", "audit_owner"]
    grants = services["grants"]
    assert grants["environment"]["PGOPTIONS"] == "-c role=audit_owner"  # type: ignore[index]
    assert grants["command"][-1] == "/audit/grants.sql"  # type: ignore[index]
    assert "./docs:/audit:ro" in grants["volumes"]  # type: ignore[operator]
    # Each starts only after the step before it finished.
    assert services["api"]["depends_on"] == {
        "grants": {"condition": "service_completed_successfully"}
    }
    assert services["grants"]["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"}
    }


@pytest.fixture
def server() -> Iterator[TempPostgres]:
    server = TempPostgres()
    try:
        server.start()
        yield server
    finally:
        server.stop()


async def test_the_first_boot_script_creates_the_roles_with_their_passwords(
    server: TempPostgres,
) -> None:
    volumes = _compose()["services"]["postgres"]["volumes"]
    assert (
        "./scripts/compose-postgres-init.sh:/docker-entrypoint-initdb.d/10-audit-roles.sh:ro"
        in (
            volumes  # type: ignore[operator]
        )
    )
    env = {
        **os.environ,
        "PATH": f"{server.bin}:{os.environ['PATH']}",
        "PGHOST": "127.0.0.1",
        "PGPORT": str(server.port),
        "POSTGRES_USER": "postgres",
        "AUDIT_ROLES_SQL": str(DOCS / "roles.sql"),
        "AUDIT_APP_DB_PASSWORD": "app pw with 'quotes'",
        "AUDIT_VERIFIER_DB_PASSWORD": "verifier-pw",
    }
    proc = await asyncio.create_subprocess_exec(
        "sh",
        str(ROOT / "scripts" / "compose-postgres-init.sh"),
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    superuser = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{server.port}/postgres")
    try:
        # Password logins from here on, so a wrong password fails to connect.
        hba = await superuser.fetchval("SHOW hba_file")
        rules = "host all all 127.0.0.1/32 scram-sha-256\nlocal all all trust\n"
        await asyncio.to_thread(Path(hba).write_text, rules)
        await superuser.execute("SELECT pg_reload_conf()")
        owner = await superuser.fetchval(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'audit'"
        )
        assert owner == "audit_owner"
    finally:
        await superuser.close()
    base = f"127.0.0.1:{server.port}/audit"
    for user, password in (
        ("audit_app", "app pw with 'quotes'"),
        ("audit_verifier", "verifier-pw"),
    ):
        conn = await asyncpg.connect(f"postgresql://{base}", user=user, password=password)
        assert await conn.fetchval("SELECT current_user") == user
        await conn.close()
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(f"postgresql://{base}", user=user, password="wrong")
