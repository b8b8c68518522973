"""The archive step: events past their rule's `archive_after_days` are written to signed
segments (retention/segment.py), one per rule and UTC day of `recorded_at`.

Per rule, days are archived oldest first, from the day after the rule's last segment up to
the last whole day older than `archive_after_days` (recorded_at is the service's clock: a
day that is over never gets another event, so a segment of it is complete). A day waits
(and the rule's later days with it) while any of its events is not yet covered by the
newest signed checkpoint.

Crash-safe and idempotent: a segment is written to a temporary file, fsynced and renamed,
then its manifest the same way, and only then is its `retention_archive` row inserted (in a
fenced transaction). A crash before the row leaves an orphaned file that the next run
rewrites; a rerun skips every (rule, day) that has a row. Never deletes anything.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from audit_service.integrity import bundle, note
from audit_service.integrity import repository as integrity_repo
from audit_service.integrity.bundle_export import (
    SignedCheckpoint,
    chunk_entries,
    kept_for,
    newest_checkpoint,
)
from audit_service.integrity.merkle import HashSource
from audit_service.integrity.service import needed_keys, with_tiles
from audit_service.kit.models import utcnow
from audit_service.retention import repository as repo
from audit_service.retention import segment
from audit_service.retention.policy import Policy

Fence = Callable[[AsyncSession], Awaitable[None]]
# Called after a segment's files are in place and before its row is inserted (tests crash
# here to check that the next run recovers).
AfterWrite = Callable[[Path], Awaitable[None]]


async def no_fence(_: AsyncSession) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Segment:
    policy_id: int
    policy: str
    day: date
    count: int
    first_id: int
    last_id: int
    first_position: int
    last_position: int
    path: str
    manifest_hash: str | None = None

    def public(self) -> dict[str, Any]:
        return {
            "policy_id": self.policy_id,
            "policy": self.policy,
            "day": self.day.isoformat(),
            "count": self.count,
            "ids": [self.first_id, self.last_id],
            "positions": [self.first_position, self.last_position],
            "path": self.path,
            "manifest_hash": self.manifest_hash,
        }


@dataclass
class ArchiveResult:
    written: list[Segment] = field(default_factory=list)  # or, dry run: would write
    waiting: list[str] = field(default_factory=list)  # why a rule stopped early
    checkpoint_size: int | None = None

    @property
    def events(self) -> int:
        return sum(s.count for s in self.written)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), UTC)
    return start, start + timedelta(days=1)


def archive_end(policy: Policy, now: datetime) -> datetime | None:
    """The end (exclusive, a UTC midnight) of the days the rule archives now: every day
    that is over and whose events are all older than archive_after_days."""
    if policy.archive_after_days is None:
        return None
    cutoff = now.astimezone(UTC) - timedelta(days=policy.archive_after_days)
    return datetime.combine(cutoff.date(), time(), UTC)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "rule"


def segment_relpath(policy: Policy, day: date) -> str:
    return (
        f"{policy.id:04d}-{_slug(policy.name)}/{day:%Y}/{day.isoformat()}{segment.SEGMENT_SUFFIX}"
    )


def check_writable(archive_dir: Path) -> None:
    """Refuse to start a run that could not write its segments."""
    try:
        archive_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PermissionError(f"AUDIT_ARCHIVE_DIR {archive_dir}: {exc.strerror}") from None
    if not os.access(archive_dir, os.W_OK):
        raise PermissionError(f"AUDIT_ARCHIVE_DIR {archive_dir} is not writable")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: Path, write: Callable[[Any], None]) -> None:
    """Write via `path`.tmp, fsync, rename over `path`, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _write_segment(path: Path, lines: Sequence[bytes]) -> tuple[str, int]:
    def write(f: Any) -> None:
        # mtime 0: the same events make the same bytes (a rewritten orphan is identical).
        with gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
            for line in lines:
                gz.write(line)

    _write_atomically(path, write)
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest(), len(data)


async def _segment_lines(
    session: AsyncSession, events: list[dict[str, Any]], checkpoint: SignedCheckpoint
) -> list[bytes]:
    """Header, one line per event (entry, row, salts, proof gap), final gap."""
    size = checkpoint.size
    keys = await integrity_repo.read_keys(session, needed_keys(events))
    kept = await kept_for(session, events)  # anonymised / erased rows: retention/anonymize.py
    entries, rows = await asyncio.to_thread(chunk_entries, events, keys, True, kept)
    assert rows is not None
    runs = [(e.position, e.position + 1) for e in entries]

    def prove(src: HashSource) -> list[bundle.RunProof]:
        return bundle.prove_runs(src, size, runs)

    proofs = await with_tiles(session, size, prove)
    end = await with_tiles(
        session, size, lambda src: bundle.prove_end(src, size, entries[-1].position + 1)
    )
    lines = [segment.header_line(checkpoint.note)]
    lines += [segment.event_line(e, r, p) for e, r, p in zip(entries, rows, proofs, strict=True)]
    lines.append(segment.end_line(end))
    return lines


