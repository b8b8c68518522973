"""The `audit-service` command line, run for real in subprocesses, and the settings it relies on.

Subprocesses use `sys.executable -m audit_service.cli`, so they run from whichever environment
runs the tests. The users a command changes are checked through the API (log in over HTTP)
and through the audit events the command must leave behind.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import stat
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory
from pydantic import ValidationError
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from audit_service.audit_log.models import AuditEvent
from audit_service.auth.models import User
from audit_service.core import migrations
from audit_service.core.config import Settings
from audit_service.core.db import create_engine, create_sessionmaker
from tests.conftest import LOG_SIGNING_KEY, Harness, make_settings, start_harness
from tests.pg import free_port

PASSWORD_1 = "first-Correct-horse-1"
PASSWORD_2 = "second-Battery-staple-2"
STRONG_SECRET = secrets.token_urlsafe(48)
harness = asynccontextmanager(start_harness)


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def shows(self, secret: str) -> bool:
        return secret in self.out or secret in self.err


def _clean_env(**extra: str) -> dict[str, str]:
    # The caller's AUDIT_* settings must not leak into the command under test.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_")}
    env.pop("DATABASE_URL", None)
    env.update(extra)
    return env


async def cli(url: str, *args: str, stdin: str = "", cwd: Path, **env: str) -> Run:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "audit_service.cli",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=_clean_env(DATABASE_URL=url, **env),
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout=120)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


async def user_events(url: str, username: str) -> list[AuditEvent]:
    """Every `user.*` event whose target is `username`, oldest first."""
    engine = create_engine(url)
    try:
        async with create_sessionmaker(engine)() as session:
            user_id = await session.scalar(select(User.id).where(User.username == username))
            assert user_id is not None, f"no user {username!r}"
            stmt = (
                select(AuditEvent)
                .where(AuditEvent.action.like("user.%"), AuditEvent.target_id == str(user_id))
                .order_by(AuditEvent.id)
            )
            return list((await session.scalars(stmt)).all())
    finally:
        await engine.dispose()


async def count_users(url: str, username: str | None = None) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            stmt = select(func.count()).select_from(User)
            if username is not None:
                stmt = stmt.where(User.username == username)
            return int((await conn.execute(stmt)).scalar_one())
    finally:
        await engine.dispose()


async def login(h: Harness, username: str, password: str) -> httpx.Response:
    return await h.client.post("/login", json={"username": username, "password": password})


def list_row(run: Run, username: str) -> list[str]:
    rows = [line.split() for line in run.out.splitlines()]
    matching = [row for row in rows if len(row) == 4 and row[1] == username]
    assert len(matching) == 1, run.out
    return matching[0][1:]


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A clean, migrated SQLite database, for checks that end before any SQL runs (or whose
    SQL is the same on both dialects)."""
    path = tmp_path / "cli.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


# --- users ----------------------------------------------------------------------------------


