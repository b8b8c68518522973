"""Run the purge step in a process of its own and SIGKILL it mid-delete (after the first
batch is committed, inside the second): `python -m tests.retention.forget_crash URL`."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import UTC, datetime

from audit_service.core.config import Settings
from audit_service.core.db import create_engine, create_sessionmaker
from audit_service.retention import forget_repository as repo
from audit_service.retention.purge import run_purge

# tests/conftest.py's values (not imported: it loads the whole app and the test setup).
LOG_SIGNING_KEY = (
    "PRIVATE+KEY+test.audit-service+a8ef16e7+AR9/dunUOgfNeMO/RKBFec5umCGKInBG9ihAQ8v7Jt2i"
)
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # forget_helpers.NOW


async def main(url: str) -> None:
    engine = create_engine(url)
    calls = 0
    real = repo.purge_batch

    async def dying(session: object, tombstone: int, max_rows: int) -> int:
        nonlocal calls
        calls += 1
        n = await real(session, tombstone, max_rows)  # type: ignore[arg-type]
        if calls == 2:  # the second batch is deleted but not committed
            os.kill(os.getpid(), signal.SIGKILL)
        return n

    repo.purge_batch = dying  # type: ignore[assignment]
    settings = Settings(
        database_url=url,
        jwt_secret="test-secret-" + "x" * 40,
        log_signing_key=LOG_SIGNING_KEY,
        log_origin="testserver/audit-service/test",
        run_jobs=False,
        retention_batch=2,
    )
    await run_purge(create_sessionmaker(engine), settings, NOW)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
