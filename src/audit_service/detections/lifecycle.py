"""What happens around recording findings: suppression (before), backward inhibition and
the forwarding_failing rule (after).

Suppression, per rule and per tenant override (PATCH /admin/detections/rules/{id}):
- `suppress_minutes` N: after an alert of a dedup key is resolved, findings of that same
  key whose last trigger arrived less than N minutes after the resolution open nothing
  (they are dropped, not counted); an unresolved alert of the key still counts repeats.
- `suppress`: {entity, until}: findings of the rule about that entity (the alert's entity
  value, or for an `ip user` pair either part) whose last trigger arrived before `until`
  open nothing and add nothing, for every tenant or, with `tenant_id`, for one.

Backward inhibition: when success_after_failures fires, the unresolved brute_force_ip and
account_guessing alerts of the keys it mutes (the IPs and users of its failures, same
source and tenant) that opened before it get `inhibited_by` = its alert id (an
`alert.inhibited` event each); the notifications skip inhibited alerts. Later findings of
those keys are muted as before (engine.evaluate's `muted`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.audit_log.context import NATIVE_SOURCE, SYSTEM
from audit_service.audit_log.sink import SessionEventSink
from audit_service.detections import repository as repo
from audit_service.detections.engine import (
    Attempt,
    Finding,
    SettingsFor,
    _finding,
    _scope_key,
    evidence,
)
from audit_service.detections.models import Alert
from audit_service.detections.rules import CATALOGUE
from audit_service.kit.models import utcnow

MODULE = "detections"
FAILING, RECOVERED = "forwarding.failing", "forwarding.recovered"
INHIBITED_RULES = ("brute_force_ip", "account_guessing")
Record = Callable[[AsyncSession, Sequence[Finding]], Awaitable[Sequence[tuple[str, int]]]]


def _parts(f: Finding) -> set[str]:
    value = f.entity_value
    return {value, *value.split(" ")} if f.entity_kind == "ip_user" else {value}


async def suppress(
    session: AsyncSession, findings: Sequence[Finding], settings_for: SettingsFor
) -> list[Finding]:
    """The findings no suppression drops."""
    if not findings:
        return []
    rules = sorted({f.rule.id for f in findings})
    earliest = min(f.last_seen_at for f in findings)
    windows: dict[tuple[str, str, str], Any] = {}
    for s in await repo.suppressions_of(session, rules, after=earliest):
        windows[(s.rule_id, s.tenant_id, s.entity)] = s.until
    timed = [f for f in findings if settings_for(f.rule.id, f.tenant_id).suppress_minutes > 0]
    resolved = await repo.last_resolved(session, [f.dedup_key for f in timed])
    open_keys = set(await repo.unresolved_by_keys(session, list(resolved)))
    out: list[Finding] = []
    for f in findings:
        until = [
            windows.get((f.rule.id, tenant, part))
            for tenant in {"", f.tenant_id}
            for part in _parts(f)
        ]
        if any(u is not None and f.last_seen_at < u for u in until):
            continue
        minutes = settings_for(f.rule.id, f.tenant_id).suppress_minutes
        at = resolved.get(f.dedup_key)
        if (
            minutes > 0
            and at is not None
            and f.dedup_key not in open_keys
            and f.last_seen_at < at + timedelta(minutes=minutes)
        ):
            continue
        out.append(f)
    return out


async def _event(
    session: AsyncSession, action: str, alert: Alert, description: str, **extra: Any
) -> None:
    sink = SessionEventSink(session, SYSTEM, action, MODULE)
    sink.describe(
        target_type="alert",
        target_id=str(alert.id),
        description=description,
        rule_id=alert.rule_id,
        severity=alert.severity,
        dedup_key=alert.dedup_key,
        **extra,
    )
    await sink.write()


async def inhibit_backward(session: AsyncSession, findings: Sequence[Finding]) -> list[int]:
    """Mark the open brute-force alerts that recorded success_after_failures findings
    explain; returns the ids marked."""
    saf = [f for f in findings if f.rule.id == "success_after_failures" and f.mutes]
    if not saf:
        return []
    opened = await repo.unresolved_by_keys(session, [f.dedup_key for f in saf])
    marked: list[int] = []
    for f in saf:
        by = opened.get(f.dedup_key)
        if by is None:
            continue
        muted = set(f.mutes)
        for a in await repo.uninhibited_of_rules(session, INHIBITED_RULES, f.source):
            if (a.tenant_id or "") != f.tenant_id or a.id in marked or a.opened_at > by.opened_at:
                continue
            ip, _, user = a.entity_value.partition(" ")
            if ("ip", ip) not in muted and not (
                a.rule_id == "account_guessing" and ("user", user) in muted
            ):
                continue
            if await repo.change_alert(session, a, inhibited_by=by.id):
                marked.append(a.id)
                await _event(
                    session,
                    "alert.inhibited",
                    a,
                    f"Alert {a.id} inhibited by alert {by.id} ({by.title})",
                    inhibited_by=by.id,
                )
    return marked


# --- forwarding_failing ----------------------------------------------------------------------


def _destination(e: Mapping[str, Any]) -> tuple[str, str]:
    meta = e.get("metadata") or e.get("event_metadata") or {}
    name = str(meta.get("destination") or "") if isinstance(meta, Mapping) else ""
    return str(e["target_id"] or ""), name


def forwarding_events(events: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The service's own forwarding.failing / .recovered events (an ingested source saying
    so is not the forwarder)."""
    return [
        e
        for e in events
        if e["action"] in (FAILING, RECOVERED)
        and e["source"] == NATIVE_SOURCE
        and e["actor_type"] == "system"
    ]


