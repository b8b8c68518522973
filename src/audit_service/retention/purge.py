"""The purge step: events archived, past their rule's `delete_after_days` and under no hold
are deleted — after a tombstone says so in the log.

Per archive segment (one rule, one UTC day) that is due:

1. the segment's rows are read in id order; the deletable ones (the rule's, sequenced, under
   no active hold) form id ranges that no other row interrupts;
2. a `retention.purged` event (the tombstone: id and position ranges, rule, the segment's
   manifest hash, counts) is inserted with its `retention_purge` row and committed;
3. the sequencer gives the tombstone its log position (the restricted path refuses a
   tombstone that has none, and rows at positions after it);
4. the rows are deleted in batches through the restricted path, each batch its own
   transaction with its count.

With AUDIT_ARCHIVE_S3_BUCKET set, a segment is due only once its copy is confirmed in the
bucket (`uploaded_at`): a configured off-site copy is part of "archived" (README).

Crash-safe and idempotent: a segment with a tombstone is never planned again (its
`retention_purge` row is written in the tombstone's transaction), and a purge not marked
finished is resumed by the next run (step 3 then 4); the path deletes only rows still there,
so nothing is deleted twice. Leaves and tiles are never touched: `verify` accepts a missing
row only inside a tombstone's ranges.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from audit_service.audit_log.context import SYSTEM, system_event
from audit_service.audit_log.sequencer import no_fence
from audit_service.core.config import Settings
from audit_service.integrity.jobs import make_sequencer
from audit_service.kit.models import utcnow
from audit_service.retention import forget_repository as repo
from audit_service.retention import repository as policy_repo

log = logging.getLogger(__name__)

Fence = Callable[[AsyncSession], Awaitable[None]]
# Segments planned per run (a run that stops here is continued by the next).
SEGMENTS_PER_RUN = 400


@dataclass
class PurgeReport:
    tombstones: list[int] = field(default_factory=list)  # new tombstone event ids
    resumed: list[int] = field(default_factory=list)  # tombstones finished from a past run
    deleted: int = 0
    held: int = 0  # rows of due segments kept because a hold covers them
    blocked_segments: list[int] = field(default_factory=list)  # archive ids kept by a hold
    pending: list[int] = field(default_factory=list)  # tombstones not sequenced yet
    would_delete: int = 0  # dry run: rows the tombstones would allow
    # With a bucket configured: due segments kept until their upload is confirmed.
    waiting_upload: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "tombstones": self.tombstones,
            "resumed": self.resumed,
            "deleted": self.deleted,
            "held": self.held,
            "blocked_segments": self.blocked_segments,
            "pending": self.pending,
            "would_delete": self.would_delete,
            "waiting_upload": self.waiting_upload,
        }


Row = tuple[int, int | None, bool, bool]  # id, position, of the rule, held


def deletable(row: Row) -> bool:
    _, pos, belongs, held = row
    return belongs and pos is not None and not held


def id_ranges(rows: list[Row]) -> list[tuple[int, int, int, int]]:
    """Maximal runs of deletable rows (the rule's, sequenced, under no hold), uninterrupted
    by a kept row, in id order: (first id, last id, first position, last position)."""
    out: list[tuple[int, int, int, int]] = []
    run: list[tuple[int, int]] = []
    for row in rows:
        pk, pos = row[0], row[1]
        if deletable(row) and pos is not None:
            run.append((pk, pos))
            continue
        if run:
            out.append(_run(run))
            run = []
    if run:
        out.append(_run(run))
    return out


def _run(run: list[tuple[int, int]]) -> tuple[int, int, int, int]:
    positions = [p for _, p in run]
    return run[0][0], run[-1][0], min(positions), max(positions)


async def run_purge(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    now: datetime,
    *,
    fence: Fence = no_fence,
    dry_run: bool = False,
    after_tombstone: Callable[[], Awaitable[None]] | None = None,
) -> PurgeReport:
    """One purge pass (the `retention.run` job's step after archive). `after_tombstone`:
    a test hook, called once the tombstones are committed, before anything is deleted."""
    report = PurgeReport()
    if not dry_run:
        # First what an interrupted run left: tombstones committed, rows not all deleted.
        async with sessionmaker() as session:
            unfinished = await repo.unfinished_purges(session)
        for tombstone, _ in unfinished:
            report.resumed.append(tombstone)
    async with sessionmaker() as session:
        # A configured bucket is the off-site copy: nothing is deleted before it is there.
        uploaded_only = settings.archive_s3_bucket is not None
        planned = await _plan(session, now, report, dry_run, uploaded_only)
        if dry_run:
            await session.rollback()
            return report
        await fence(session)
        await session.commit()
    report.tombstones = planned
    if after_tombstone is not None:
        await after_tombstone()
    todo = report.resumed + planned
    if not todo:
        return report
    # The tombstones get their positions before any row goes (the path refuses otherwise).
    await make_sequencer().catch_up(sessionmaker, fence)
    for tombstone in todo:
        report.deleted += await _delete(sessionmaker, settings, tombstone, fence, report)
    return report


async def _plan(
    session: AsyncSession, now: datetime, report: PurgeReport, dry_run: bool, uploaded_only: bool
) -> list[int]:
    policies = await policy_repo.list_policies(session)
    held = await policy_repo.held_clause(session)
    planned: list[int] = []
    budget = SEGMENTS_PER_RUN
    for policy in policies:
        if policy.delete_after_days is None or budget <= 0:
            continue
        cutoff = now - timedelta(days=policy.delete_after_days)
        belongs = policy_repo.policy_clause(policies, policy.id)
        if uploaded_only:
            report.waiting_upload += await repo.count_due_not_uploaded(session, policy.id, cutoff)
        due = await repo.segments_due(
            session, policy.id, cutoff, budget, uploaded_only=uploaded_only
        )
        for segment in due:
            budget -= 1
            rows = await repo.segment_rows(session, segment, belongs, held)
            ranges = id_ranges(rows)
            count = sum(1 for r in rows if deletable(r))
            n_held = sum(1 for r in rows if r[2] and r[3])
            if n_held:
                # A segment is purged whole or not at all (one tombstone per segment): one
                # held event keeps its rule's day until the hold is released.
                report.held += n_held
                report.blocked_segments.append(segment.id)
                continue
            if count == 0:
                continue
            if dry_run:
                report.would_delete += count
                continue
            event = system_event(
                repo.PURGED,
                "retention",
                f"Retention: {count} event(s) of rule {policy.name!r} recorded on "
                f"{segment.day.isoformat()} are deleted (archived, past "
                f"{policy.delete_after_days} days)",
                actor=SYSTEM,
                target_type="retention_archive",
                target_id=str(segment.id),
                policy_id=policy.id,
                policy=policy.name,
                day=segment.day.isoformat(),
                delete_after_days=policy.delete_after_days,
                id_ranges=[[a, b] for a, b, _, _ in ranges],
                position_ranges=[[p, q] for _, _, p, q in ranges],
                manifest_hashes=[segment.manifest_hash],
                count=count,
            )
            event_pk = await repo.insert_event(session, event)
            await repo.add_purge(session, event_pk, segment, count, now)
            planned.append(event_pk)
    return planned


async def _delete(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    tombstone: int,
    fence: Fence,
    report: PurgeReport,
) -> int:
    total = 0
    while True:
        async with sessionmaker() as session:
            if await repo.position_of(session, tombstone) is None:
                report.pending.append(tombstone)
                return total
            n = await repo.purge_batch(session, tombstone, settings.retention_batch)
            finished = utcnow() if n < settings.retention_batch else None
            await repo.note_deleted(session, tombstone, n, finished)
            await fence(session)
            await session.commit()
        total += n
        if finished is not None:
            return total
