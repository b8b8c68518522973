"""Schema changes only through Alembic: migrations round-trip and agree with the models."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from audit_service.core import migrations
from audit_service.core.db import create_engine
from audit_service.kit.models import include_object
from audit_service.models import Base
from tests.pg import Roles, dsn


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={"compare_type": True, "include_object": include_object(connection.dialect.name)},
    )
    return list(compare_metadata(context, Base.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) - {"alembic_version"}


@pytest.fixture(params=["postgres", "sqlite"])
async def empty_db(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, str | None]]:
    """An empty database and the role its migrations run as. PostgreSQL: a scratch database
    owned by the session's schema owner (NOLOGIN), migrated by the superuser's login as that
    role, as in production (the session's own database stays at head for other tests)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'm.db'}", None
        return
    roles: Roles = request.getfixturevalue("pg_roles")
    name = f"mig_{uuid.uuid4().hex[:12]}"
    admin = create_engine(roles.admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}" OWNER "{roles.owner}"'))
        yield dsn(roles.admin_url, database=name), roles.owner
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


async def test_upgrade_downgrade_upgrade_and_models_agree(
    empty_db: tuple[str, str | None],
) -> None:
    url, role = empty_db
    engine = create_engine(url)
    try:
        migrations.upgrade(url, role=role)
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
            assert await conn.run_sync(_tables) == {t.name for t in Base.metadata.sorted_tables}
            if role:
                owners = await conn.scalars(
                    text("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
                )
                assert list(owners) == [role]
        migrations.downgrade(url, "base", role=role)
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) == set()
            if engine.dialect.name == "postgresql":
                count = await conn.scalar(
                    text(
                        "SELECT count(*) FROM pg_proc WHERE proname IN "
                        "('audit_event_append_only', 'log_append_only', "
                        "'integrity_tile_grows_only')"
                    )
                )
                assert count == 0
        migrations.upgrade(url, role=role)
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()
