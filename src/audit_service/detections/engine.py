"""The rules themselves: pure Python over the window's login attempts, deterministic.

`evaluate()` gets every stored attempt of the keys a batch touched (sorted by arrival), the
batch's own attempts (`fresh`) and each rule's effective settings, and returns findings:
one per rule and dedup key, with how many of the batch's attempts triggered it and the
evidence as of the last of them. An attempt triggers a rule when the rule's condition holds
over the window ending at that attempt (its `recorded_at`): counting triggers, not batches,
keeps alert counts the same however the log is cut into batches.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from ipaddress import IPv6Address, ip_address, ip_network
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from audit_service.detections.rules import CATALOGUE, Rule

SAMPLES = 20
KEY_LENGTH = 500  # alert.dedup_key
TOP = 5


@dataclass(frozen=True, slots=True)
class Attempt:
    event_pk: int
    recorded_at: datetime
    occurred_at: datetime
    source: str
    tenant_id: str
    ip: str | None
    user_name: str | None
    user_agent: str | None
    success: bool
    action: str

    @property
    def order(self) -> tuple[datetime, int]:
        return (self.recorded_at, self.event_pk)


@dataclass(frozen=True, slots=True)
class Effective:
    enabled: bool
    severity: str
    thresholds: Mapping[str, int]
    # After a resolution, the same dedup key opens nothing for this many minutes.
    suppress_minutes: int = 0
    # off_hours_policy: the tenant's zone (None: the evaluator's) and business days
    # (weekday numbers, Monday 0; None: Monday to Friday, or every day with weekends_off 0).
    time_zone: str | None = None
    business_days: tuple[int, ...] | None = None


@dataclass(slots=True)
class Finding:
    rule: Rule
    severity: str
    dedup_key: str
    source: str
    tenant_id: str
    entity_kind: str
    entity_value: str
    title: str
    evidence: dict[str, Any]
    first_seen_at: datetime
    last_seen_at: datetime
    triggers: int = 1
    # (kind, value) pairs a success_after_failures finding mutes.
    mutes: list[tuple[str, str]] = field(default_factory=list)


SettingsFor = Callable[[str, str], Effective]  # (rule id, tenant '') -> effective settings


def _window(
    rows: Sequence[Attempt], orders: Sequence[tuple[datetime, int]], end: int, minutes: int
) -> Sequence[Attempt]:
    """rows[i] for i ≤ end whose recorded_at is within `minutes` before rows[end]'s."""
    start_at = rows[end].recorded_at - timedelta(minutes=minutes)
    start = bisect_left(orders, (start_at, 2**63), 0, end + 1)
    return rows[start : end + 1]


def _top(values: Iterable[str | None]) -> list[dict[str, Any]]:
    counts = Counter(v for v in values if v)
    return [
        {"value": v, "count": n} for v, n in sorted(counts.items(), key=lambda x: (-x[1], x[0]))
    ][:TOP]


def evidence(
    rows: Sequence[Attempt],
    *,
    observed: dict[str, int],
    thresholds: Mapping[str, int],
    method: str,
    source: str,
    tenant_id: str,
    ip: str | None = None,
    user: str | None = None,
) -> dict[str, Any]:
    first = min(r.occurred_at for r in rows)
    last = max(r.occurred_at for r in rows)
    drill: dict[str, Any] = {
        "action": sorted({r.action for r in rows}),
        "source": source,
        "since": first.isoformat(),
        "until": (last + timedelta(seconds=1)).replace(microsecond=0).isoformat(),
    }
    if tenant_id:
        drill["tenant_id"] = tenant_id
    if ip:
        drill["ip"] = ip
    if user:
        drill["actor"] = user
    return {
        "observed": observed,
        "threshold": dict(thresholds),
        "baseline": None,
        "method": method,
        "window": {
            "start": min(r.recorded_at for r in rows).isoformat(),
            "end": max(r.recorded_at for r in rows).isoformat(),
            "on": "recorded_at",
        },
        "top_ips": _top(r.ip for r in rows),
        "top_users": _top(r.user_name for r in rows),
        "top_user_agents": _top(r.user_agent for r in rows),
        "first_event_at": first.isoformat(),
        "last_event_at": last.isoformat(),
        "sample_event_ids": [r.event_pk for r in rows[-SAMPLES:]],
        "filter": drill,
        "activity_url": "/admin/activity?" + urlencode(drill, doseq=True),
    }


