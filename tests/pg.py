"""A private, throwaway PostgreSQL for the test session (initdb + pg_ctl in a temp dir).

PostgreSQL refuses to run as root, and CI runs as root: then the server runs as the
`postgres` system account (created by Debian's package) through `runuser`.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from audit_service.core import migrations


def _bin_dir() -> Path:
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    if which:
        return Path(which).resolve().parent
    raise RuntimeError("PostgreSQL server binaries not found (run scripts/ensure-test-services.sh)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TempPostgres:
    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="audit-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, cwd=self.root)

    def start(self) -> str:
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c max_connections=200"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-w",
            "-l",
            str(self.root / "server.log"),
            "start",
        )
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


# --- The roles of docs/roles.sql + docs/grants.sql ------------------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs"
# The names the two scripts use: the owner, the service's role, the verify role, the database.
ROLE_NAMES = ("audit_owner", "audit_app", "audit_verifier", "audit")


def docs_sql(name: str, names: dict[str, str]) -> str:
    """docs/<name> with its role and database names replaced (`names`: old → new)."""
    script = (DOCS / name).read_text()
    for old, new in names.items():
        script = re.sub(rf"\b{old}\b", new, script)
    return script


def statements(script: str) -> list[str]:
    """A script without comments, one statement each (for scripts without `$$` bodies)."""
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in code.split(";") if s.strip()]


def dsn(url: str, **parts: str) -> str:
    """A SQLAlchemy URL with some parts replaced; drivername='postgresql' gives asyncpg's DSN."""
    return make_url(url).set(**parts).render_as_string(hide_password=False)


@dataclass(frozen=True)
class Roles:
    """A database set up as docs/deployment.md says, and the URLs of its roles."""

    admin_url: str  # the superuser, in this database: what the service's role may not do
    service_url: str  # the service's role (audit_app)
    verifier_url: str  # the read-only role of `audit-service verify` (audit_verifier)
    owner: str  # the schema owner's name (NOLOGIN; migrations SET ROLE to it)
    service: str
    verifier: str
    database: str

    def migrate(self, revision: str = "head") -> None:
        migrations.upgrade(self.admin_url, revision, role=self.owner)

    async def grant(self) -> None:
        """docs/grants.sql, as the owner (run again after anything that recreated tables)."""
        ours = (self.owner, self.service, self.verifier, self.database)
        names = dict(zip(ROLE_NAMES, ours, strict=True))
        conn = await asyncpg.connect(dsn(self.admin_url, drivername="postgresql"))
        try:
            async with conn.transaction():
                await conn.execute(f'SET LOCAL ROLE "{self.owner}"')
                await conn.execute(docs_sql("grants.sql", names))
        finally:
            await conn.close()


async def create_roles(superuser_url: str, names: dict[str, str]) -> Roles:
    """docs/roles.sql on the server of `superuser_url` (with `names` for its role and
    database names), login passwords for the two login roles, the schema migrated as the
    owner, docs/grants.sql applied."""
    passwords = {names[r]: secrets.token_urlsafe(16) for r in ("audit_app", "audit_verifier")}
    conn = await asyncpg.connect(dsn(superuser_url, drivername="postgresql"))
    try:
        for statement in statements(docs_sql("roles.sql", names)):
            await conn.execute(statement)  # one by one: CREATE DATABASE refuses a transaction
        for role, password in passwords.items():
            await conn.execute(f"ALTER ROLE \"{role}\" PASSWORD '{password}'")
    finally:
        await conn.close()
    database = names["audit"]
    service, verifier = names["audit_app"], names["audit_verifier"]
    roles = Roles(
        admin_url=dsn(superuser_url, database=database),
        service_url=dsn(
            superuser_url, database=database, username=service, password=passwords[service]
        ),
        verifier_url=dsn(
            superuser_url, database=database, username=verifier, password=passwords[verifier]
        ),
        owner=names["audit_owner"],
        service=service,
        verifier=verifier,
        database=database,
    )
    roles.migrate()
    await roles.grant()
    return roles


async def drop_roles(superuser_url: str, roles: Roles) -> None:
    conn = await asyncpg.connect(dsn(superuser_url, drivername="postgresql"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{roles.database}" WITH (FORCE)')
        for role in (roles.service, roles.verifier, roles.owner):
            await conn.execute(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        await conn.close()


async def is_superuser(url: str) -> bool:
    conn = await asyncpg.connect(dsn(url, drivername="postgresql"))
    try:
        return bool(
            await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        )
    finally:
        await conn.close()
