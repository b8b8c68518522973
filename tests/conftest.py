"""Test setup: a private PostgreSQL (or TEST_DATABASE_URL), a migrated SQLite template, and
per-test apps on either database with a clean schema."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from audit_service.audit_log.models import AuditEvent
from audit_service.auth.models import User
from audit_service.core import migrations, security
from audit_service.core.config import Settings
from audit_service.core.db import create_engine
from audit_service.core.security import hash_password
from audit_service.main import create_app
from tests.pg import ROLE_NAMES, Roles, TempPostgres, create_roles, drop_roles, is_superuser

# Production-strength argon2 costs ~0.1-0.9 s of CPU per hash on these machines; the tests
# hash hundreds of times, so they use the cheapest parameters (the code path is the same).
security._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
security._dummy_hash = security._hasher.hash("dummy-password")

T = TypeVar("T")
ADMIN_PASSWORD = "admin-password-123"
PASSWORD = "user-password-123"
CLIENT_IP = "203.0.113.7"
# A throwaway checkpoint key for the tests (never used anywhere else).
LOG_SIGNING_KEY = (
    "PRIVATE+KEY+test.audit-service+a8ef16e7+AR9/dunUOgfNeMO/RKBFec5umCGKInBG9ihAQ8v7Jt2i"
)
TABLES = (
    "audit_event",
    "revoked_token",
    "api_key",
    "action_schema",
    "login_counter",
    "runtime_setting",
    "source_action",
    "job_lease",
    "audit_leaf",
    "export_recipient",
    "integrity_tile",
    "integrity_checkpoint",
    "integrity_key",
    "integrity_log",
    "stats_bucket",
    "stats_bucket_hour",
    "stats_bucket_day",
    "stats_actor_bucket",
    "stats_actor_bucket_day",
    "stats_actor_tenant_day",
    "stats_ip_bucket",
    "stats_ip_bucket_day",
    "stats_watermark",
    "stats_facet",
    "forward_dead_letter",
    "forward_replay",
    "forward_destination",
    "report_run",
    "report_schedule",
    "integrity_verify_run",
    "integrity_verify_task",
    "notification_subject",
    "notification_group",
    "alert_channel",
    "alert",
    "detection_rule_setting",
    "detection_state",
    "detection_login",
    "detection_network",
    "detection_privilege",
    "detection_volume",
    "detection_subject",
    "detection_suppression",
    "retention_archive",
    "retention_hold",
    "retention_policy",
    "retention_restore",
    "retention_purge",
    "retention_erasure",
    "retention_door",
    "integrity_commitment",
    '"user"',
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with a `slow` test first, then the others by their number of tests, each file's
    tests kept together and in their order. `make test` runs with `--dist loadfile
    --no-loadscope-reorder`, so xdist hands files out in this order: the minute-long ones
    (the time-boxed schemathesis run, the 100k verify, the chaos and browser tests) start
    while there is still other work for the second worker, instead of the last of them
    running alone at the end while the other worker idles (~45 s of a 2-worker run,
    replaying the last full run's per-file times). Running the contract test early ages
    no data: what tests take at import ages with the whole run anyway (see NOW in
    tests/ingestion/test_events.py)."""
    files: dict[str, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    order = sorted(
        files.values(),
        key=lambda tests: (not any(t.get_closest_marker("slow") for t in tests), -len(tests)),
    )
    items[:] = [item for tests in order for item in tests]


# The service runs as the restricted role of docs/roles.sql + docs/grants.sql on PostgreSQL,
# as in production: a test that needs more (DDL, tampering, truncation) says so by using
# `pg_admin_url` or `Harness.admin()`. Service URL → the superuser URL of its database.
_ADMIN_URLS: dict[str, str] = {}


def _blocking(work: Callable[[], Awaitable[T]]) -> T:
    # Session fixtures are set up from inside async fixtures too (db_url asks for pg_url
    # lazily), where no second event loop may run: the role setup gets a thread of its own.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work()).result()


@pytest.fixture(scope="session")
def pg_roles() -> Iterator[Roles]:
    """The session's PostgreSQL with the deployment's roles: a private server with the
    scripts' own names, or on TEST_DATABASE_URL (a superuser) a database and roles of this
    run's own, dropped at the end."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        if not _blocking(lambda: is_superuser(external)):
            pytest.exit(
                "TEST_DATABASE_URL must name a superuser: the suite creates its roles and a "
                "database of its own on that server (docs/roles.sql) and tampers with the "
                "log on purpose",
                returncode=4,
            )
        suffix = uuid.uuid4().hex[:8]
        names = {n: f"{n}_{suffix}" for n in ROLE_NAMES}
        roles = _blocking(lambda: create_roles(external, names))
        _ADMIN_URLS[roles.service_url] = roles.admin_url
        try:
            yield roles
        finally:
            _blocking(lambda: drop_roles(external, roles))
        return
    server = TempPostgres()
    try:
        url = server.start()
        roles = _blocking(lambda: create_roles(url, {n: n for n in ROLE_NAMES}))
        _ADMIN_URLS[roles.service_url] = roles.admin_url
        yield roles
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_url(pg_roles: Roles) -> str:
    """The service's role (INSERT + SELECT on the log, no DDL), as the service connects."""
    return pg_roles.service_url


@pytest.fixture(scope="session")
def pg_admin_url(pg_roles: Roles) -> str:
    """The superuser, in the same database, for what the service's role may not do:
    truncating between tests, DDL, tampering with the log on purpose."""
    return pg_roles.admin_url


@pytest.fixture(scope="session")
def pg_verifier_url(pg_roles: Roles) -> str:
    """The read-only role of `audit-service verify` (SELECT on the log tables and keys)."""
    return pg_roles.verifier_url


def admin_url(url: str) -> str:
    """The superuser URL for a service URL of the session's PostgreSQL; any other URL (a
    SQLite file, a server of a test's own) as it is."""
    return _ADMIN_URLS.get(url, url)


@contextlib.asynccontextmanager
async def admin_connection(url: str) -> AsyncIterator[AsyncConnection]:
    """A transaction on `url`'s database as its superuser (SQLite: the same file)."""
    engine = create_engine(admin_url(url))
    try:
        async with engine.begin() as conn:
            yield conn
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    migrations.upgrade(f"sqlite+aiosqlite:///{path}")
    return path


# The tables of TABLES that are not as TRUNCATE left them: a heap of more than zero bytes
# (any INSERT, even one rolled back or deleted since, extends it; TRUNCATE gives a new, empty
# file), or an identity/serial sequence that has handed out a value (nextval() runs before
# a NOT NULL or CHECK violation, so a failed INSERT may advance it without touching the heap).
_DIRTY_TABLES = text(
    """
    SELECT t.name FROM unnest(CAST(:names AS text[])) AS t(name)
    WHERE pg_relation_size(CAST(t.name AS regclass)) > 0
       OR EXISTS (
            SELECT FROM pg_depend d JOIN pg_sequence s ON s.seqrelid = d.objid
            WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
              AND d.refobjid = CAST(t.name AS regclass) AND d.deptype IN ('a', 'i')
              -- (a CASE on the joined row: never called on an oid that is no sequence)
              AND CASE WHEN s.seqrelid = d.objid THEN pg_sequence_last_value(s.seqrelid) END
                  IS NOT NULL)
    """
)


async def _truncate(url: str) -> None:
    """Empty every table of the session's PostgreSQL (`url`: its service URL)."""
    async with admin_connection(url) as conn:
        # The log tables refuse TRUNCATE (migrations 0004, 0009) and the service's role has
        # no such privilege; the superuser switches the triggers off for this transaction.
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        # Only the tables a test touched (and what CASCADE adds): TRUNCATE gives each table,
        # index and TOAST table a new file; all 52 took 75-360 ms per test on the shared
        # 2-core box, the touched ones 39-75 ms, times ~1,000 PostgreSQL tests (most write
        # three or four tables). The end state is the same as truncating all: every table
        # empty, every identity sequence restarted.
        dirty = list(await conn.scalars(_DIRTY_TABLES, {"names": list(TABLES)}))
        if dirty:
            await conn.execute(text(f"TRUNCATE {', '.join(dirty)} RESTART IDENTITY CASCADE"))
        await conn.execute(
            text("UPDATE log_cursor SET next_position = 0, cursor_txid = NULL, cursor_id = 0")
        )


@pytest.fixture(params=["postgres", "sqlite"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A clean, migrated database of each kind; API tests run on both."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        await _truncate(url)
        return url
    template: Path = request.getfixturevalue("sqlite_template")
    path = tmp_path / "audit.db"
    shutil.copy(template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def pg_only_url(pg_url: str) -> str:
    await _truncate(pg_url)
    return pg_url


def make_settings(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": url,
        "jwt_secret": "test-secret-" + "x" * 40,
        "log_signing_key": LOG_SIGNING_KEY,
        "log_origin": "testserver/audit-service/test",
        "bootstrap_admin_password": ADMIN_PASSWORD,
        "default_rate_limit": "10000/minute",
        "login_rate_limit": "1000/minute",
        # Off unless a test is about jobs: a job writing beside a test would make exact
        # counts of rows and events racy.
        "run_jobs": False,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(db_url: str) -> Settings:
    return make_settings(db_url)


class Harness:
    """An app running its lifespan, a client, and direct database access for assertions."""

    def __init__(self, app: Any, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client

    @property
    def engine(self) -> AsyncEngine:
        engine: AsyncEngine = self.app.state.engine
        return engine

    def admin(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """A transaction as the database's superuser, for what the service's role may not do
        (DDL, tampering); on SQLite, the same file."""
        return admin_connection(self.app.state.settings.database_url)

    async def events(self, **where: Any) -> list[AuditEvent]:
        async with self.app.state.sessionmaker() as session:
            stmt = select(AuditEvent).filter_by(**where).order_by(AuditEvent.id)
            return list((await session.scalars(stmt)).all())

    async def last_event(self) -> AuditEvent:
        events = await self.events()
        assert events, "no event recorded"
        return events[-1]

    async def count_events(self) -> int:
        return len(await self.events())

    async def create_user(self, username: str, role: str = "user", *, active: bool = True) -> User:
        async with self.app.state.sessionmaker() as session:
            user = User(
                username=username,
                role=role,
                password_hash=hash_password(PASSWORD),
                is_active=active,
                token_version=0,
            )
            session.add(user)
            await session.commit()
            return user

    async def token(self, username: str = "admin", password: str | None = None) -> str:
        password = password or (ADMIN_PASSWORD if username == "admin" else PASSWORD)
        r = await self.client.post("/login", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        token: str = r.json()["access_token"]
        return token

    async def auth(self, username: str = "admin", role: str | None = None) -> dict[str, str]:
        """Bearer headers for `username` (created with `role` first when given)."""
        if role is not None:
            await self.create_user(username, role)
        return {"Authorization": f"Bearer {await self.token(username)}"}


async def start_harness(settings: Settings) -> AsyncIterator[Harness]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 40000))
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver",
            headers={"User-Agent": "pytest-client/1.0"},
        ) as client:
            yield Harness(app, client)


@pytest.fixture
async def h(settings: Settings) -> AsyncIterator[Harness]:
    async for harness in start_harness(settings):
        yield harness