def _scope_key(rule: Rule, source: str, tenant: str, *parts: str) -> str:
    key = "|".join((rule.id, source, tenant, *parts))
    if len(key) <= KEY_LENGTH:
        return key
    # Never cut (two long keys would collide): the head, and a digest of the whole.
    return f"{key[: KEY_LENGTH - 65]}#{hashlib.sha256(key.encode()).hexdigest()}"


class _Collector:
    """Per dedup key: the number of triggers and the latest finding."""

    def __init__(self) -> None:
        self.found: dict[str, Finding] = {}

    def add(self, finding: Finding) -> None:
        seen = self.found.get(finding.dedup_key)
        if seen is None:
            self.found[finding.dedup_key] = finding
            return
        finding.triggers += seen.triggers
        finding.first_seen_at = min(seen.first_seen_at, finding.first_seen_at)
        self.found[finding.dedup_key] = finding


def _groups(
    rows: Sequence[Attempt], key: Callable[[Attempt], tuple[str, ...] | None]
) -> dict[tuple[str, ...], list[Attempt]]:
    out: dict[tuple[str, ...], list[Attempt]] = defaultdict(list)
    for r in rows:
        k = key(r)
        if k is not None:
            out[k].append(r)
    return out


def _failures_by(attr: str) -> Callable[[Attempt], tuple[str, ...] | None]:
    def key(r: Attempt) -> tuple[str, ...] | None:
        value = getattr(r, attr)
        return None if r.success or not value else (r.source, r.tenant_id, value)

    return key


def evaluate(
    rows: Sequence[Attempt],
    fresh: set[int],
    settings_for: SettingsFor,
    *,
    tz: ZoneInfo,
    muted: set[tuple[str, str, str, str]],
) -> list[Finding]:
    """Findings of every enabled rule over `rows` (sorted by (recorded_at, event_pk)),
    triggered by the attempts in `fresh`. `muted`: (source, tenant, kind, value) keys that an
    unresolved success_after_failures alert mutes already."""
    rows = sorted(rows, key=lambda r: r.order)
    out = _Collector()
    muted = set(muted)
    _success_after_failures(rows, fresh, settings_for, out, muted)
    _daily(rows, fresh, settings_for, out, tz)
    _burst(rows, fresh, settings_for, out, muted, "brute_force_ip")
    _burst(rows, fresh, settings_for, out, muted, "account_guessing")
    _spray(rows, fresh, settings_for, out)
    _distributed(rows, fresh, settings_for, out)
    return list(out.found.values())


def off_hours(
    actions: Sequence[Attempt], settings_for: SettingsFor, *, tz: ZoneInfo
) -> list[Finding]:
    """off_hours_policy: each of `actions` (logins and privileged actions of users) that
    arrived outside the tenant's business hours; one finding per user and local day."""
    rule = CATALOGUE["off_hours_policy"]
    out = _Collector()
    by_day: dict[tuple[str, ...], list[Attempt]] = defaultdict(list)
    for r in sorted(actions, key=lambda r: r.order):
        if not r.user_name:
            continue
        eff = settings_for(rule.id, r.tenant_id)
        if not eff.enabled:
            continue
        t = eff.thresholds
        zone = ZoneInfo(eff.time_zone) if eff.time_zone else tz
        local = r.recorded_at.astimezone(zone)
        if eff.business_days is not None:
            weekend = local.weekday() not in eff.business_days
        else:
            weekend = local.weekday() >= 5 and t["weekends_off"] == 1
        if not weekend and t["start_hour"] <= local.hour < t["end_hour"]:
            continue
        day = local.date().isoformat()
        group = by_day[(r.source, r.tenant_id, r.user_name, day)]
        group.append(r)
        ev = evidence(
            group,
            observed={"actions": len(group), "local_hour": local.hour, "weekday": local.weekday()},
            thresholds=t,
            method=f"arrival time in {zone.key} outside [start_hour, end_hour)"
            + (
                f", or on a day not in {_day_names(eff.business_days)}"
                if eff.business_days is not None
                else (", or on a weekend" if t["weekends_off"] == 1 else "")
            ),
            source=r.source,
            tenant_id=r.tenant_id,
            user=r.user_name,
        )
        ev["day"], ev["time_zone"] = day, zone.key
        out.add(
            _finding(
                rule,
                eff,
                _scope_key(rule, r.source, r.tenant_id, r.user_name, day),
                r,
                "user",
                r.user_name,
                f"'{r.user_name}' active outside business hours on {day} ({r.action})",
                ev,
            )
        )
    return list(out.found.values())


DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _day_names(days: Iterable[int]) -> str:
    return ",".join(DAY_NAMES[d] for d in sorted(days)) or "(none)"


def _finding(
    rule: Rule,
    eff: Effective,
    key: str,
    r: Attempt,
    kind: str,
    value: str,
    title: str,
    ev: dict[str, Any],
) -> Finding:
    return Finding(
        rule=rule,
        severity=eff.severity,
        dedup_key=key,
        source=r.source,
        tenant_id=r.tenant_id,
        entity_kind=kind,
        entity_value=value,
        title=title,
        evidence=ev,
        first_seen_at=r.recorded_at,
        last_seen_at=r.recorded_at,
    )


def _daily(
    rows: Sequence[Attempt],
    fresh: set[int],
    settings_for: SettingsFor,
    out: _Collector,
    tz: ZoneInfo,
) -> None:
    rule = CATALOGUE["failed_logins_per_ip_daily"]

    def key(r: Attempt) -> tuple[str, ...] | None:
        if r.success or not r.ip:
            return None
        return (r.source, r.tenant_id, r.ip, r.recorded_at.astimezone(tz).date().isoformat())

    for (source, tenant, ip, day), group in _groups(rows, key).items():
        eff = settings_for(rule.id, tenant)
        if not eff.enabled:
            continue
        limit = eff.thresholds["max_failures"]
        # Every fresh failure past the allowance triggers; the evidence is the last one's.
        hits = [i for i, r in enumerate(group) if r.event_pk in fresh and i + 1 > limit]
        if not hits:
            continue
        i = hits[-1]
        ev = evidence(
            group[: i + 1],
            observed={"failures": i + 1},
            thresholds=eff.thresholds,
            method=f"failed logins from the IP on {day} ({tz.key}) > max_failures",
            source=source,
            tenant_id=tenant,
            ip=ip,
        )
        ev["day"] = day
        title = f"{i + 1} failed logins from {ip} on {day}"
        finding = _finding(
            rule, eff, _scope_key(rule, source, tenant, ip, day), group[i], "ip", ip, title, ev
        )
        finding.triggers, finding.first_seen_at = len(hits), group[hits[0]].recorded_at
        out.add(finding)


