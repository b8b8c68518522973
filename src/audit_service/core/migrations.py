"""Run Alembic from code (CLI `migrate`, tests), wherever the package is installed."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

from alembic import command
from alembic.config import Config


def _script_location() -> str:
    # Always the package's own migrations, wherever it is installed: never a directory found
    # in the working directory (inside another project's checkout that would run *its* env.py).
    return str(resources.files("audit_service") / "migrations")


def alembic_config(database_url: str, role: str | None = None) -> Config:
    """`role`: PostgreSQL only, the role the migrations run as (`SET ROLE`), e.g. the schema
    owner that cannot log in itself (docs/deployment.md)."""
    config = Config()
    config.set_main_option("script_location", _script_location())
    config.attributes["database_url"] = database_url
    config.attributes["role"] = role
    return config


def _isolated(
    step: Callable[[Config, str], None], database_url: str, revision: str, role: str | None
) -> None:
    # env.py drives its async engine with asyncio.run(), which cannot nest in a running loop
    # (tests, an app that migrates itself): give it a thread of its own.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(step, alembic_config(database_url, role), revision).result()


def upgrade(database_url: str, revision: str = "head", *, role: str | None = None) -> None:
    _isolated(command.upgrade, database_url, revision, role)


def downgrade(database_url: str, revision: str = "base", *, role: str | None = None) -> None:
    _isolated(command.downgrade, database_url, revision, role)