async def test_user_lifecycle_through_the_cli(db_url: str, tmp_path: Path) -> None:
    created = await cli(
        db_url,
        "users",
        "create",
        "--username",
        "alice",
        "--role",
        "auditor",
        "--full-name",
        "Alice Auditor",
        "--password-stdin",
        stdin=PASSWORD_1 + "\n",
        cwd=tmp_path,
    )
    assert created.code == 0, created.err
    assert re.search(r"created user \d+ 'alice' with role auditor", created.out)
    assert not created.shows(PASSWORD_1)

    listed = await cli(db_url, "users", "list", cwd=tmp_path)
    assert listed.code == 0, listed.err
    assert list_row(listed, "alice") == ["alice", "auditor", "yes"]

    async with harness(make_settings(db_url)) as h:
        r = await login(h, "alice", PASSWORD_1)
        assert r.status_code == 200, r.text
        old_token = {"Authorization": f"Bearer {r.json()['access_token']}"}
        me = await h.client.get("/me", headers=old_token)
        assert me.status_code == 200
        assert (me.json()["username"], me.json()["role"], me.json()["full_name"]) == (
            "alice",
            "auditor",
            "Alice Auditor",
        )

        changed = await cli(
            db_url,
            "users",
            "set-password",
            "--username",
            "alice",
            "--password-stdin",
            stdin=PASSWORD_2 + "\n",
            cwd=tmp_path,
        )
        assert changed.code == 0, changed.err
        assert "existing sessions revoked" in changed.out
        assert not changed.shows(PASSWORD_1) and not changed.shows(PASSWORD_2)
        assert (await h.client.get("/me", headers=old_token)).status_code == 401
        assert (await login(h, "alice", PASSWORD_1)).status_code == 401
        r = await login(h, "alice", PASSWORD_2)
        assert r.status_code == 200, r.text
        new_token = {"Authorization": f"Bearer {r.json()['access_token']}"}

        disabled = await cli(db_url, "users", "disable", "--username", "alice", cwd=tmp_path)
        assert disabled.code == 0, disabled.err
        assert "deactivated" in disabled.out
        assert (await login(h, "alice", PASSWORD_2)).status_code == 401
        assert (await h.client.get("/me", headers=new_token)).status_code == 401

    listed = await cli(db_url, "users", "list", cwd=tmp_path)
    assert list_row(listed, "alice") == ["alice", "auditor", "no"]

    events = await user_events(db_url, "alice")
    assert [e.action for e in events] == ["user.created", "user.updated", "user.deactivated"]
    for event in events:
        assert (event.actor_type, event.actor_id, event.module, event.outcome) == (
            "system",
            "cli",
            "users",
            "success",
        )
        assert event.actor_name is not None and event.actor_name.startswith("cli:")
        assert event.target_type == "user"
        assert event.ip is None and event.request_id is None  # not an HTTP request
        assert PASSWORD_1 not in str(event.event_metadata) + (event.description or "")
        assert PASSWORD_2 not in str(event.event_metadata) + (event.description or "")


async def test_duplicate_username_is_refused_clearly(db_url: str, tmp_path: Path) -> None:
    args = ("users", "create", "--username", "bob", "--password-stdin")
    first = await cli(db_url, *args, stdin=PASSWORD_1, cwd=tmp_path)
    assert first.code == 0, first.err
    second = await cli(db_url, *args, stdin=PASSWORD_2, cwd=tmp_path)
    assert second.code != 0
    assert "Username 'bob' is taken" in second.err
    assert "Traceback" not in second.err
    assert not second.shows(PASSWORD_2)
    assert await count_users(db_url, "bob") == 1
    assert [e.action for e in await user_events(db_url, "bob")] == ["user.created"]
    # The first password still stands.
    async with harness(make_settings(db_url)) as h:
        assert (await login(h, "bob", PASSWORD_1)).status_code == 200
        assert (await login(h, "bob", PASSWORD_2)).status_code == 401


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("", "at least 12 characters"),
        ("short-pw", "at least 12 characters"),
        ("elevenchars", "at least 12 characters"),
        # POST /login takes at most 1024: a longer one could never be used.
        ("p" * 1025, "at most 1024 characters"),
    ],
)
async def test_too_short_or_too_long_password_is_refused(
    sqlite_url: str, tmp_path: Path, password: str, message: str
) -> None:
    run = await cli(
        sqlite_url,
        "users",
        "create",
        "--username",
        "carol",
        "--password-stdin",
        stdin=password + "\n",
        cwd=tmp_path,
    )
    assert run.code != 0
    assert message in run.err
    assert password == "" or not run.shows(password)
    assert await count_users(sqlite_url, "carol") == 0


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("--username", ""), "username"),
        (("--username", "has spaces"), "username"),
        (("--username", "ab"), "username"),
        (("--username", "frank", "--full-name", "F" * 201), "full_name"),
    ],
)
async def test_invalid_user_is_refused_as_the_api_would(
    sqlite_url: str, tmp_path: Path, args: tuple[str, ...], field: str
) -> None:
    run = await cli(
        sqlite_url, "users", "create", *args, "--password-stdin", stdin=PASSWORD_1, cwd=tmp_path
    )
    assert run.code != 0
    assert f"invalid user: {field}:" in run.err
    assert "Traceback" not in run.err
    assert not run.shows(PASSWORD_1)
    assert await count_users(sqlite_url) == 0


