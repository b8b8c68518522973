"""Detections: the evaluator (one transaction per batch of log positions) and the alerts'
and rules' API.

The evaluator follows the log (`log.follow`) from its own position in `detection_state`: per
batch it stores the batch's login attempts in the window table, evaluates the rules for the
keys the batch touched, opens or updates alerts by `dedup_key`, prunes what no window can
reach any more, moves its position, checks its lease and commits, all or nothing. A crash
anywhere rolls the batch back and the next round evaluates the same positions again, with
the same result. Two evaluators serialize on the position's lock (`lock_state`), so they
never evaluate a position twice.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.audit_log import log
from audit_service.audit_log.context import SYSTEM
from audit_service.audit_log.sink import EventSink, SessionEventSink
from audit_service.core.config import Settings
from audit_service.core.errors import Conflict, FieldError, NotFound, ValidationFailed
from audit_service.detections import engine, hourly, lifecycle
from audit_service.detections import repository as repo
from audit_service.detections.models import Alert, DetectionRuleSetting, DetectionSuppression
from audit_service.detections.rules import CATALOGUE, RETENTION_MINUTES, RULES, Rule
from audit_service.detections.schemas import (
    AlertOut,
    AlertPage,
    AlertQuery,
    EffectiveOut,
    Entity,
    GuideOut,
    OverrideOut,
    ResolveIn,
    RuleList,
    RuleOut,
    RuleUpdate,
    SuppressionOut,
    ThresholdOut,
)
from audit_service.kit.models import utcnow
from audit_service.kit.pagination import InvalidCursor, Keyset, decode_cursor, encode_cursor
from audit_service.kit.pagination import fingerprint as scope_of
from audit_service.kit.schemas import config_change
from audit_service.notifications import service as notifications
from audit_service.notifications.schemas import AlertNotice

EVALUATOR = "evaluate"
MODULE = "detections"
DEFAULT_LOGIN_ACTIONS = ("auth.login", "auth.login_failed")
RETENTION = timedelta(minutes=RETENTION_MINUTES)
Fence = Callable[[AsyncSession], Awaitable[None]]
# What recording a finding did: the seam for notifications (an outbox row written in the
# same transaction for "opened" and "reopened").
Change = Literal["opened", "reopened", "updated", "resolved"]
PRIVILEGED_PREFIXES = ("user.", "api_key.")
PRIVILEGED_ACTIONS = frozenset({"config.changed", "activity.exported"})
_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    tz: ZoneInfo
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    login_actions: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def of(cls, settings: Settings) -> Config:
        trusted = tuple(
            ipaddress.ip_network(p.strip(), strict=False)
            for p in settings.detections_trusted_cidrs.split(",")
            if p.strip()
        )
        actions: dict[str, tuple[str, str]] = {}
        for part in settings.detections_login_actions.split(","):
            if part.strip():
                source, ok, failed = (x.strip() for x in part.strip().split(":"))
                actions[source] = (ok, failed)
        return cls(ZoneInfo(settings.detections_tz), (*_LOOPBACK, *trusted), actions)

    def excluded(self, ip: str | None) -> bool:
        if not ip:
            return False
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self.trusted if net.version == address.version)

    def privileged(self, e: Mapping[str, Any]) -> engine.Attempt | None:
        """A user's login or privileged action, for off_hours_policy; None otherwise."""
        if e["actor_type"] != "user" or e["outcome"] != "success" or self.excluded(e["ip"]):
            return None
        ok, _ = self.login_actions.get(e["source"], DEFAULT_LOGIN_ACTIONS)
        action: str = e["action"]
        if not (
            action == ok
            or e["actor_role"] == "admin"
            or action.startswith(PRIVILEGED_PREFIXES)
            or action in PRIVILEGED_ACTIONS
        ):
            return None
        return engine.Attempt(
            event_pk=e["id"],
            recorded_at=e["recorded_at"],
            occurred_at=e["occurred_at"],
            source=e["source"],
            tenant_id=e["tenant_id"] or "",
            ip=e["ip"],
            user_name=e["actor_name"] or e["actor_id"],
            user_agent=e["user_agent"],
            success=True,
            action=action,
        )

    def user_action(self, e: Mapping[str, Any]) -> tuple[engine.Attempt, bool] | None:
        """A user's allowed or denied action other than a login, with whether it is
        privileged (first_privileged_action); None otherwise."""
        if e["actor_type"] != "user" or e["outcome"] not in ("success", "denied"):
            return None
        if e["action"] in self.login_actions.get(e["source"], DEFAULT_LOGIN_ACTIONS):
            return None
        if e["action"] in DEFAULT_LOGIN_ACTIONS or self.excluded(e["ip"]):
            return None
        action: str = e["action"]
        privileged = (
            e["actor_role"] == "admin"
            or action.startswith(PRIVILEGED_PREFIXES)
            or action in PRIVILEGED_ACTIONS
        )
        return (
            engine.Attempt(
                event_pk=e["id"],
                recorded_at=e["recorded_at"],
                occurred_at=e["occurred_at"],
                source=e["source"],
                tenant_id=e["tenant_id"] or "",
                ip=e["ip"],
                user_name=e["actor_name"] or e["actor_id"],
                user_agent=e["user_agent"],
                success=e["outcome"] == "success",
                action=action,
            ),
            privileged,
        )

    def attempt(self, e: Mapping[str, Any], position: int) -> dict[str, Any] | None:
        """The window row of a login attempt, or None: not a login, or excluded."""
        ok, failed = self.login_actions.get(e["source"], DEFAULT_LOGIN_ACTIONS)
        action, outcome = e["action"], e["outcome"]
        if action == failed:
            success = False
        elif action == ok and outcome == "success":
            success = True
        elif action == ok and outcome in ("failure", "denied"):
            success = False
        else:
            return None
        if self.excluded(e["ip"]):
            return None
        return {
            "event_pk": e["id"],
            "position": position,
            "recorded_at": e["recorded_at"],
            "occurred_at": e["occurred_at"],
            "source": e["source"],
            "tenant_id": e["tenant_id"] or "",
            "ip": e["ip"],
            "user_name": e["actor_name"] or e["actor_id"],
            "user_agent": e["user_agent"],
            "success": success,
            "action": action,
        }


