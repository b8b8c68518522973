"""Purge: only inside tombstones, held and critical events untouched, verify still passes,
a deletion outside a tombstone is still found, reruns are idempotent (both dialects)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, text

from audit_service.audit_log.models import AuditEvent
from audit_service.core.config import Settings
from audit_service.integrity import verify
from audit_service.retention.privacy_models import RetentionPurge
from audit_service.retention.purge import run_purge
from tests.conftest import Harness, make_settings
from tests.integrity.helpers import seal
from tests.retention.forget_helpers import (
    NOW,
    add_events,
    add_hold,
    add_segment,
    at,
    existing,
    release_holds,
    row,
    set_policies,
    verify_all,
)


@pytest.fixture
def settings(db_url: str) -> Settings:
    # Two rows per call of the restricted path: every purge takes several batches.
    return make_settings(db_url, retention_batch=2)


async def _seed(h: Harness) -> dict[str, Any]:
    policies = await set_policies(h)
    old = [  # 400 days ago: past 365 for "rest", not past 2,555 for "auth"
        row(at(400, 1)),
        row(at(400, 2)),
        row(at(400, 3), action="auth.login_failed", outcome="failure"),
        row(at(400, 4)),
        row(at(400, 5)),
        row(at(400, 6), action="auth.login_failed", outcome="failure"),
        row(at(400, 7)),
    ]
    held_day = [row(at(399, 1)), row(at(399, 2), actor_id="held-user"), row(at(399, 3))]
    young = [row(at(100, 1)), row(at(100, 2))]  # archived, not yet due
    ids_old = await add_events(h, old)
    ids_held = await add_events(h, held_day)
    ids_young = await add_events(h, young)
    await seal(h)
    seg_old = await add_segment(h, policies["rest"], at(400).date(), "a" * 64)
    await add_segment(h, policies["auth"], at(400).date(), "b" * 64)
    await add_segment(h, policies["rest"], at(399).date(), "c" * 64)
    await add_segment(h, policies["rest"], at(100).date(), "d" * 64)
    await add_hold(h, {"actor": "held-user"})
    return {
        "old": ids_old,
        "rest_old": [ids_old[i] for i in (0, 1, 3, 4, 6)],
        "auth_old": [ids_old[2], ids_old[5]],
        "held": ids_held,
        "young": ids_young,
        "seg_old": seg_old,
    }


async def _tombstones(h: Harness) -> list[AuditEvent]:
    return await h.events(action="retention.purged")


async def test_purge_deletes_exactly_the_due_archived_unheld_rows(h: Harness) -> None:
    seeded = await _seed(h)
    settings = h.app.state.settings
    report = await run_purge(h.app.state.sessionmaker, settings, NOW)
    assert report.deleted == 5
    assert report.held == 1 and len(report.blocked_segments) == 1
    assert await existing(h, seeded["old"]) == seeded["auth_old"]  # critical rule kept
    assert await existing(h, seeded["held"]) == seeded["held"]  # a hold keeps its segment
    assert await existing(h, seeded["young"]) == seeded["young"]
    (tomb,) = await _tombstones(h)
    md = tomb.event_metadata
    # The critical rows split the ranges: no range spans a row that stays.
    r = seeded["rest_old"]
    assert md["id_ranges"] == [[r[0], r[1]], [r[2], r[3]], [r[4], r[4]]]
    assert md["count"] == 5 and md["manifest_hashes"] == ["a" * 64] and md["policy"] == "rest"
    assert tomb.target_id == str(seeded["seg_old"])

    # Rerun: nothing new, no second tombstone.
    again = await run_purge(h.app.state.sessionmaker, settings, NOW)
    assert again.deleted == 0 and again.tombstones == []
    assert len(await _tombstones(h)) == 1

    # The remaining log verifies; the purged rows are counted, not reported.
    await seal(h)
    result = await verify_all(h)
    assert result.status == "intact", [p.line() for p in result.problems]
    assert result.purged == 5

    # Released hold: the held day goes on the next run (its own tombstone).
    await release_holds(h)
    later = await run_purge(h.app.state.sessionmaker, settings, NOW)
    assert later.deleted == 3 and len(later.tombstones) == 1
    assert await existing(h, seeded["held"]) == []


async def test_verify_still_finds_a_row_deleted_outside_a_tombstone(h: Harness) -> None:
    seeded = await _seed(h)
    await run_purge(h.app.state.sessionmaker, h.app.state.settings, NOW)
    victim = seeded["young"][0]
    # The owner/superuser deletes a row no tombstone names (triggers off for it).
    async with h.admin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
        else:
            await conn.execute(text("INSERT INTO retention_door (opened) VALUES (1)"))
        await conn.execute(text("DELETE FROM audit_event WHERE id = :i"), {"i": victim})
        if conn.dialect.name != "postgresql":
            await conn.execute(text("DELETE FROM retention_door"))
    await seal(h)
    result = await verify_all(h)
    assert result.status == "tampered"
    deleted = [p for p in result.problems if p.kind == verify.DELETED]
    assert [p.event_pk for p in deleted] == [victim], [p.line() for p in result.problems]
    assert result.purged == 5


async def test_the_path_refuses_what_no_tombstone_covers(h: Harness) -> None:
    from audit_service.retention import forget_repository as repo

    seeded = await _seed(h)
    async with h.app.state.sessionmaker() as session:
        # An ordinary event is no tombstone.
        with pytest.raises(Exception, match=r"not a retention\.purged"):
            await repo.purge_batch(session, seeded["young"][0], 10)
        await session.rollback()
    # A tombstone that is not sequenced yet deletes nothing.
    async with h.app.state.sessionmaker() as session:
        from audit_service.audit_log.context import system_event

        pk = await repo.insert_event(
            session,
            system_event(
                repo.PURGED,
                "retention",
                "forged",
                id_ranges=[[seeded["young"][0], seeded["young"][-1]]],
                manifest_hashes=["d" * 64],
            ),
        )
        await session.commit()
    async with h.app.state.sessionmaker() as session:
        with pytest.raises(Exception, match="not sequenced"):
            await repo.purge_batch(session, pk, 10)
        await session.rollback()
    assert await existing(h, seeded["young"]) == seeded["young"]


async def test_purge_bookkeeping_resumes_an_unfinished_tombstone(h: Harness) -> None:
    """A crash between the tombstone's commit and the deletes (the hook raises there): the
    next run finishes that tombstone without writing another."""
    seeded = await _seed(h)

    async def crash() -> None:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        await run_purge(h.app.state.sessionmaker, h.app.state.settings, NOW, after_tombstone=crash)
    assert len(await _tombstones(h)) == 1
    assert await existing(h, seeded["rest_old"]) == seeded["rest_old"]  # nothing gone yet
    report = await run_purge(h.app.state.sessionmaker, h.app.state.settings, NOW)
    assert report.tombstones == [] and len(report.resumed) == 1 and report.deleted == 5
    assert len(await _tombstones(h)) == 1
    async with h.app.state.sessionmaker() as session:
        (purge,) = (await session.scalars(select(RetentionPurge))).all()
    assert purge.deleted == 5 and purge.finished_at is not None


async def _interleaved(h: Harness) -> list[int]:
    """Ids follow insertion, recorded_at does not quite: rows recorded on another day (one of
    a critical rule, one of a day with no segment) sit between the rows of a due segment."""
    policies = await set_policies(h)
    ids = await add_events(
        h,
        [
            row(at(400, 1)),
            row(at(399, 1), action="auth.login_failed", outcome="failure"),
            row(at(399, 2)),
            row(at(400, 2)),
        ],
    )
    await seal(h)
    await add_segment(h, policies["rest"], at(400).date(), "a" * 64)
    return ids


async def test_rows_of_other_days_inside_a_segments_id_span_split_its_ranges(h: Harness) -> None:
    first, critical, unarchived, last = await _interleaved(h)
    report = await run_purge(h.app.state.sessionmaker, h.app.state.settings, NOW)
    assert report.deleted == 2
    assert await existing(h, [first, critical, unarchived, last]) == [critical, unarchived]
    (tomb,) = await _tombstones(h)
    assert tomb.event_metadata["id_ranges"] == [[first, first], [last, last]]
    await seal(h)
    result = await verify_all(h)
    assert result.status == "intact", [p.line() for p in result.problems]
    assert result.purged == 2


async def test_the_path_keeps_rows_of_other_days_inside_a_tombstones_range(h: Harness) -> None:
    from audit_service.audit_log.context import system_event
    from audit_service.retention import forget_repository as repo

    first, critical, unarchived, last = await _interleaved(h)
    # A tombstone whose one range spans them (as planning before 0026 wrote it).
    async with h.app.state.sessionmaker() as session:
        pk = await repo.insert_event(
            session,
            system_event(
                repo.PURGED,
                "retention",
                "spanning",
                id_ranges=[[first, last]],
                manifest_hashes=["a" * 64],
            ),
        )
        await session.commit()
    await seal(h)
    async with h.app.state.sessionmaker() as session:
        assert await repo.purge_batch(session, pk, 10) == 2
        await session.commit()
    assert await existing(h, [first, critical, unarchived, last]) == [critical, unarchived]
