"""The archive step on both databases: a seeded two-year log, a clock we choose → exactly
each rule's events past archive_after_days are written, one signed segment per rule and UTC
day; each verifies offline, every kind of tampering is caught, a restore gives back the rows,
and a crash between a segment's files and its row is repaired by the next run."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from audit_service.audit_log.models import AuditEvent
from audit_service.integrity.jobs import log_signer
from audit_service.retention import repository as repo
from audit_service.retention import segment
from audit_service.retention.jobs import STEPS, StepContext, run_steps
from audit_service.retention.models import RetentionArchive, retention_restore
from audit_service.retention.policy import assign
from audit_service.retention.restore import restore
from tests.conftest import Harness
from tests.integrity.helpers import seal
from tests.retention.conftest import NOW, reset_policies, seed, vkey

ROOT = Path(__file__).resolve().parents[2]


def _row(e: AuditEvent) -> dict[str, Any]:
    row = {c.name: getattr(e, c.key) for c in AuditEvent.__table__.columns if c.name != "metadata"}
    return {**row, "metadata": e.event_metadata}


async def _run(h: Harness, now: datetime = NOW, **kw: Any) -> Any:
    ctx = StepContext(h.app.state.sessionmaker, h.app.state.settings, now, **kw)
    return (await run_steps(ctx, STEPS[:1]))[0]  # the archive step alone


async def _expected(h: Harness, now: datetime = NOW) -> Counter[tuple[int, str]]:
    """(policy id, day) -> count, by the pure rule assignment over every row."""
    async with h.app.state.sessionmaker() as session:
        policies = await repo.list_policies(session)
    expected: Counter[tuple[int, str]] = Counter()
    for e in await h.events():
        p = assign(policies, {"action": e.action, **_row(e)})
        assert p is not None and p.archive_after_days is not None
        end = datetime.combine((now - timedelta(days=p.archive_after_days)).date(), time(), UTC)
        if e.recorded_at < end:
            expected[(p.id, e.recorded_at.date().isoformat())] += 1
    return expected


async def _segments(h: Harness) -> list[RetentionArchive]:
    async with h.app.state.sessionmaker() as session:
        return list((await session.scalars(select(RetentionArchive))).all())


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "audit_service.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", **(env or {})},
        timeout=120,
    )


async def test_run_archives_exactly_the_rules_events_and_verifies(h: Harness) -> None:
    await reset_policies(h)
    await seed(h)
    await seal(h)
    expected = await _expected(h)
    assert expected, "the seed must have events past 90 days"

    dry = await _run(h, dry_run=True)
    assert dry.facts["events"] == sum(expected.values())
    assert not await _segments(h)

    report = await _run(h)
    rows = await _segments(h)
    got = Counter({(r.policy_id, r.day.isoformat()): r.count for r in rows})
    assert got == expected
    assert report.facts["events"] == sum(expected.values())
    # One chain, in insertion order.
    rows.sort(key=lambda r: r.id)
    assert rows[0].previous_manifest_hash is None
    for a, b in itertools.pairwise(rows):
        assert b.previous_manifest_hash == a.manifest_hash
    # Recorded.
    (event,) = await h.events(action="retention.archived")
    assert event.event_metadata["events"] == sum(expected.values())
    assert event.event_metadata["segments"] == len(rows)

    # Idempotent: a rerun writes nothing more.
    again = await _run(h)
    assert again.facts["segments"] == 0
    assert len(await _segments(h)) == len(rows)

    # Offline check of the whole directory (chain included), in process and by the CLI.
    archive_dir = h.app.state.settings.archive_dir
    checked = segment.verify_path(archive_dir, [log_signer(h.app.state.settings).verifier])
    assert checked.ok, (checked.problems, [s.problems for s in checked.segments if s.problems])
    assert checked.events == sum(expected.values())
    out = _cli("archive", "verify", str(archive_dir), "--vkey", vkey(h.app.state.settings))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(rows)} segment(s)" in out.stdout

    # The archived_clause selects exactly the archived rows.
    async with h.app.state.sessionmaker() as session:
        clause = await repo.archived_clause(session)
        archived = (await session.scalar(select(AuditEvent.id).where(clause).limit(1))) is not None
        n = len((await session.scalars(select(AuditEvent.id).where(clause))).all())
    assert archived and n == sum(expected.values())

    # Restore equals the originals.
    pairs = [(archive_dir / r.path, r.manifest_hash) for r in rows]
    done = await restore(pairs, h.app.state.settings.database_url, create_table=False)
    assert done.rows == sum(expected.values())
    assert (await restore(pairs[:1], h.app.state.settings.database_url)).skipped == rows[0].count
    originals = {e.id: _row(e) for e in await h.events()}
    async with h.engine.connect() as conn:
        restored = (await conn.execute(select(retention_restore))).mappings().all()
    assert len(restored) == sum(expected.values())
    for r in restored:
        row = {k: r[k] for k in originals[r["id"]] if k != "metadata"}
        want = {k: v for k, v in originals[r["id"]].items() if k != "metadata"}
        assert row == want
    async with h.engine.connect() as conn:
        metas = (
            await conn.execute(select(retention_restore.c.id, retention_restore.c.metadata))
        ).all()
    bad = [(m, originals[i]["metadata"]) for i, m in metas if m != originals[i]["metadata"]]
    assert not bad, bad[:3]


async def test_events_not_under_a_checkpoint_wait(h: Harness) -> None:
    await reset_policies(h)
    await seed(h, n=200)
    report = await _run(h)  # no checkpoint at all
    assert report.facts["segments"] == 0
    assert "no signed checkpoint" in report.facts["waiting"][0]
    await seal(h)
    await seed(h, n=50, days=700)  # older events recorded after the checkpoint
    report = await _run(h)
    assert report.facts["waiting"], "days with uncovered events must wait"
    expected = await _expected(h)
    segments = await _segments(h)
    assert segments
    for s in segments:  # every written day is complete: all of its rule's events of the day
        assert s.count == expected[(s.policy_id, s.day.isoformat())]
    assert len(segments) < len(expected)
    await seal(h)  # now everything is covered: the rest follows
    await _run(h)
    got = Counter({(r.policy_id, r.day.isoformat()): r.count for r in await _segments(h)})
    assert got == expected


@pytest.fixture
async def archived(h: Harness) -> tuple[Harness, Path, list[RetentionArchive]]:
    await reset_policies(h)
    await seed(h, n=300)
    await seal(h)
    await _run(h)
    rows = sorted(await _segments(h), key=lambda r: r.id)
    assert len(rows) >= 3
    return h, h.app.state.settings.archive_dir, rows


def _verify(h: Harness, path: Path) -> segment.ArchiveReport:
    return segment.verify_path(path, [log_signer(h.app.state.settings).verifier])


def _problems(report: segment.ArchiveReport) -> str:
    return " | ".join([*report.problems, *(p for s in report.segments for p in s.problems)])


def _rewrite(path: Path, edit: Any) -> None:
    lines = gzip.decompress(path.read_bytes()).split(b"\n")
    lines = edit(lines)
    path.write_bytes(gzip.compress(b"\n".join(lines), mtime=0))


async def test_tampering_is_detected(
    archived: tuple[Harness, Path, list[RetentionArchive]],
) -> None:
    h, root, rows = archived
    one = root / rows[1].path
    pristine = one.read_bytes()
    assert _verify(h, one).ok

    # A flipped byte in the file (the gzip CRC and the manifest's SHA-256 both catch it).
    data = bytearray(pristine)
    data[len(data) // 2] ^= 0x01
    one.write_bytes(bytes(data))
    assert not _verify(h, one).ok
    out = _cli("archive", "verify", str(one), "--vkey", vkey(h.app.state.settings))
    assert out.returncode == 1, out.stdout + out.stderr

    # A changed value in a row, re-compressed (so only the contents can tell).
    def edit_value(lines: list[bytes]) -> list[bytes]:
        record = json.loads(lines[1])
        record["event"]["description"] = "nothing happened"
        lines[1] = json.dumps(record).encode()
        return lines

    one.write_bytes(pristine)
    _rewrite(one, edit_value)
    report = _verify(h, one)
    assert "differs from its entry in description" in _problems(report)

    # A dropped line.
    one.write_bytes(pristine)
    _rewrite(one, lambda lines: lines[:2] + lines[3:])
    report = _verify(h, one)
    text = _problems(report)
    assert not report.ok and "count is" in text

    # A rewritten manifest (edited after signing).
    one.write_bytes(pristine)
    mpath = segment.manifest_path(one)
    manifest = mpath.read_bytes()
    mpath.write_bytes(manifest.replace(b'"count":', b'"count":1', 1))
    assert "the manifest was altered" in _problems(_verify(h, one))
    mpath.write_bytes(manifest)
    assert _verify(h, one).ok

    # A swapped segment: another day's file (and manifest) in this one's place.
    other = root / rows[2].path
    saved = (other.read_bytes(), segment.manifest_path(other).read_bytes())
    one.write_bytes(saved[0])
    assert "SHA-256" in _problems(_verify(h, one))
    segment.manifest_path(one).write_bytes(saved[1])
    assert "signed for the file" in _problems(_verify(h, one)) or not _verify(h, root).ok
    # ... and the chain of the directory breaks
    report = _verify(h, root)
    assert not report.ok
    one.write_bytes(pristine)
    mpath.write_bytes(manifest)
    assert _verify(h, root).ok

    # A removed segment breaks the chain.
    os.rename(other, other.with_suffix(".gone"))
    os.rename(segment.manifest_path(other), other.with_suffix(".manifest-gone"))
    report = _verify(h, root)
    assert "is not here" in " ".join(report.problems)


async def test_a_crash_between_files_and_row_is_repaired(h: Harness) -> None:
    await reset_policies(h)
    await seed(h, n=300)
    await seal(h)
    expected = await _expected(h)
    calls = 0

    async def crash(path: Path) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError):
        await _run(h, after_write=crash)
    assert len(await _segments(h)) == 2  # the third segment's files exist without a row
    await _run(h)
    rows = await _segments(h)
    got = Counter({(r.policy_id, r.day.isoformat()): r.count for r in rows})
    assert got == expected
    assert len({(r.policy_id, r.day) for r in rows}) == len(rows)
    assert _verify(h, h.app.state.settings.archive_dir).ok


async def test_unwritable_archive_dir_is_a_clear_error(h: Harness, tmp_path: Path) -> None:
    await reset_policies(h)
    await seed(h, n=50)
    await seal(h)
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("x")
    settings = h.app.state.settings.model_copy(update={"archive_dir": blocked / "archive"})
    ctx = StepContext(h.app.state.sessionmaker, settings, NOW)
    with pytest.raises(PermissionError, match="AUDIT_ARCHIVE_DIR"):
        await run_steps(ctx)
    assert not await _segments(h)