# --- effective rule settings -----------------------------------------------------------------


@dataclass(frozen=True)
class RuleSettings:
    rows: Mapping[tuple[str, str], DetectionRuleSetting]
    suppressions: Mapping[tuple[str, str], Sequence[DetectionSuppression]] = field(
        default_factory=dict
    )
    _cache: dict[tuple[str, str], engine.Effective] = field(default_factory=dict, compare=False)

    def effective(self, rule_id: str, tenant_id: str) -> engine.Effective:
        """The settings a rule runs with for a tenant (computed once per round)."""
        cached = self._cache.get((rule_id, tenant_id))
        if cached is None:
            cached = self._cache[(rule_id, tenant_id)] = self._effective(rule_id, tenant_id)
        return cached

    def _effective(self, rule_id: str, tenant_id: str) -> engine.Effective:
        rule = CATALOGUE[rule_id]
        enabled, severity, thresholds = True, rule.severity, rule.defaults()
        suppress, zone, days = 0, None, None
        for level in ("", tenant_id) if tenant_id else ("",):
            row = self.rows.get((rule_id, level))
            if row is None:
                continue
            enabled = row.enabled if row.enabled is not None else enabled
            severity = row.severity or severity
            thresholds.update(
                {k: int(v) for k, v in (row.thresholds or {}).items() if k in thresholds}
            )
            suppress = row.suppress_minutes if row.suppress_minutes is not None else suppress
            zone = row.time_zone or zone
            days = parse_days(row.business_days) if row.business_days is not None else days
        return engine.Effective(enabled, severity, thresholds, suppress, zone, days)


def parse_days(value: str) -> tuple[int, ...]:
    return tuple(sorted({engine.DAY_NAMES.index(d) for d in value.split(",") if d}))


async def rule_settings(session: AsyncSession) -> RuleSettings:
    suppressions: dict[tuple[str, str], list[DetectionSuppression]] = {}
    for s in await repo.suppressions_of(session, [r.id for r in RULES]):
        suppressions.setdefault((s.rule_id, s.tenant_id), []).append(s)
    return RuleSettings(
        {(r.rule_id, r.tenant_id): r for r in await repo.all_settings(session)}, suppressions
    )


