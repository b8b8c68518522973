"""Run Alembic from code (CLI `migrate`, tests), wherever the package is installed."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alembic import command
from alembic.config import Config


def _script_location() -> Path:
    # Editable installs and source checkouts: <repo>/alembic. Images copy it next to the app.
    for candidate in (Path(__file__).resolve().parents[3] / "alembic", Path.cwd() / "alembic"):
        if (candidate / "env.py").exists():
            return candidate
    raise FileNotFoundError("alembic/ migrations directory not found")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_script_location()))
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
