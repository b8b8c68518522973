"""Test setup: a private PostgreSQL (or TEST_DATABASE_URL), a migrated SQLite template, and
per-test apps on either database with a clean schema."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_service.audit_log.models import AuditEvent
from audit_service.auth.models import User
from audit_service.core import migrations, security
from audit_service.core.config import Settings
from audit_service.core.db import create_engine
from audit_service.core.security import hash_password
from audit_service.main import create_app
from tests.pg import TempPostgres

# Production-strength argon2 costs ~0.1-0.9 s of CPU per hash on these machines; the tests
# hash hundreds of times, so they use the cheapest parameters (the code path is the same).
security._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
security._dummy_hash = security._hasher.hash("dummy-password")

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
    '"user"',
)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    if os.environ.get("TEST_DATABASE_URL"):
        url = os.environ["TEST_DATABASE_URL"]
        migrations.upgrade(url)
        yield url
        return
    server = TempPostgres()
    try:
        url = server.start()
        migrations.upgrade(url)
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    migrations.upgrade(f"sqlite+aiosqlite:///{path}")
    return path


async def _truncate(url: str) -> None:
    engine = create_engine(url)
    async with engine.begin() as conn:
        # audit_event refuses TRUNCATE (migration 0004); the test superuser switches its
        # triggers off for this transaction only.
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
        await conn.execute(
            text("UPDATE log_cursor SET next_position = 0, cursor_txid = NULL, cursor_id = 0")
        )
    await engine.dispose()


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


@pytest.fixture(scope="session")
def pg_admin_url(pg_url: str) -> str:
    """A superuser (or database owner) URL of the same database, for what the service's role
    may not do: truncating between tests, tampering with the log on purpose."""
    return pg_url


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
