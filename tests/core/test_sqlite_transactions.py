"""SQLite transactions: exports read one snapshot, ordinary requests still write side by side."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from tests.conftest import make_settings, start_harness


async def test_reads_then_writes_beside_the_recorder_are_not_refused(
    sqlite_template: Path, tmp_path: Path
) -> None:
    """A request that reads (authentication) and then writes, while other requests' events
    commit: with a snapshot taken at the first read SQLite refuses the write at once
    ("database is locked"); ordinary transactions must begin at their first write."""
    db = tmp_path / "concurrent.db"
    shutil.copy(sqlite_template, db)
    async for h in start_harness(make_settings(f"sqlite+aiosqlite:///{db}")):
        headers = await h.auth()
        calls = [
            h.client.post(
                "/admin/users",
                headers=headers,
                json={"username": f"user{i:02d}", "password": "p" * 12},
            )
            for i in range(30)
        ]
        calls += [h.client.get("/me", headers=headers) for _ in range(60)]
        responses = await asyncio.gather(*calls)
        assert [r.status_code for r in responses[:30]] == [201] * 30
        assert [r.status_code for r in responses[30:]] == [200] * 60
        assert len(await h.events(action="user.created", status_code=201)) == 30