def _burst(
    rows: Sequence[Attempt],
    fresh: set[int],
    settings_for: SettingsFor,
    out: _Collector,
    muted: set[tuple[str, str, str, str]],
    rule_id: str,
) -> None:
    rule = CATALOGUE[rule_id]
    per_user = rule_id == "account_guessing"

    def key(r: Attempt) -> tuple[str, ...] | None:
        if r.success or not r.ip or (per_user and not r.user_name):
            return None
        return (r.source, r.tenant_id, r.ip, (r.user_name or "") if per_user else "")

    for (source, tenant, ip, user), group in _groups(rows, key).items():
        eff = settings_for(rule.id, tenant)
        if not eff.enabled:
            continue
        if (source, tenant, "ip", ip) in muted or (
            per_user and (source, tenant, "user", user) in muted
        ):
            continue
        orders = [r.order for r in group]
        need, minutes = eff.thresholds["failures"], eff.thresholds["window_minutes"]
        span = timedelta(minutes=minutes)
        hits = [
            i
            for i, r in enumerate(group)
            if r.event_pk in fresh
            and i + 1 - bisect_left(orders, (r.recorded_at - span, 2**63), 0, i + 1) >= need
        ]
        if not hits:
            continue
        i = hits[-1]
        window = _window(group, orders, i, minutes)
        who = f"user '{user}' from {ip}" if per_user else ip
        ev = evidence(
            window,
            observed={"failures": len(window)},
            thresholds=eff.thresholds,
            method=f"failed logins in a sliding {minutes} min window ≥ failures",
            source=source,
            tenant_id=tenant,
            ip=ip,
            user=user or None,
        )
        value = f"{ip} {user}" if per_user else ip
        parts = (ip, user) if per_user else (ip,)
        finding = _finding(
            rule,
            eff,
            _scope_key(rule, source, tenant, *parts),
            group[i],
            rule.entity,
            value,
            f"{len(window)} failed logins for {who} in {minutes} min",
            ev,
        )
        finding.triggers, finding.first_seen_at = len(hits), group[hits[0]].recorded_at
        out.add(finding)


def _success_after_failures(
    rows: Sequence[Attempt],
    fresh: set[int],
    settings_for: SettingsFor,
    out: _Collector,
    muted: set[tuple[str, str, str, str]],
) -> None:
    rule = CATALOGUE["success_after_failures"]
    by_user = _groups(rows, lambda r: (r.source, r.tenant_id, r.user_name) if r.user_name else None)
    by_ip = _groups(rows, lambda r: (r.source, r.tenant_id, r.ip) if r.ip else None)
    index_user = {k: [r.order for r in g] for k, g in by_user.items()}
    index_ip = {k: [r.order for r in g] for k, g in by_ip.items()}
    for r in rows:
        if not r.success or r.event_pk not in fresh:
            continue
        eff = settings_for(rule.id, r.tenant_id)
        if not eff.enabled:
            continue
        need, minutes = eff.thresholds["failures"], eff.thresholds["window_minutes"]
        best: tuple[str, str, list[Attempt]] | None = None
        for kind, groups, index, value in (
            ("user", by_user, index_user, r.user_name),
            ("ip", by_ip, index_ip, r.ip),
        ):
            if not value:
                continue
            k = (r.source, r.tenant_id, value)
            group, orders = groups[k], index[k]
            end = bisect_left(orders, r.order)
            window = _window(group, orders, end, minutes)
            # Failures since the previous success only: a success resets the run.
            last_ok = max((j for j, a in enumerate(window[:-1]) if a.success), default=-1)
            failures = [a for a in window[last_ok + 1 :] if not a.success]
            if len(failures) >= need:
                best = (kind, value, [*failures, r])
                break
        if best is None:
            continue
        kind, value, window = best
        user = r.user_name or ""
        ev = evidence(
            window,
            observed={"failures": len(window) - 1},
            thresholds=eff.thresholds,
            method=f"a success after ≥ failures failed logins (same {kind}) within {minutes} min",
            source=r.source,
            tenant_id=r.tenant_id,
            ip=r.ip if kind == "ip" else None,
            user=user if kind == "user" else None,
        )
        ev["success_event_id"] = r.event_pk
        ev["user"], ev["ip"] = r.user_name, r.ip
        mutes: list[tuple[str, str]] = [("ip", a.ip) for a in window if a.ip]
        mutes += [("user", a.user_name) for a in window if a.user_name]
        finding = _finding(
            rule,
            eff,
            _scope_key(rule, r.source, r.tenant_id, kind, value),
            r,
            kind,
            value,
            f"Login of '{user or r.ip}' succeeded after {len(window) - 1} failures",
            ev,
        )
        finding.mutes = sorted(set(mutes))
        ev["mutes"] = [list(m) for m in finding.mutes]
        for m_kind, m_value in finding.mutes:
            muted.add((r.source, r.tenant_id, m_kind, m_value))
        out.add(finding)


