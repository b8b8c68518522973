"""kill -9 mid-delete: the next run finishes, nothing is deleted twice, no second tombstone;
and the service's role cannot delete or rewrite events except through the path (PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from audit_service.core.config import Settings
from audit_service.retention.privacy_models import RetentionPurge
from audit_service.retention.purge import run_purge
from tests.conftest import Harness, make_settings
from tests.integrity.helpers import seal
from tests.retention.forget_helpers import (
    NOW,
    add_events,
    add_segment,
    at,
    existing,
    row,
    set_policies,
    verify_all,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(db_url: str) -> Settings:
    return make_settings(db_url, retention_batch=2)


async def test_kill_9_mid_delete_then_the_rerun_finishes(h: Harness) -> None:
    policies = await set_policies(h)
    ids = await add_events(h, [row(at(400, i)) for i in range(7)])
    await seal(h)
    await add_segment(h, policies["rest"], at(400).date(), "e" * 64)
    url = h.app.state.settings.database_url
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.retention.forget_crash",
        url,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"},
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    # One batch of two committed; the second died with the process.
    assert len(await existing(h, ids)) == 5
    assert len(await h.events(action="retention.purged")) == 1

    report = await run_purge(h.app.state.sessionmaker, h.app.state.settings, NOW)
    assert report.tombstones == [] and report.deleted == 5
    assert await existing(h, ids) == []
    assert len(await h.events(action="retention.purged")) == 1
    async with h.app.state.sessionmaker() as session:
        (purge,) = (await session.scalars(select(RetentionPurge))).all()
    assert purge.deleted == 7 and purge.planned == 7 and purge.finished_at is not None
    await seal(h)
    result = await verify_all(h)
    assert result.status == "intact" and result.purged == 7


async def test_service_role_cannot_delete_or_update_events(pg_only_url: str) -> None:
    from tests.conftest import start_harness

    async for h in start_harness(make_settings(pg_only_url)):
        ids = await add_events(h, [row(at(10, 1)), row(at(10, 2))])
        for statement in (
            "DELETE FROM audit_event WHERE id = :i",
            "UPDATE audit_event SET ip = '198.51.100.0' WHERE id = :i",
            "DELETE FROM integrity_key",
            "INSERT INTO integrity_commitment (event_pk) VALUES (:i)",
        ):
            async with h.app.state.sessionmaker() as session:
                with pytest.raises(DBAPIError, match="permission denied"):
                    await session.execute(text(statement), {"i": ids[0]})
        # The functions refuse an event that is not the call's kind, and rows outside it.
        async with h.app.state.sessionmaker() as session:
            with pytest.raises(DBAPIError, match=r"not a retention\.anonymized event"):
                await session.execute(
                    text(
                        "SELECT audit_retention_anonymize(:e, ARRAY[:e]::bigint[], "
                        "ARRAY[NULL]::text[], ARRAY[NULL]::bytea[], ARRAY[NULL]::bytea[], "
                        "ARRAY[NULL]::bytea[], ARRAY[NULL]::bytea[])"
                    ),
                    {"e": ids[0]},
                )
        async with h.app.state.sessionmaker() as session:
            from audit_service.audit_log.context import system_event
            from audit_service.retention import forget_repository as repo

            pk = await repo.insert_event(
                session,
                system_event(repo.ANONYMIZED, "retention", "x", days=["2001-01-01"], ip=True),
            )
            with pytest.raises(DBAPIError, match="outside the days"):
                await repo.rewrite(
                    session, "anonymize", pk, [repo.Rewrite(ids[0], None, None, None, None, None)]
                )
        # The verify role has no EXECUTE.
        assert await existing(h, ids) == ids