async def archive_step(
    sessionmaker: async_sessionmaker[AsyncSession],
    archive_dir: Path,
    signer: note.Signer,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    fence: Fence = no_fence,
    after_write: AfterWrite | None = None,
) -> ArchiveResult:
    """Write every segment that is due (or, `dry_run`, list them). Idempotent."""
    now = now or utcnow()
    result = ArchiveResult()
    async with sessionmaker() as session:
        policies = await repo.list_policies(session)
        checkpoint = await newest_checkpoint(session)
    if checkpoint is None:
        result.waiting.append("no signed checkpoint yet: nothing can be archived")
        return result
    result.checkpoint_size = checkpoint.size
    for policy in policies:
        end = archive_end(policy, now)
        if end is None:
            continue
        await _archive_policy(
            sessionmaker,
            archive_dir,
            signer,
            policies,
            policy,
            end,
            checkpoint,
            result,
            dry_run=dry_run,
            fence=fence,
            after_write=after_write,
        )
    return result


async def _archive_policy(
    sessionmaker: async_sessionmaker[AsyncSession],
    archive_dir: Path,
    signer: note.Signer,
    policies: Sequence[Policy],
    policy: Policy,
    end: datetime,
    checkpoint: SignedCheckpoint,
    result: ArchiveResult,
    *,
    dry_run: bool,
    fence: Fence,
    after_write: AfterWrite | None,
) -> None:
    clause = repo.policy_clause(policies, policy.id)
    async with sessionmaker() as session:
        done = await repo.archived_until(session, policy.id)
    cursor = None if done is None else day_bounds(done)[1]
    while True:
        async with sessionmaker() as session:
            first = await repo.next_recorded_at(session, clause, cursor, end)
            if first is None:
                return
            day = first.date()
            start, stop = day_bounds(day)
            if await repo.archive_exists(session, policy.id, day):
                cursor = stop
                continue
            events = await repo.day_events(session, clause, start, stop)
            if not events:  # pragma: no cover - first was found in this range
                cursor = stop
                continue
            if any(e["position"] is None or e["position"] >= checkpoint.size for e in events):
                result.waiting.append(
                    f"{policy.name}: {day} has events not yet covered by the signed "
                    f"checkpoint (size {checkpoint.size}); it and later days wait"
                )
                return
            relpath = segment_relpath(policy, day)
            info = Segment(
                policy_id=policy.id,
                policy=policy.name,
                day=day,
                count=len(events),
                first_id=min(e["id"] for e in events),
                last_id=max(e["id"] for e in events),
                first_position=events[0]["position"],
                last_position=events[-1]["position"],
                path=relpath,
            )
            if dry_run:
                result.written.append(info)
                cursor = stop
                continue
            lines = await _segment_lines(session, events, checkpoint)
        written = await _store(
            sessionmaker, archive_dir, signer, info, lines, checkpoint, fence, after_write
        )
        result.written.append(written)
        cursor = stop


async def _store(
    sessionmaker: async_sessionmaker[AsyncSession],
    archive_dir: Path,
    signer: note.Signer,
    info: Segment,
    lines: Sequence[bytes],
    checkpoint: SignedCheckpoint,
    fence: Fence,
    after_write: AfterWrite | None,
) -> Segment:
    await asyncio.to_thread(check_writable, archive_dir)  # cheap; a clear error first
    path = archive_dir / info.path
    digest, size = await asyncio.to_thread(_write_segment, path, lines)
    origin = note.Checkpoint.parse(checkpoint.note[: checkpoint.note.index("\n\n") + 1]).origin
    for _attempt in range(5):
        async with sessionmaker() as session:
            previous = await repo.chain_head(session)
        created_at = utcnow()
        manifest = segment.sign_manifest(
            {
                "file": path.name,
                "sha256": digest,
                "size": size,
                "policy": {"id": info.policy_id, "name": info.policy},
                "day": info.day.isoformat(),
                "count": info.count,
                "first_id": info.first_id,
                "last_id": info.last_id,
                "first_position": info.first_position,
                "last_position": info.last_position,
                "origin": origin,
                "checkpoint": {
                    "size": checkpoint.size,
                    "root": bundle._b64(checkpoint.root_hash),
                },
                "previous_manifest_hash": previous,
                "created_at": created_at.isoformat(),
            },
            signer,
        )
        mpath = segment.manifest_path(path)
        await asyncio.to_thread(_write_atomically, mpath, _writer(manifest))
        mhash = segment.manifest_hash(manifest)
        if after_write is not None:
            await after_write(path)
        start, stop = day_bounds(info.day)
        async with sessionmaker() as session:
            try:
                await repo.add_archive(
                    session,
                    {
                        "policy_id": info.policy_id,
                        "policy_name": info.policy,
                        "day": info.day,
                        "recorded_from": start,
                        "recorded_until": stop,
                        "first_id": info.first_id,
                        "last_id": info.last_id,
                        "count": info.count,
                        "first_position": info.first_position,
                        "last_position": info.last_position,
                        "checkpoint_size": checkpoint.size,
                        "path": info.path,
                        "sha256": digest,
                        "manifest_hash": mhash,
                        "previous_manifest_hash": previous,
                        "created_at": created_at,
                    },
                )
            except repo.ChainMoved:
                await session.rollback()
                if await repo.archive_exists(session, info.policy_id, info.day):
                    return info  # a concurrent run wrote this day: nothing to add
                continue  # another writer added a segment: sign again on the new head
            await fence(session)
            await session.commit()
        return Segment(**{**_fields(info), "manifest_hash": mhash})
    raise RuntimeError("the archive chain kept moving: another archiver is running")


def _writer(data: bytes) -> Callable[[Any], None]:
    return lambda f: f.write(data)


def _fields(info: Segment) -> dict[str, Any]:
    return {name: getattr(info, name) for name in Segment.__slots__}