def _spray(
    rows: Sequence[Attempt], fresh: set[int], settings_for: SettingsFor, out: _Collector
) -> None:
    rule = CATALOGUE["password_spray"]
    for (source, tenant, ip), group in _groups(rows, _failures_by("ip")).items():
        eff = settings_for(rule.id, tenant)
        if not eff.enabled:
            continue
        t = eff.thresholds
        orders = [r.order for r in group]
        for i, r in enumerate(group):
            if r.event_pk not in fresh:
                continue
            window = _window(group, orders, i, t["window_minutes"])
            per_user = Counter(a.user_name for a in window if a.user_name)
            if not per_user:
                continue
            users, tries, most = len(per_user), len(window), max(per_user.values())
            if users < t["users"] or tries < t["tries"] or most > t["max_per_user"]:
                continue
            ev = evidence(
                window,
                observed={"users": users, "tries": tries, "max_per_user": most},
                thresholds=t,
                method=f"one IP in {t['window_minutes']} min: ≥ users distinct users, ≥ tries "
                "failures, ≤ max_per_user per user",
                source=source,
                tenant_id=tenant,
                ip=ip,
            )
            out.add(
                _finding(
                    rule,
                    eff,
                    _scope_key(rule, source, tenant, ip),
                    r,
                    "ip",
                    ip,
                    f"Password spray from {ip}: {users} users, {tries} tries",
                    ev,
                )
            )


def _distributed(
    rows: Sequence[Attempt], fresh: set[int], settings_for: SettingsFor, out: _Collector
) -> None:
    rule = CATALOGUE["distributed_brute_force"]
    for (source, tenant, user), group in _groups(rows, _failures_by("user_name")).items():
        eff = settings_for(rule.id, tenant)
        if not eff.enabled:
            continue
        t = eff.thresholds
        orders = [r.order for r in group]
        for i, r in enumerate(group):
            if r.event_pk not in fresh:
                continue
            window = _window(group, orders, i, t["window_minutes"])
            ips = len({a.ip for a in window if a.ip})
            if ips < t["ips"] or len(window) < t["failures"]:
                continue
            ev = evidence(
                window,
                observed={"ips": ips, "failures": len(window)},
                thresholds=t,
                method=f"one user in {t['window_minutes']} min: ≥ ips distinct IPs and ≥ "
                "failures failed logins",
                source=source,
                tenant_id=tenant,
                user=user,
            )
            out.add(
                _finding(
                    rule,
                    eff,
                    _scope_key(rule, source, tenant, user),
                    r,
                    "user",
                    user,
                    f"{len(window)} failed logins for '{user}' from {ips} IPs",
                    ev,
                )
            )


def network_of(ip: str) -> str | None:
    try:
        address = ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ip_network(f"{address}/{prefix}", strict=False))


NetworkKey = tuple[str, str, str, str]  # source, tenant, user, network


@dataclass(slots=True)
class Seen:
    logins: int
    first_seen_at: datetime
    last_seen_at: datetime


def new_networks(
    logins: Sequence[Attempt],
    known: dict[NetworkKey, Seen],
    settings_for: SettingsFor,
) -> list[Finding]:
    """new_network over the batch's successful logins, in order; `known` (the stored
    networks of their users) is updated in place with the batch's logins."""
    rule = CATALOGUE["new_network"]
    out = _Collector()
    totals: dict[tuple[str, str, str], int] = defaultdict(int)
    for (source, tenant, user, _), stored in known.items():
        totals[(source, tenant, user)] += stored.logins
    for r in sorted(logins, key=lambda r: r.order):
        network = network_of(r.ip) if r.ip else None
        if not r.user_name or network is None:
            continue
        user_key = (r.source, r.tenant_id, r.user_name)
        key = (*user_key, network)
        eff = settings_for(rule.id, r.tenant_id)
        seen = known.get(key)
        t = eff.thresholds
        stale = seen is None or seen.last_seen_at < r.recorded_at - timedelta(days=t["days"])
        if eff.enabled and stale and totals[user_key] >= t["min_logins"]:
            others = sorted(
                (k[3] for k, s in known.items() if k[:3] == user_key and k != key),
            )
            ev = evidence(
                [r],
                observed={"earlier_logins": totals[user_key]},
                thresholds=t,
                method=f"first login from {network} in {t['days']} days, after ≥ min_logins "
                "earlier logins",
                source=r.source,
                tenant_id=r.tenant_id,
                user=r.user_name,
            )
            ev["network"] = network
            ev["last_seen_from_it"] = None if seen is None else seen.last_seen_at.isoformat()
            ev["known_networks"] = others[:20]
            out.add(
                _finding(
                    rule,
                    eff,
                    _scope_key(rule, r.source, r.tenant_id, r.user_name, network),
                    r,
                    "user",
                    r.user_name,
                    f"'{r.user_name}' logged in from a new network {network}",
                    ev,
                )
            )
        if seen is None:
            known[key] = Seen(1, r.recorded_at, r.recorded_at)
        else:
            seen.logins += 1
            seen.last_seen_at = max(seen.last_seen_at, r.recorded_at)
        totals[user_key] += 1
    return list(out.found.values())