async def test_too_short_new_password_leaves_the_old_one(sqlite_url: str, tmp_path: Path) -> None:
    # SQLite only: the new password is refused before anything is written (cli.py reads
    # it after looking the user up, then stops), so PostgreSQL would run the same code; the
    # CLI's writes on both dialects are test_user_lifecycle_through_the_cli's.
    db_url = sqlite_url
    created = await cli(
        db_url,
        "users",
        "create",
        "--username",
        "dave",
        "--password-stdin",
        stdin=PASSWORD_1,
        cwd=tmp_path,
    )
    assert created.code == 0, created.err
    run = await cli(
        db_url,
        "users",
        "set-password",
        "--username",
        "dave",
        "--password-stdin",
        stdin="tiny",
        cwd=tmp_path,
    )
    assert run.code != 0 and "at least 12 characters" in run.err
    assert [e.action for e in await user_events(db_url, "dave")] == ["user.created"]
    async with harness(make_settings(db_url)) as h:
        assert (await login(h, "dave", PASSWORD_1)).status_code == 200


@pytest.mark.parametrize("command", ["set-password", "disable"])
async def test_unknown_user_is_an_error(sqlite_url: str, tmp_path: Path, command: str) -> None:
    args = ["users", command, "--username", "ghost"]
    if command == "set-password":
        args.append("--password-stdin")
    run = await cli(sqlite_url, *args, stdin=PASSWORD_1, cwd=tmp_path)
    assert run.code != 0
    assert "no user 'ghost'" in run.err
    assert "Traceback" not in run.err


# --- migrate --------------------------------------------------------------------------------


