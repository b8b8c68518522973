"""End to end on both databases: a seeded two-year log with the default rules and a legal
hold → one `retention.run` (archive, purge, anonymise) → exactly the due, archived, unheld
events are gone, critical and held ones stay, old IPs are prefixes, their day keys gone;
`verify` of the remaining log passes and every archive segment still verifies offline."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, time, timedelta

from sqlalchemy import select

from audit_service.integrity.jobs import log_signer
from audit_service.integrity.models import IntegrityKey
from audit_service.retention import repository as repo
from audit_service.retention import segment
from audit_service.retention.jobs import StepContext, run_steps
from audit_service.retention.policy import assign
from tests.conftest import Harness
from tests.integrity.helpers import seal
from tests.retention.conftest import NOW, reset_policies, seed
from tests.retention.forget_helpers import add_hold, verify_all


async def test_one_run_archives_purges_anonymises_and_verify_passes(h: Harness) -> None:
    await reset_policies(h)
    # 24 burst days (the seed's default went to 12 for the archive tests): the held actor
    # must leave some due segments unblocked, or nothing could be purged.
    await seed(h, n=400, bursts=24)
    await add_hold(h, {"actor": "101"})
    await seal(h)
    before = {e.id: e for e in await h.events()}
    async with h.app.state.sessionmaker() as session:
        policies = await repo.list_policies(session)
        held = await repo.held_clause(session)
    held_ids = {e.id for e in await h.events(actor_id="101")}
    assert held_ids and held is not None

    ctx = StepContext(h.app.state.sessionmaker, h.app.state.settings, NOW)
    archive, purge, anonymize = await run_steps(ctx)
    assert archive.facts["segments"] > 0
    assert purge.facts["deleted"] > 0 and purge.facts["blocked_segments"]

    after = {e.id: e for e in await h.events()}
    gone = before.keys() - after.keys()
    assert held_ids <= after.keys()
    for pk in gone:
        e = before[pk]
        p = assign(
            policies,
            {
                c: getattr(e, c, None)
                for c in ("action", "module", "outcome", "source", "tenant_id")
            },
        )
        assert p is not None and not p.critical and p.delete_after_days is not None
        assert e.recorded_at < NOW - timedelta(days=p.delete_after_days)
    for pk, e in before.items():
        p = assign(
            policies,
            {
                c: getattr(e, c, None)
                for c in ("action", "module", "outcome", "source", "tenant_id")
            },
        )
        assert p is not None
        if p.critical:
            assert pk in after

    # Anonymised: rows older than 30 days keep no host part, their day keys are gone
    # (except days a hold covers).
    cutoff = datetime.combine((NOW - timedelta(days=30)).date(), time(), UTC)
    held_days = set(anonymize.facts["held_days"])
    async with h.app.state.sessionmaker() as session:
        day_keys = set(
            (
                await session.scalars(select(IntegrityKey.name).where(IntegrityKey.kind == "day"))
            ).all()
        )
    for e in after.values():
        day = e.recorded_at.astimezone(UTC).date().isoformat()
        if e.recorded_at < cutoff and e.ip is not None and day not in held_days:
            assert e.ip.endswith(".0") or e.ip.endswith("::"), e.ip
            assert day not in day_keys
    assert held_days

    await seal(h)
    result = await verify_all(h)
    assert result.status == "intact", [p.line() for p in result.problems[:10]]
    assert result.purged == len(gone)
    report = segment.verify_path(
        h.app.state.settings.archive_dir, [log_signer(h.app.state.settings).verifier]
    )
    assert report.ok, report.problems

    # A second run does nothing new.
    _, purge2, anonymize2 = await run_steps(ctx)
    assert purge2.facts["deleted"] == 0 and purge2.facts["tombstones"] == []
    assert anonymize2.facts["days"] == []


async def test_events_anonymised_before_they_are_archived_still_verify_offline(
    h: Harness,
) -> None:
    """The defaults anonymise at 30 days and archive at 90: segments then hold rows whose
    commitments were kept (the readable row carries them as "kept")."""
    from audit_service.retention.anonymize import run_anonymize

    await reset_policies(h)
    await seed(h, n=200)
    await seal(h)
    anonymized = await run_anonymize(h.app.state.sessionmaker, h.app.state.settings, NOW)
    assert anonymized.events > 0
    ctx = StepContext(h.app.state.sessionmaker, h.app.state.settings, NOW)
    archive, _, _ = await run_steps(ctx)
    assert archive.facts["segments"] > 0
    report = segment.verify_path(
        h.app.state.settings.archive_dir, [log_signer(h.app.state.settings).verifier]
    )
    assert report.ok, report.problems
    kept_lines = 0
    for path in sorted(h.app.state.settings.archive_dir.rglob("*.gz")):
        with gzip.open(path, "rt") as f:
            kept_lines += sum(1 for line in f if '"kept":' in line)
    assert kept_lines > 0
    await seal(h)
    result = await verify_all(h)
    assert result.status == "intact", [p.line() for p in result.problems[:10]]
