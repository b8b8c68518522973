"""The learned rules' bookkeeping: per batch, the hourly counts the batch touches and the
baseline hours they are compared with are read, the rules evaluated (baselines.py, pure),
and the counts written back, in the evaluator's transaction (see baselines.py for the
rules, and why the counts are our own rather than the stats/ rollups: those are kept by
another job with its own position, and may run behind the evaluator or change level)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.detections import baselines as b
from audit_service.detections import repository as repo
from audit_service.detections.engine import Attempt, Finding, SettingsFor
from audit_service.detections.rules import VOLUME_RETENTION_DAYS

MAX_WEEKS = 8


def event_attempt(e: Mapping[str, Any]) -> Attempt:
    user = (e["actor_name"] or e["actor_id"]) if e["actor_type"] == "user" else None
    return Attempt(
        event_pk=e["id"],
        recorded_at=e["recorded_at"],
        occurred_at=e["occurred_at"],
        source=e["source"],
        tenant_id=e["tenant_id"] or "",
        ip=e["ip"],
        user_name=user,
        user_agent=e["user_agent"],
        success=True,
        action=e["action"],
    )


async def _load(
    session: AsyncSession,
    kind: str,
    keys: set[b.Key],
    hours: set[datetime],
    tz: ZoneInfo,
    counts: b.Counts,
    first_seen: dict[b.Key, datetime],
) -> None:
    subjects = sorted({k[1] for k in keys})
    for r in await repo.volume_counts(
        session, kind, subjects, sorted(b.baseline_hours(hours, tz, MAX_WEEKS))
    ):
        key = (r.kind, r.subject, r.source, r.tenant_id)
        if key in keys:
            counts[(key, r.hour_start)] = r.events
    for r in await repo.subjects_of(session, kind, subjects):
        key = (r.kind, r.subject, r.source, r.tenant_id)
        if key in keys:
            first_seen[key] = r.first_seen_at


async def findings(
    session: AsyncSession,
    events: Sequence[Mapping[str, Any]],
    logins: Sequence[Attempt],
    settings_for: SettingsFor,
    *,
    tz: ZoneInfo,
) -> list[Finding]:
    """off_hours_learned (over `logins`: the batch's successful, not excluded logins),
    volume_spike_user and volume_spike_tenant (over every event of the batch)."""
    if not events:
        return []
    attempts = [(event_attempt(e), str(e["module"])) for e in events]
    users = [a for a, _ in attempts if a.user_name]
    counts: b.Counts = {}
    first_seen: dict[b.Key, datetime] = {}
    touched: dict[b.Key, set[datetime]] = {}
    last_seen: dict[b.Key, datetime] = {}

    def touch(key: b.Key, at: datetime) -> None:
        touched.setdefault(key, set()).add(b.hour_of(at, tz))
        last_seen[key] = max(last_seen.get(key, at), at)

    for a in users:
        touch((b.USER, a.user_name or "", a.source, a.tenant_id), a.recorded_at)
    for a, module in attempts:
        touch((b.TENANT, "", a.source, a.tenant_id), a.recorded_at)
        touch((b.MODULE, module, a.source, a.tenant_id), a.recorded_at)
    for kind in (b.USER, b.TENANT, b.MODULE):
        keys = {k for k in touched if k[0] == kind}
        hours = set().union(*(touched[k] for k in keys)) if keys else set()
        if keys:
            await _load(session, kind, keys, hours, tz, counts, first_seen)
    out = b.user_spikes(users, counts, first_seen, settings_for, tz=tz)
    out += b.tenant_spikes(attempts, counts, first_seen, settings_for, tz=tz)

    history: dict[b.Key, dict[datetime, int]] = {}
    login_rows: list[dict[str, Any]] = []
    if logins:
        days = max(
            settings_for("off_hours_learned", t).thresholds["days"]
            for t in {a.tenant_id for a in logins}
        )
        since = min(b.hour_of(a.recorded_at, tz) for a in logins) - timedelta(days=days)
        wanted = {(b.LOGIN, a.user_name or "", a.source, a.tenant_id) for a in logins}
        for r in await repo.volume_since(session, b.LOGIN, [k[1] for k in wanted], since):
            key = (r.kind, r.subject, r.source, r.tenant_id)
            if key in wanted:
                history.setdefault(key, {})[r.hour_start] = r.events
        login_hours = {
            ((b.LOGIN, a.user_name or "", a.source, a.tenant_id), b.hour_of(a.recorded_at, tz))
            for a in logins
            if a.user_name
        }
        out += b.learned_off_hours(logins, history, settings_for, tz=tz)
        login_rows = [_row(key, hour, history[key][hour]) for key, hour in sorted(login_hours)]
    rows = [
        _row(key, h, counts[(key, h)]) for key, hs in sorted(touched.items()) for h in sorted(hs)
    ]
    await repo.save_volume(session, rows + login_rows)
    subjects = [
        {
            "kind": k[0],
            "subject": k[1],
            "source": k[2],
            "tenant_id": k[3],
            "first_seen_at": first_seen.get(k, min(touched[k])),
            "last_seen_at": at,
        }
        for k, at in sorted(last_seen.items())
    ]
    await repo.save_subjects(session, subjects)
    newest = max(a.recorded_at for a, _ in attempts)
    await repo.prune_volume(session, newest - timedelta(days=VOLUME_RETENTION_DAYS))
    return out


def _row(key: b.Key, hour: datetime, events: int) -> dict[str, Any]:
    return {
        "kind": key[0],
        "subject": key[1],
        "source": key[2],
        "tenant_id": key[3],
        "hour_start": hour,
        "events": events,
    }