PrivilegeKey = tuple[str, str, str, str]  # source, tenant, user, action ('' : any privileged)


@dataclass(slots=True)
class Privilege:
    last_allowed_at: datetime | None
    last_denied_at: datetime | None


def first_privileged(
    actions: Sequence[tuple[Attempt, bool]],
    known: dict[PrivilegeKey, Privilege],
    settings_for: SettingsFor,
) -> list[Finding]:
    """first_privileged_action over the batch's user actions (`success` False: denied),
    each with whether it is privileged, in order; `known` is updated in place."""
    rule = CATALOGUE["first_privileged_action"]
    out = _Collector()
    for r, privileged in sorted(actions, key=lambda x: x[0].order):
        if not r.user_name:
            continue
        user = (r.source, r.tenant_id, r.user_name)
        eff = settings_for(rule.id, r.tenant_id)
        span = timedelta(days=eff.thresholds["days"])
        denial = known.get((*user, r.action))
        if not r.success:
            if denial is None:
                known[(*user, r.action)] = Privilege(None, r.recorded_at)
            else:
                denial.last_denied_at = r.recorded_at
            continue
        reason: str | None = None
        if (
            denial is not None
            and denial.last_denied_at is not None
            and denial.last_denied_at >= r.recorded_at - span
            and (denial.last_allowed_at is None or denial.last_allowed_at < denial.last_denied_at)
        ):
            reason = "denied_then_allowed"
        if denial is not None:
            denial.last_allowed_at = r.recorded_at
        previous: datetime | None = None
        if privileged:
            activity = known.get((*user, ""))
            if activity is None:
                known[(*user, "")] = Privilege(r.recorded_at, None)
            else:
                last = previous = activity.last_allowed_at
                if reason is None and last is not None and last < r.recorded_at - span:
                    reason = "first_in_days"
                activity.last_allowed_at = r.recorded_at
        if reason is None or not eff.enabled:
            continue
        ev = evidence(
            [r],
            observed={"days": eff.thresholds["days"]},
            thresholds=eff.thresholds,
            method="the same action denied to the user within `days` days, now allowed"
            if reason == "denied_then_allowed"
            else "no privileged action of the user in the `days` days before",
            source=r.source,
            tenant_id=r.tenant_id,
            user=r.user_name,
        )
        ev["reason"] = reason
        if reason == "denied_then_allowed" and denial is not None:
            ev["denied_at"] = denial.last_denied_at.isoformat() if denial.last_denied_at else None
        else:
            ev["previous_privileged_at"] = previous.isoformat() if previous else None
        parts = (r.user_name, r.action) if reason == "denied_then_allowed" else (r.user_name,)
        title = (
            f"'{r.user_name}' was allowed {r.action} after it was denied"
            if reason == "denied_then_allowed"
            else f"'{r.user_name}' did something privileged ({r.action}) for the first time "
            f"in {eff.thresholds['days']} days"
        )
        out.add(
            _finding(
                rule,
                eff,
                _scope_key(rule, r.source, r.tenant_id, *parts),
                r,
                "user",
                r.user_name,
                title,
                ev,
            )
        )
    return list(out.found.values())