# --- the evaluator ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Round:
    evaluated: int
    position: int
    changes: list[tuple[Change, int]]
    more: bool
    lag_seconds: float | None = None


def _attempt(r: Any) -> engine.Attempt:
    return engine.Attempt(
        event_pk=r.event_pk,
        recorded_at=r.recorded_at,
        occurred_at=r.occurred_at,
        source=r.source,
        tenant_id=r.tenant_id,
        ip=r.ip,
        user_name=r.user_name,
        user_agent=r.user_agent,
        success=r.success,
        action=r.action,
    )


async def _muted(session: AsyncSession) -> set[tuple[str, str, str, str]]:
    out: set[tuple[str, str, str, str]] = set()
    for a in await repo.unresolved_of_rule(session, "success_after_failures"):
        for kind, value in a.evidence.get("mutes", []):
            out.add((a.source, a.tenant_id or "", kind, value))
    return out


async def evaluate_round(
    session: AsyncSession, config: Config, fence: Fence, *, batch: int
) -> Round:
    """Evaluate the next `batch` log positions after the evaluator's, in `session`
    (committed here)."""
    after = await repo.lock_state(session, EVALUATOR)
    followed = await log.follow(session, after=after, limit=batch)
    if not followed:
        lag = await log.lag_after(session, after)
        await session.commit()
        return Round(0, after, [], False, lag)
    attempts = [
        a
        for f in followed
        if f.event is not None and (a := config.attempt(f.event, f.position)) is not None
    ]
    settings = await rule_settings(session)
    privileged = [
        p for f in followed if f.event is not None and (p := config.privileged(f.event)) is not None
    ]
    findings = engine.off_hours(privileged, settings.effective, tz=config.tz)
    findings += await _first_privileged(session, config, followed, settings)
    events = [f.event for f in followed if f.event is not None]
    logins = [_attempt(_Row(a)) for a in attempts if a["success"] and a["user_name"]]
    findings += await hourly.findings(session, events, logins, settings.effective, tz=config.tz)
    if attempts:
        await repo.add_logins(session, attempts)
        since = min(a["recorded_at"] for a in attempts) - RETENTION
        stored = await repo.window_logins(
            session,
            [a["ip"] for a in attempts if a["ip"]],
            [a["user_name"] for a in attempts if a["user_name"]],
            since,
        )
        findings += engine.evaluate(
            [_attempt(r) for r in stored],
            {a["event_pk"] for a in attempts},
            settings.effective,
            tz=config.tz,
            muted=await _muted(session),
        )
        await repo.prune_logins(session, max(a["recorded_at"] for a in attempts) - RETENTION)
        findings += await _new_networks(session, attempts, settings)
    findings = await lifecycle.suppress(session, findings, settings.effective)
    changes = await record_findings(session, findings)
    await lifecycle.inhibit_backward(session, findings)
    recovered = cast(
        list[tuple[Change, int]],
        await lifecycle.forwarding(session, events, settings.effective, record_findings),
    )
    # Its openings went through record_findings (and the outbox); the resolutions did not.
    await _notify(session, [c for c in recovered if c[0] == "resolved"])
    changes += recovered
    moved = followed[-1].position
    await repo.move_state(session, EVALUATOR, moved, utcnow())
    lag = await log.lag_after(session, moved)
    await fence(session)
    await session.commit()
    return Round(len(followed), moved, changes, len(followed) >= batch, lag)


async def _new_networks(
    session: AsyncSession, attempts: Sequence[Mapping[str, Any]], settings: RuleSettings
) -> list[engine.Finding]:
    logins = [_attempt(_Row(a)) for a in attempts if a["success"] and a["ip"] and a["user_name"]]
    if not logins:
        return []
    users = [(a.source, a.tenant_id, a.user_name or "") for a in logins]
    known = {
        (r.source, r.tenant_id, r.user_name, r.network): engine.Seen(
            r.logins, r.first_seen_at, r.last_seen_at
        )
        for r in await repo.networks_of(session, users)
    }
    findings = engine.new_networks(logins, known, settings.effective)
    mine = set(users)
    await repo.save_networks(
        session,
        [
            {
                "source": k[0],
                "tenant_id": k[1],
                "user_name": k[2],
                "network": k[3],
                "logins": s.logins,
                "first_seen_at": s.first_seen_at,
                "last_seen_at": s.last_seen_at,
            }
            for k, s in sorted(known.items())
            if k[:3] in mine
        ],
    )
    return findings