def _key(destination: str) -> str:
    return _scope_key(CATALOGUE["forwarding_failing"], NATIVE_SOURCE, "", destination)


async def forwarding(
    session: AsyncSession,
    events: Sequence[Mapping[str, Any]],
    settings_for: SettingsFor,
    record: Record,
) -> list[tuple[str, int]]:
    """In log order: a failing destination opens (or repeats) its alert, a recovered one
    resolves it (benign, note 'recovered')."""
    rule = CATALOGUE["forwarding_failing"]
    out: list[tuple[str, int]] = []
    for e in forwarding_events(events):
        dest, name = _destination(e)
        if not dest:
            continue
        if e["action"] == RECOVERED:
            open_alert = (await repo.unresolved_by_keys(session, [_key(dest)])).get(_key(dest))
            if open_alert is not None and await repo.change_alert(
                session,
                open_alert,
                status="resolved",
                resolution="benign",
                note="recovered",
                resolved_at=utcnow(),
                resolved_by=SYSTEM.name,
            ):
                await _event(
                    session,
                    "alert.resolved",
                    open_alert,
                    f"Resolved alert {open_alert.id} as benign: destination {dest} recovered",
                    resolution="benign",
                    recovered_event_id=e["id"],
                )
                out.append(("resolved", open_alert.id))
            continue
        eff = settings_for(rule.id, "")
        if not eff.enabled:
            continue
        r = Attempt(
            event_pk=e["id"],
            recorded_at=e["recorded_at"],
            occurred_at=e["occurred_at"],
            source=NATIVE_SOURCE,
            tenant_id="",
            ip=None,
            user_name=None,
            user_agent=None,
            success=False,
            action=e["action"],
        )
        ev = evidence(
            [r],
            observed={},
            thresholds=eff.thresholds,
            method="the forwarder's forwarding.failing event",
            source=NATIVE_SOURCE,
            tenant_id="",
        )
        ev["filter"]["target_id"] = dest
        ev["destination"] = {"id": dest, "name": name}
        ev["description"] = e["description"]
        label = f"{dest} {name}".strip()
        finding = _finding(
            rule,
            eff,
            _key(dest),
            r,
            "dest",
            label,
            f"Forwarding to '{name or dest}' is failing",
            ev,
        )
        kept = await suppress(session, [finding], settings_for)
        out.extend(await record(session, kept))
    return out
