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


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", _script_location())
    config.attributes["database_url"] = database_url
    return config


def _isolated(step: Callable[[Config, str], None], database_url: str, revision: str) -> None:
    # env.py drives its async engine with asyncio.run(), which cannot nest in a running loop
    # (tests, an app that migrates itself): give it a thread of its own.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(step, alembic_config(database_url), revision).result()


def upgrade(database_url: str, revision: str = "head") -> None:
    _isolated(command.upgrade, database_url, revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    _isolated(command.downgrade, database_url, revision)