async def _first_privileged(
    session: AsyncSession,
    config: Config,
    followed: Sequence[log.Followed],
    settings: RuleSettings,
) -> list[engine.Finding]:
    actions = [
        a
        for f in followed
        if f.event is not None and (a := config.user_action(f.event)) is not None
    ]
    if not actions:
        return []
    users = sorted({(a.source, a.tenant_id, a.user_name or "") for a, _ in actions})
    known = {
        (r.source, r.tenant_id, r.user_name, r.action): engine.Privilege(
            r.last_allowed_at, r.last_denied_at
        )
        for r in await repo.privileges_of(session, users)
    }
    before = {k: (p.last_allowed_at, p.last_denied_at) for k, p in known.items()}
    findings = engine.first_privileged(actions, known, settings.effective)
    await repo.save_privileges(
        session,
        [
            {
                "source": k[0],
                "tenant_id": k[1],
                "user_name": k[2],
                "action": k[3],
                "last_allowed_at": p.last_allowed_at,
                "last_denied_at": p.last_denied_at,
            }
            for k, p in sorted(known.items())
            if before.get(k) != (p.last_allowed_at, p.last_denied_at)
        ],
    )
    return findings


class _Row:
    """A window row's attributes from its dict."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)


async def catch_up(
    session_factory: Callable[[], Any], config: Config, fence: Fence, *, batch: int = 2000
) -> Round:
    """Rounds until every sequenced position is evaluated (tests and one-off runs)."""
    total, changes = 0, []
    while True:
        async with session_factory() as session:
            r = await evaluate_round(session, config, fence, batch=batch)
        total += r.evaluated
        changes += r.changes
        if not r.more:
            return Round(total, r.position, changes, False, r.lag_seconds)


async def record_findings(
    session: AsyncSession, findings: Sequence[engine.Finding]
) -> list[tuple[Change, int]]:
    """Open an alert per new dedup key, or add the repeat to the unresolved one: count +
    triggers, last_seen_at, the evidence refreshed. Returns what happened to each alert."""
    if not findings:
        return []
    keys = [f.dedup_key for f in findings]
    open_alerts = await repo.unresolved_by_keys(session, keys)
    resolved = await repo.resolved_keys(session, [k for k in keys if k not in open_alerts])
    out: list[tuple[Change, int]] = []
    for f in sorted(findings, key=lambda f: (f.first_seen_at, f.dedup_key)):
        alert = open_alerts.get(f.dedup_key)
        if alert is not None and await repo.add_repeat(
            session, alert.id, f.triggers, f.last_seen_at, f.evidence, f.title
        ):
            out.append(("updated", alert.id))
            continue
        change: Change = "reopened" if f.dedup_key in resolved or alert is not None else "opened"
        alert = await _open(session, f)
        out.append((change, alert.id))
    await _notify(session, out)
    return out


def _notice(a: Alert, change: str) -> AlertNotice:
    evidence = a.evidence or {}
    url = evidence.get("activity_url")
    return AlertNotice(
        alert_id=a.id,
        rule_id=a.rule_id,
        severity=a.severity,
        status=a.status,
        title=a.title,
        tenant_id=a.tenant_id,
        source=a.source,
        count=a.count,
        first_seen_at=a.first_seen_at,
        last_seen_at=a.last_seen_at,
        activity_url=url if isinstance(url, str) else None,
        entity={"kind": a.entity_kind, "value": a.entity_value},
        summary={k: evidence[k] for k in ("observed", "threshold", "baseline") if k in evidence},
        change=change,
    )


async def _notify(session: AsyncSession, changes: Sequence[tuple[str, int]]) -> None:
    """Alert changes into the notification outbox, in the same transaction."""
    notices = []
    for change, alert_id in changes:
        alert = await repo.get_alert(session, alert_id)
        # An inhibited alert (muted by a success_after_failures of its key) is not notified
        # again; its resolution still is.
        if alert is not None and (alert.inhibited_by is None or change == "resolved"):
            notices.append(_notice(alert, change))
    await notifications.notify(session, notices)


async def _open(session: AsyncSession, f: engine.Finding) -> Alert:
    now = utcnow()
    alert = await repo.add_alert(
        session,
        rule_id=f.rule.id,
        rule_version=f.rule.version,
        severity=f.severity,
        status="open",
        dedup_key=f.dedup_key[:500],
        count=f.triggers,
        first_seen_at=f.first_seen_at,
        last_seen_at=f.last_seen_at,
        opened_at=now,
        tenant_id=f.tenant_id or None,
        source=f.source,
        entity_kind=f.entity_kind,
        entity_value=f.entity_value[:300],
        title=f.title[:300],
        evidence=f.evidence,
        version=1,
    )
    sink = SessionEventSink(session, SYSTEM, "alert.opened", MODULE)
    sink.describe(
        target_type="alert",
        target_id=str(alert.id),
        description=f"Alert {alert.id} ({alert.severity}): {alert.title}",
        rule_id=alert.rule_id,
        rule_version=alert.rule_version,
        severity=alert.severity,
        dedup_key=alert.dedup_key,
        entity={"kind": alert.entity_kind, "value": alert.entity_value},
        alert_source=alert.source,
        alert_tenant_id=alert.tenant_id,
        count=alert.count,
    )
    await sink.write()
    return alert


# --- alerts API ------------------------------------------------------------------------------


def alert_out(a: Alert) -> AlertOut:
    return AlertOut(
        id=a.id,
        rule_id=a.rule_id,
        rule_version=a.rule_version,
        severity=a.severity,
        status=a.status,
        resolution=a.resolution,
        note=a.note,
        dedup_key=a.dedup_key,
        count=a.count,
        first_seen_at=a.first_seen_at,
        last_seen_at=a.last_seen_at,
        opened_at=a.opened_at,
        acknowledged_at=a.acknowledged_at,
        acknowledged_by=a.acknowledged_by,
        resolved_at=a.resolved_at,
        resolved_by=a.resolved_by,
        tenant_id=a.tenant_id,
        source=a.source,
        entity=Entity(kind=a.entity_kind, value=a.entity_value),
        title=a.title,
        evidence=a.evidence,
        version=a.version,
        inhibited_by=a.inhibited_by,
    )


def _bad_cursor(message: str) -> ValidationFailed:
    return ValidationFailed(
        message, errors=[FieldError(loc=["query", "cursor"], msg=message, type="cursor_invalid")]
    )


async def list_alerts(
    session: AsyncSession, audit: EventSink, query: AlertQuery, key: str
) -> AlertPage:
    filters = query.model_dump(mode="json", exclude={"cursor", "page_size"}, exclude_none=True)
    scope = scope_of(filters)
    audit.describe(target_type="alert", filters=filters, page_size=query.page_size)
    older_than = None
    if query.cursor is not None:
        try:
            keyset = decode_cursor(query.cursor, key)
        except InvalidCursor as exc:
            raise _bad_cursor(str(exc)) from None
        if keyset.scope != scope or keyset.direction != "next":
            raise _bad_cursor("cursor belongs to a search with other filters")
        older_than = (keyset.occurred_at, keyset.id)
    rows = await repo.list_alerts(
        session,
        status=query.status,
        severity=query.severity,
        rule_id=query.rule,
        entity=query.entity,
        since=query.since,
        until=query.until,
        older_than=older_than,
        limit=query.page_size + 1,
    )
    more = len(rows) > query.page_size
    rows = rows[: query.page_size]
    next_cursor = None
    if more:
        last = rows[-1]
        next_cursor = encode_cursor(Keyset(last.opened_at, last.id, "next", scope), key)
    audit.describe(returned=len(rows))
    return AlertPage(items=[alert_out(a) for a in rows], next_cursor=next_cursor)


async def _alert(session: AsyncSession, alert_id: int) -> Alert:
    alert = await repo.get_alert(session, alert_id)
    if alert is None:
        raise NotFound(f"No alert with id {alert_id}")
    return alert


async def get_alert(session: AsyncSession, audit: EventSink, alert_id: int) -> AlertOut:
    audit.describe(target_type="alert", target_id=str(alert_id))
    return alert_out(await _alert(session, alert_id))


async def acknowledge(session: AsyncSession, audit: EventSink, alert_id: int) -> AlertOut:
    audit.describe(target_type="alert", target_id=str(alert_id))
    alert = await _alert(session, alert_id)
    if alert.status != "open":
        raise Conflict(f"Alert {alert_id} is {alert.status}: only an open alert is acknowledged")
    now = utcnow()
    if not await repo.change_alert(
        session, alert, status="acknowledged", acknowledged_at=now, acknowledged_by=audit.actor.name
    ):
        raise Conflict(f"Alert {alert_id} changed meanwhile: read it again")
    await _notify(session, [("acknowledged", alert_id)])
    out = alert_out(await _alert(session, alert_id))
    audit.describe(
        description=f"Acknowledged alert {alert_id}: {out.title}",
        rule_id=out.rule_id,
        severity=out.severity,
    )
    return out


async def resolve(
    session: AsyncSession, audit: EventSink, alert_id: int, data: ResolveIn
) -> AlertOut:
    audit.describe(target_type="alert", target_id=str(alert_id), resolution=data.resolution)
    alert = await _alert(session, alert_id)
    if alert.status == "resolved":
        raise Conflict(f"Alert {alert_id} is resolved already ({alert.resolution})")
    now = utcnow()
    if not await repo.change_alert(
        session,
        alert,
        status="resolved",
        resolution=data.resolution,
        note=data.note,
        resolved_at=now,
        resolved_by=audit.actor.name,
    ):
        raise Conflict(f"Alert {alert_id} changed meanwhile: read it again")
    await _notify(session, [("resolved", alert_id)])
    out = alert_out(await _alert(session, alert_id))
    audit.describe(
        description=f"Resolved alert {alert_id} as {data.resolution}: {out.title}",
        rule_id=out.rule_id,
        severity=out.severity,
    )
    return out


# --- rules API -------------------------------------------------------------------------------


def _override_out(
    row: DetectionRuleSetting, suppressions: Sequence[DetectionSuppression] = ()
) -> OverrideOut:
    days = parse_days(row.business_days) if row.business_days is not None else None
    return OverrideOut(
        tenant_id=row.tenant_id or None,
        enabled=row.enabled,
        severity=row.severity,
        thresholds=dict(row.thresholds or {}),
        suppress_minutes=row.suppress_minutes,
        time_zone=row.time_zone,
        business_days=None if days is None else [engine.DAY_NAMES[d] for d in days],
        suppressions=[
            SuppressionOut(
                entity=s.entity,
                until=s.until,
                note=s.note,
                created_at=s.created_at,
                created_by=s.created_by,
            )
            for s in suppressions
        ],
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


def _rule_out(rule: Rule, settings: RuleSettings) -> RuleOut:
    eff = settings.effective(rule.id, "")
    return RuleOut(
        id=rule.id,
        version=rule.version,
        title=rule.title,
        default_severity=rule.severity,
        entity=rule.entity,
        thresholds=[
            ThresholdOut(
                name=t.name,
                default=t.default,
                minimum=t.minimum,
                maximum=t.maximum,
                description=t.description,
            )
            for t in rule.thresholds
        ],
        guide=GuideOut(
            meaning=rule.guide.meaning,
            false_positives=rule.guide.false_positives,
            response=rule.guide.response,
        ),
        effective=EffectiveOut(
            enabled=eff.enabled,
            severity=eff.severity,
            thresholds=dict(eff.thresholds),
            suppress_minutes=eff.suppress_minutes,
            time_zone=eff.time_zone,
            business_days=None
            if eff.business_days is None
            else [engine.DAY_NAMES[d] for d in eff.business_days],
        ),
        overrides=[
            _override_out(row, settings.suppressions.get(key, ()))
            for key, row in sorted(settings.rows.items())
            if key[0] == rule.id
        ],
    )


async def list_rules(session: AsyncSession, audit: EventSink) -> RuleList:
    settings = await rule_settings(session)
    audit.describe(target_type="detection_rule", returned=len(RULES))
    return RuleList(items=[_rule_out(r, settings) for r in RULES])


def _check_thresholds(rule: Rule, values: Mapping[str, int]) -> None:
    errors: list[FieldError] = []
    names = {t.name for t in rule.thresholds}
    for name, value in values.items():
        loc: list[str | int] = ["body", "thresholds", name]
        if name not in names:
            known = ", ".join(sorted(names))
            errors.append(
                FieldError(
                    loc=loc, msg=f"unknown threshold (this rule has: {known})", type="unknown"
                )
            )
            continue
        t = rule.threshold(name)
        if not t.minimum <= value <= t.maximum:
            errors.append(
                FieldError(
                    loc=loc,
                    msg=f"must be from {t.minimum} to {t.maximum}",
                    type="out_of_range",
                )
            )
    if errors:
        raise ValidationFailed(f"Invalid thresholds for rule {rule.id}", errors=errors)


def _check_options(rule: Rule, data: RuleUpdate) -> None:
    errors: list[FieldError] = []
    for name in ("time_zone", "business_days"):
        if name in data.model_fields_set and name not in rule.options:
            errors.append(
                FieldError(
                    loc=["body", name],
                    msg=f"rule {rule.id} takes no {name} (only: "
                    + (", ".join(rule.options) or "none")
                    + ")",
                    type="unknown",
                )
            )
    if data.time_zone is not None:
        try:
            ZoneInfo(data.time_zone)
        except (ValueError, KeyError, OSError):
            errors.append(
                FieldError(
                    loc=["body", "time_zone"],
                    msg="not a known IANA time zone (e.g. Europe/Berlin)",
                    type="zone_unknown",
                )
            )
    if errors:
        raise ValidationFailed(f"Invalid settings for rule {rule.id}", errors=errors)


async def _suppress(
    session: AsyncSession,
    audit: EventSink,
    rule_id: str,
    tenant: str,
    data: RuleUpdate,
    now: datetime,
) -> None:
    s = data.suppress
    assert s is not None
    row = await repo.get_suppression(session, rule_id, tenant, s.entity)
    if s.until is None:
        if row is not None:
            await repo.delete_suppression(session, row)
        return
    if row is None:
        await repo.add_suppression(
            session,
            rule_id=rule_id,
            tenant_id=tenant,
            entity=s.entity,
            until=s.until,
            note=s.note,
            created_at=now,
            created_by=audit.actor.name,
        )
    else:
        row.until, row.note, row.created_at, row.created_by = s.until, s.note, now, audit.actor.name


async def update_rule(
    session: AsyncSession, audit: EventSink, rule_id: str, data: RuleUpdate
) -> RuleOut:
    audit.describe(target_type="detection_rule", target_id=rule_id, setting="detection_rule")
    rule = CATALOGUE.get(rule_id)
    if rule is None:
        raise NotFound(f"No detection rule '{rule_id}' (see GET /admin/detections/rules)")
    if data.thresholds:
        _check_thresholds(rule, data.thresholds)
    _check_options(rule, data)
    tenant = data.tenant_id or ""
    now = utcnow()
    row = await repo.get_setting(session, rule_id, tenant)
    held = list(await repo.suppressions_of(session, [rule_id]))
    mine = [s for s in held if s.tenant_id == tenant]
    before = None if row is None else _override_out(row, mine).model_dump(mode="json")
    if row is None:
        row = await repo.add_setting(
            session, rule_id=rule_id, tenant_id=tenant, thresholds={}, updated_at=now
        )
    fields = data.model_fields_set - {"tenant_id"}
    if "enabled" in fields:
        row.enabled = data.enabled
    if "severity" in fields:
        row.severity = data.severity
    if "thresholds" in fields:
        row.thresholds = {**(row.thresholds or {}), **(data.thresholds or {})}
    if "suppress_minutes" in fields:
        row.suppress_minutes = data.suppress_minutes
    if "time_zone" in fields:
        row.time_zone = data.time_zone
    if "business_days" in fields:
        days = data.business_days
        row.business_days = (
            None if days is None else ",".join(d for d in engine.DAY_NAMES if d in days)
        )
    if data.suppress is not None:
        await _suppress(session, audit, rule_id, tenant, data, now)
    row.updated_at, row.updated_by = now, audit.actor.name
    await session.flush()
    mine = [s for s in await repo.suppressions_of(session, [rule_id]) if s.tenant_id == tenant]
    after = _override_out(row, mine).model_dump(mode="json")
    audit.describe(
        description=f"Changed detection rule {rule_id}"
        + (f" for tenant '{tenant}'" if tenant else ""),
        tenant_id=data.tenant_id,
        **config_change(before=before, after=after),
    )
    return _rule_out(rule, await rule_settings(session))