@pytest.fixture
async def fresh_pg_url(pg_admin_url: str) -> AsyncIterator[str]:
    """An empty database on the test server, never migrated (the superuser's: creating
    databases is not the service's role's business)."""
    pg_url = pg_admin_url
    name = f"cli_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        engine = create_engine(pg_url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(sql))
        finally:
            await engine.dispose()

    try:
        await admin(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # TEST_DATABASE_URL may name an account without CREATEDB
        pytest.skip(f"cannot create a database: {exc}")
    yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    await admin(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(params=["postgres", "sqlite"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("fresh_pg_url")
        return url
    return f"sqlite+aiosqlite:///{tmp_path / 'var' / 'fresh.db'}"


async def _schema_version(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT version_num FROM alembic_version"))
            return [row[0] for row in rows]
    finally:
        await engine.dispose()


async def test_migrate_builds_the_schema_and_is_idempotent(
    empty_db_url: str, tmp_path: Path
) -> None:
    head = ScriptDirectory.from_config(migrations.alembic_config(empty_db_url)).get_current_head()
    assert head is not None
    first = await cli(empty_db_url, "migrate", cwd=tmp_path)
    assert first.code == 0, first.err
    assert "database schema is up to date" in first.out
    assert await _schema_version(empty_db_url) == [head]

    created = await cli(
        empty_db_url,
        "users",
        "create",
        "--username",
        "erin",
        "--password-stdin",
        stdin=PASSWORD_1,
        cwd=tmp_path,
    )
    assert created.code == 0, created.err

    again = await cli(empty_db_url, "migrate", cwd=tmp_path)
    assert again.code == 0, again.err
    assert await _schema_version(empty_db_url) == [head]
    # Re-running changed nothing: the data is still there.
    assert await count_users(empty_db_url, "erin") == 1


async def test_migrate_as_a_role_needs_postgres(sqlite_url: str, tmp_path: Path) -> None:
    """`--role` (SET ROLE to the schema owner) on SQLite: a plain message, no traceback.
    PostgreSQL's own refusals are in tests/deploy/test_roles.py."""
    run = await cli(sqlite_url, "migrate", "--role", "audit_owner", cwd=tmp_path)
    assert run.code != 0 and "Traceback" not in run.err
    assert "cannot run as role 'audit_owner'" in run.err and "PostgreSQL only" in run.err


async def test_cli_refuses_production_without_a_secret(sqlite_url: str, tmp_path: Path) -> None:
    run = await cli(
        sqlite_url,
        "migrate",
        cwd=tmp_path,
        AUDIT_ENV="production",
        AUDIT_LOG_SIGNING_KEY=LOG_SIGNING_KEY,
    )
    assert run.code != 0
    assert "AUDIT_JWT_SECRET" in run.err
    ok = await cli(
        sqlite_url,
        "migrate",
        cwd=tmp_path,
        AUDIT_ENV="production",
        AUDIT_LOG_SIGNING_KEY=LOG_SIGNING_KEY,
        AUDIT_JWT_SECRET=STRONG_SECRET,
    )
    assert ok.code == 0, ok.err
    assert not ok.shows(STRONG_SECRET)


# --- serve ----------------------------------------------------------------------------------


async def test_serve_migrates_answers_healthz_and_stops_on_sigterm(tmp_path: Path) -> None:
    """What the container does: `serve` on an empty database, probed like the HEALTHCHECK."""
    port = free_port()
    url = f"sqlite+aiosqlite:///{tmp_path / 'var' / 'served.db'}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "audit_service.cli",
        "serve",
        "--port",
        str(port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
        env=_clean_env(
            DATABASE_URL=url,
            AUDIT_ENV="production",
            AUDIT_LOG_SIGNING_KEY=LOG_SIGNING_KEY,
            AUDIT_JWT_SECRET=STRONG_SECRET,
            AUDIT_BOOTSTRAP_ADMIN_PASSWORD=PASSWORD_1,
        ),
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for _ in range(200):
                try:
                    health = await client.get("/healthz")
                    break
                except httpx.TransportError:
                    assert proc.returncode is None, "server exited early"
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("server did not come up")
            assert health.status_code == 200 and health.json() == {"status": "ok"}
            ready = await client.get("/readyz")
            assert ready.status_code == 200
            r = await client.post("/login", json={"username": "admin", "password": PASSWORD_1})
            assert r.status_code == 200, r.text
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    # uvicorn shuts down gracefully, then re-raises the signal it caught (recent versions).
    assert proc.returncode in (0, -signal.SIGTERM), err.decode()
    assert "Application shutdown complete" in err.decode()
    assert PASSWORD_1 not in out.decode() + err.decode()
    assert STRONG_SECRET not in out.decode() + err.decode()
    # Production with a configured secret never writes a development key.
    assert not (tmp_path / "var" / "jwt_secret").exists()


# --- settings -------------------------------------------------------------------------------


@pytest.fixture
def no_audit_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("AUDIT_") or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    "secret",
    ["", "changeme", "  SECRET  ", "your_jwt_secret_key", "only-31-characters-long-abcdefg"],
)
def test_production_refuses_a_weak_jwt_secret(no_audit_env: Path, secret: str) -> None:
    with pytest.raises(ValidationError, match="AUDIT_JWT_SECRET"):
        Settings(env="production", log_signing_key=LOG_SIGNING_KEY, jwt_secret=secret)


def test_production_refuses_a_missing_jwt_secret_from_the_environment(
    no_audit_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIT_ENV", "production")
    monkeypatch.setenv("AUDIT_LOG_SIGNING_KEY", LOG_SIGNING_KEY)
    with pytest.raises(ValidationError, match="AUDIT_JWT_SECRET"):
        Settings()


def test_production_accepts_a_strong_secret(
    no_audit_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(env="production", log_signing_key=LOG_SIGNING_KEY, jwt_secret=STRONG_SECRET)
    assert settings.env == "production"
    assert settings.signing_key() == STRONG_SECRET
    monkeypatch.setenv("AUDIT_ENV", "production")
    monkeypatch.setenv("AUDIT_LOG_SIGNING_KEY", LOG_SIGNING_KEY)
    monkeypatch.setenv("AUDIT_JWT_SECRET", STRONG_SECRET)
    assert Settings().signing_key() == STRONG_SECRET
    assert not (no_audit_env / "var").exists()


def test_development_generates_a_key_once_and_reuses_it(no_audit_env: Path) -> None:
    key_file = no_audit_env / "var" / "jwt_secret"
    assert not key_file.exists()
    key = Settings().signing_key()
    assert len(key) >= 32
    assert key_file.read_text().strip() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600  # a secret: owner only
    # A restart (a new Settings) keeps the key, so tokens survive it.
    assert Settings().signing_key() == key
    # A configured secret wins over the file, and leaves it alone.
    assert Settings(jwt_secret="configured-" + "k" * 30).signing_key() == "configured-" + "k" * 30
    assert key_file.read_text().strip() == key


def test_development_keys_differ_per_directory(
    no_audit_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = Settings().signing_key()
    other = no_audit_env / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    assert Settings().signing_key() != first


@pytest.mark.parametrize("content", ["", "\n", "too-short"])
def test_development_replaces_an_empty_or_truncated_key_file(
    no_audit_env: Path, content: str
) -> None:
    key_file = no_audit_env / "var" / "jwt_secret"
    key_file.parent.mkdir()
    key_file.write_text(content)
    key_file.chmod(0o644)
    key = Settings().signing_key()
    assert len(key) >= 32  # never sign with an empty (forgeable) key
    assert key_file.read_text().strip() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_cli_actor_survives_a_uid_without_a_passwd_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Containers may run as an arbitrary UID (`docker run --user 12345`)."""
    import getpass

    from audit_service import cli as cli_module

    def no_such_user() -> str:
        raise KeyError("getpwuid(): uid not found: 12345")

    monkeypatch.setattr(getpass, "getuser", no_such_user)
    assert cli_module._os_user() == f"uid:{os.getuid()}"


# --- the CLI goes through the services' rules --------------------------------------------


async def _create(url: str, username: str, role: str, cwd: Path) -> None:
    run = await cli(
        url,
        "users",
        "create",
        "--username",
        username,
        "--role",
        role,
        "--password-stdin",
        stdin=PASSWORD_1,
        cwd=cwd,
    )
    assert run.code == 0, run.err


async def test_cli_cannot_disable_the_last_active_admin(db_url: str, tmp_path: Path) -> None:
    await _create(db_url, "root", "admin", tmp_path)
    refused = await cli(db_url, "users", "disable", "--username", "root", cwd=tmp_path)
    assert refused.code != 0
    assert "Cannot demote or deactivate the last active admin" in refused.err
    assert "Traceback" not in refused.err
    listed = await cli(db_url, "users", "list", cwd=tmp_path)
    assert list_row(listed, "root") == ["root", "admin", "yes"]
    # The refusal is on the record, as a refused API request would be.
    events = await user_events(db_url, "root")
    assert [(e.action, e.outcome, e.actor_id) for e in events] == [
        ("user.created", "success", "cli"),
        ("user.updated", "failure", "cli"),
    ]
    # With a second admin the first can go.
    await _create(db_url, "second", "admin", tmp_path)
    done = await cli(db_url, "users", "disable", "--username", "root", cwd=tmp_path)
    assert done.code == 0, done.err
    assert [e.action for e in await user_events(db_url, "root")][-1] == "user.deactivated"
    async with harness(make_settings(db_url, bootstrap_admin_password=None)) as h:
        assert (await login(h, "root", PASSWORD_1)).status_code == 401
        assert (await login(h, "second", PASSWORD_1)).status_code == 200


async def test_cli_set_password_ends_a_lockout(db_url: str, tmp_path: Path) -> None:
    await _create(db_url, "locked", "user", tmp_path)
    async with harness(make_settings(db_url)) as h:
        for _ in range(5):
            assert (await login(h, "locked", "wrong-password")).status_code == 401
        assert (await login(h, "locked", PASSWORD_1)).status_code == 429
        run = await cli(
            db_url,
            "users",
            "set-password",
            "--username",
            "locked",
            "--password-stdin",
            stdin=PASSWORD_2,
            cwd=tmp_path,
        )
        assert run.code == 0, run.err
        assert (await login(h, "locked", PASSWORD_2)).status_code == 200


# --- settings errors never echo their input -------------------------------------------------


@pytest.mark.parametrize("command", [("migrate",), ("serve", "--port", "1"), ("users", "list")])
async def test_settings_errors_name_the_variable_but_never_echo_secrets(
    sqlite_url: str, tmp_path: Path, command: tuple[str, ...]
) -> None:
    weak_secret = "weak-secret-Zq9"  # too short for production
    bootstrap = "bootstrap-Pw-Xy7-never-shown"
    run = await cli(
        sqlite_url,
        *command,
        cwd=tmp_path,
        AUDIT_ENV="production",
        AUDIT_LOG_SIGNING_KEY=LOG_SIGNING_KEY,
        AUDIT_JWT_SECRET=weak_secret,
        AUDIT_BOOTSTRAP_ADMIN_PASSWORD=bootstrap,
    )
    assert run.code != 0
    assert "invalid settings" in run.err and "AUDIT_JWT_SECRET" in run.err
    assert "Traceback" not in run.err and "input_value" not in run.err
    assert not run.shows(weak_secret) and not run.shows(bootstrap)


async def test_a_postgresql_url_without_asyncpg_gets_a_clear_message(tmp_path: Path) -> None:
    url = "postgresql://auditor:Db-Pass-w0rd@127.0.0.1:1/audit"
    run = await cli(url, "migrate", cwd=tmp_path)
    assert run.code != 0
    assert "DATABASE_URL must use the async driver: postgresql+asyncpg://" in run.err
    assert "psycopg" not in run.err.replace("postgresql", "")  # no "No module named psycopg"
    assert "Traceback" not in run.err and not run.shows("Db-Pass-w0rd")
    for bad in ("postgres://u@h/db", "sqlite:///x.db", "mysql+aiomysql://u@h/db", "nonsense"):
        run = await cli(bad, "migrate", cwd=tmp_path)
        assert run.code != 0 and "DATABASE_URL" in run.err and "Traceback" not in run.err, bad


async def test_production_refuses_to_run_without_recording_requests(
    sqlite_url: str, tmp_path: Path
) -> None:
    run = await cli(
        sqlite_url,
        "migrate",
        cwd=tmp_path,
        AUDIT_ENV="production",
        AUDIT_LOG_SIGNING_KEY=LOG_SIGNING_KEY,
        AUDIT_JWT_SECRET=STRONG_SECRET,
        AUDIT_RECORD_REQUESTS="false",
    )
    assert run.code != 0 and "AUDIT_RECORD_REQUESTS=false is refused" in run.err
    assert not run.shows(STRONG_SECRET)
    dev = await cli(sqlite_url, "migrate", cwd=tmp_path, AUDIT_RECORD_REQUESTS="false")
    assert dev.code == 0, dev.err  # development (benchmarks) may still turn it off


def test_secrets_are_secret_str(no_audit_env: Path) -> None:
    settings = Settings(
        env="production",
        log_signing_key=LOG_SIGNING_KEY,
        jwt_secret=STRONG_SECRET,
        bootstrap_admin_password="boot-pw-123456",
    )
    assert STRONG_SECRET not in repr(settings) and "boot-pw-123456" not in repr(settings)
    assert settings.signing_key() == STRONG_SECRET
    with pytest.raises(ValidationError) as caught:
        Settings(
            env="production",
            log_signing_key=LOG_SIGNING_KEY,
            jwt_secret=STRONG_SECRET,
            record_requests=False,
        )
    assert "AUDIT_RECORD_REQUESTS" in str(caught.value)
