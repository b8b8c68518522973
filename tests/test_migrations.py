"""Schema changes only through Alembic: migrations round-trip and agree with the models."""

from __future__ import annotations

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


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={"compare_type": True, "include_object": include_object(connection.dialect.name)},
    )
    return list(compare_metadata(context, Base.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) - {"alembic_version"}


@pytest.fixture(params=["postgres", "sqlite"])
async def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    url: str = request.getfixturevalue("pg_url")
    migrations.downgrade(url, "base")
    return url


async def test_upgrade_downgrade_upgrade_and_models_agree(empty_url: str) -> None:
    engine = create_engine(empty_url)
    try:
        migrations.upgrade(empty_url)
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
            assert await conn.run_sync(_tables) == {t.name for t in Base.metadata.sorted_tables}
        migrations.downgrade(empty_url, "base")
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) == set()
            if engine.dialect.name == "postgresql":
                count = await conn.scalar(
                    text("SELECT count(*) FROM pg_proc WHERE proname = 'audit_event_append_only'")
                )
                assert count == 0
        migrations.upgrade(empty_url)
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()
