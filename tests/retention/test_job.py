"""The leased `retention.run` job in the running service, and `audit-service retention run`
/ `archive restore` as an operator runs them (real clock: events seeded 200 days back)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from audit_service.integrity import note
from audit_service.kit.models import utcnow
from audit_service.retention import cli as retention_cli
from audit_service.retention.models import RetentionArchive, retention_restore
from tests.conftest import LOG_SIGNING_KEY, Harness, make_settings, start_harness
from tests.integrity.helpers import seal
from tests.retention.conftest import reset_policies, seed, vkey

ROOT = Path(__file__).resolve().parents[2]


async def _segments(h: Harness) -> int:
    async with h.app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(RetentionArchive)) or 0)


async def test_the_job_archives_on_its_own(pg_only_url: str, tmp_path: Path) -> None:
    # A clean database: what earlier tests on this worker left (100k events from the verify
    # test, say) would be the jobs' backlog first, and this test's 20 s would go on it.
    settings = make_settings(
        pg_only_url, run_jobs=True, archive_dir=tmp_path / "archive", retention_interval=0.3
    )
    async for h in start_harness(settings):
        await reset_policies(h)
        await seed(h, n=60, days=300, now=utcnow() - timedelta(days=100), bursts=3)
        for _ in range(200):
            if await _segments(h) and await h.events(action="retention.archived"):
                break
            await asyncio.sleep(0.1)
        assert await _segments(h) > 0
        (event, *_) = await h.events(action="retention.archived")
        assert event.actor_type == "system" and event.event_metadata["events"] > 0
        jobs = (await h.client.get("/admin/jobs", headers=await h.auth())).json()["items"]
        assert "retention.run" in {j["name"] for j in jobs}


def _cli(*args: str, url: str, archive: Path) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not (k.startswith("AUDIT_") or k == "DATABASE_URL")
    }
    env.update(
        PYTHONPATH=f"{ROOT / 'src'}:{ROOT}",
        DATABASE_URL=url,
        AUDIT_LOG_SIGNING_KEY=LOG_SIGNING_KEY,
        AUDIT_ARCHIVE_DIR=str(archive),
    )
    return subprocess.run(
        [sys.executable, "-m", "audit_service.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


async def test_cli_run_dry_run_and_restore(
    pg_only_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """PostgreSQL only (each CLI start costs ~2 s); the same code runs in process on both
    databases in test_archive.py."""
    async for h in start_harness(make_settings(pg_only_url)):
        await _cli_run_dry_run_and_restore(h, tmp_path, capsys)


async def _cli_run_dry_run_and_restore(
    h: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await reset_policies(h)
    await seed(h, n=40, days=300, now=utcnow() - timedelta(days=100), bursts=2)
    await seal(h)
    url = h.app.state.settings.database_url
    archive = tmp_path / "cli-archive"

    out = _cli("retention", "run", "--dry-run", url=url, archive=archive)
    assert out.returncode == 0, out.stderr
    assert "archive: would archive" in out.stdout
    assert not archive.exists() and await _segments(h) == 0

    out = _cli("retention", "run", url=url, archive=archive)
    assert out.returncode == 0, out.stderr
    assert "archive: archived" in out.stdout
    written = await _segments(h)
    assert written > 0

    key = vkey(h.app.state.settings)
    out = _cli("archive", "restore", str(archive), "--vkey", key, url=url, archive=archive)
    assert out.returncode == 0, out.stdout + out.stderr
    async with h.engine.connect() as conn:
        restored = await conn.scalar(select(func.count()).select_from(retention_restore))
    assert restored and f"restored {restored} row(s)" in out.stdout

    # A separate SQLite database for investigation: the table is created there (in
    # process: the same entry point without another interpreter start).
    other = tmp_path / "investigation.db"
    code = await asyncio.to_thread(
        retention_cli.run_archive,
        ["restore", str(archive), "--vkey", key, "--database-url", f"sqlite+aiosqlite:///{other}"],
    )
    assert code == 0
    assert f"restored {restored} row(s)" in capsys.readouterr().out

    # Usage and trust errors: exit 3 and 2, never a traceback.
    with pytest.raises(SystemExit) as exit_:
        retention_cli.run_archive(["verify", str(archive)])
    assert exit_.value.code == 3
    other_key = note.Signer.generate("someone-else").verifier.vkey
    assert retention_cli.run_archive(["verify", str(archive), "--vkey", other_key]) == 2
    assert "not signed by any key" in capsys.readouterr().err
