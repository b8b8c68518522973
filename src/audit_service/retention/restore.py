"""`audit-service archive restore PATH`: re-import checked segments into `retention_restore`
(of the service's database, or of another one given by URL) for investigation. The rows are
the archived ones, column for column (`ip_bytes` is derived from `ip`, as on ingest); the
log itself is never written. Idempotent: rows already restored are skipped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_service.core.db import create_engine
from audit_service.integrity.entry import ENTRY_COLUMNS
from audit_service.kit.models import utcnow
from audit_service.kit.net import canonical_ip_key
from audit_service.retention import segment
from audit_service.retention.models import retention_restore

BATCH = 1000


@dataclass(frozen=True, slots=True)
class Restored:
    segments: int
    rows: int
    skipped: int


def restore_row(event: dict[str, Any], manifest_hash: str) -> dict[str, Any]:
    row = {name: event[name] for name in ENTRY_COLUMNS}
    row["ip_bytes"] = canonical_ip_key(row["ip"]) if row["ip"] else None
    row["restored_from"] = manifest_hash
    row["restored_at"] = utcnow()
    return row


def _by_key(row: dict[str, Any]) -> dict[str, Any]:
    # The table's column keys: audit_event's `metadata` column is `event_metadata` in Python.
    keys = {c.name: c.key for c in retention_restore.columns}
    return {keys[name]: value for name, value in row.items()}


async def _insert(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> int:
    ids = [r["id"] for r in rows]
    stmt = select(retention_restore.c.id).where(retention_restore.c.id.in_(ids))
    present = set((await conn.execute(stmt)).scalars().all())
    fresh = [_by_key(r) for r in rows if r["id"] not in present]
    if fresh:
        await conn.execute(insert(retention_restore), fresh)
    return len(fresh)


async def restore(
    segments: Sequence[tuple[Path, str]], database_url: str, *, create_table: bool = True
) -> Restored:
    """Import `segments` ((path, manifest hash), already verified) into `database_url`."""
    engine = create_engine(database_url)
    rows = skipped = 0
    try:
        async with engine.begin() as conn:
            if create_table:
                await conn.run_sync(lambda c: retention_restore.create(c, checkfirst=True))
        for path, mhash in segments:
            batch: list[dict[str, Any]] = []
            async with engine.begin() as conn:
                for event in segment.read_events(path):
                    batch.append(restore_row(event, mhash))
                    if len(batch) >= BATCH:
                        added = await _insert(conn, batch)
                        rows, skipped = rows + added, skipped + len(batch) - added
                        batch = []
                if batch:
                    added = await _insert(conn, batch)
                    rows, skipped = rows + added, skipped + len(batch) - added
    finally:
        await engine.dispose()
    return Restored(len(segments), rows, skipped)
