"""Seeding for the forgetting tests: events at chosen recording times, rules, holds and the
archive segments helper A's archive step would have written (rows only: the restricted path
checks that a segment names the rows, not the file)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, text

from audit_service.audit_log.models import AuditEvent, AuditLeaf
from audit_service.integrity import verify
from audit_service.integrity.jobs import log_verifiers
from audit_service.kit.net import canonical_ip_key
from audit_service.retention.models import RetentionArchive, RetentionHold, RetentionPolicy
from tests.conftest import Harness

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def at(days_ago: int, seconds: int = 0) -> datetime:
    day = (NOW - timedelta(days=days_ago)).date()
    return datetime.combine(day, time(10), tzinfo=UTC) + timedelta(seconds=seconds)


def row(
    recorded_at: datetime,
    *,
    action: str = "doc.viewed",
    actor_id: str = "alice",
    actor_name: str | None = "Alice Example",
    ip: str | None = "198.51.100.77",
    user_agent: str | None = (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36"
    ),
    outcome: str = "success",
    source: str = "lms",
    tenant_id: str | None = None,
) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4(),
        "occurred_at": recorded_at,
        "recorded_at": recorded_at,
        "source": source,
        "tenant_id": tenant_id,
        "actor_type": "user",
        "actor_id": actor_id,
        "actor_name": actor_name,
        "actor_role": "user",
        "action": action,
        "module": action.split(".")[0],
        "outcome": outcome,
        "description": f"{action} by a user",
        "target_type": None,
        "target_id": None,
        "ip": ip,
        "ip_bytes": None if ip is None else canonical_ip_key(ip),
        "user_agent": user_agent,
        "request_id": None,
        "client_request_id": None,
        "method": None,
        "path": None,
        "status_code": None,
        "latency_ms": None,
        "metadata": {"n": 1},
        "idempotency_key": None,
    }


async def add_events(h: Harness, rows: list[dict[str, Any]]) -> list[int]:
    async with h.app.state.sessionmaker() as session:
        await session.execute(insert(AuditEvent.__table__), rows)
        await session.commit()
        ids = (
            await session.scalars(
                select(AuditEvent.id).where(AuditEvent.event_id.in_([r["event_id"] for r in rows]))
            )
        ).all()
    return sorted(int(i) for i in ids)


async def set_policies(h: Harness) -> dict[str, int]:
    """Two rules: auth.* kept 2,555 days (critical), everything else deleted at 365."""
    now = NOW
    async with h.app.state.sessionmaker() as session:
        await session.execute(delete(RetentionPolicy))
        for position, name, match, archive, delete_after, critical in (
            (10, "auth", {"action_prefix": "auth."}, 90, 2555, True),
            (1000, "rest", {}, 90, 365, False),
        ):
            await session.execute(
                insert(RetentionPolicy).values(
                    position=position,
                    name=name,
                    match=match,
                    archive_after_days=archive,
                    delete_after_days=delete_after,
                    critical=critical,
                    created_at=now,
                    updated_at=now,
                )
            )
        await session.commit()
        found = (await session.execute(select(RetentionPolicy.name, RetentionPolicy.id))).all()
    return {n: int(i) for n, i in found}


async def add_segment(h: Harness, policy_id: int, day: date, manifest: str) -> int:
    """The retention_archive row of (policy, day) over every event recorded that day."""
    lo = datetime.combine(day, time(0), tzinfo=UTC)
    hi = lo + timedelta(days=1)
    async with h.app.state.sessionmaker() as session:
        found = (
            await session.execute(
                select(AuditEvent.id, AuditLeaf.position)
                .join(AuditLeaf, AuditLeaf.event_pk == AuditEvent.id)
                .where(AuditEvent.recorded_at >= lo, AuditEvent.recorded_at < hi)
                .order_by(AuditEvent.id)
            )
        ).all()
        assert found, f"no events on {day}"
        result = await session.execute(
            insert(RetentionArchive)
            .values(
                policy_id=policy_id,
                policy_name="p",
                day=day,
                recorded_from=lo,
                recorded_until=hi,
                first_id=found[0][0],
                last_id=found[-1][0],
                count=len(found),
                first_position=min(p for _, p in found),
                last_position=max(p for _, p in found),
                checkpoint_size=max(p for _, p in found) + 1,
                path=f"{day}/{policy_id}.ndjson.gz",
                sha256=manifest,
                manifest_hash=manifest,
                previous_manifest_hash=None,
                created_at=NOW,
            )
            .returning(RetentionArchive.id)
        )
        await session.commit()
        return int(result.scalar_one())


async def add_hold(h: Harness, spec: dict[str, Any]) -> int:
    async with h.app.state.sessionmaker() as session:
        result = await session.execute(
            insert(RetentionHold)
            .values(reason="litigation", filter=spec, created_at=NOW, created_by="admin")
            .returning(RetentionHold.id)
        )
        await session.commit()
        return int(result.scalar_one())


async def release_holds(h: Harness) -> None:
    async with h.app.state.sessionmaker() as session:
        await session.execute(text("UPDATE retention_hold SET released_at = :t"), {"t": NOW})
        await session.commit()


async def verify_all(h: Harness) -> verify.Report:
    return await verify.verify_log(
        h.engine, log_verifiers(h.app.state.settings), verify.InProcess(h.engine)
    )


async def existing(h: Harness, ids: list[int]) -> list[int]:
    async with h.app.state.sessionmaker() as session:
        found = (await session.scalars(select(AuditEvent.id).where(AuditEvent.id.in_(ids)))).all()
    return sorted(int(i) for i in found)
