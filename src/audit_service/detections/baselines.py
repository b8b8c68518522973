"""The learned rules, pure Python: off_hours_learned, volume_spike_user, volume_spike_tenant.

Their history is hourly counts (detection_volume) cut at the local hours of the evaluator's
zone (AUDIT_DETECTIONS_TZ), by arrival (`recorded_at`), kept as the UTC instant each local
hour starts. "The same hour of the week k weeks ago" is the same local wall-clock hour 7·k
days earlier, so a DST switch does not shift a user's rhythm by an hour; a wall-clock hour
that did not exist (spring forward) is no sample.

The volume rules are evaluated **on arrival against the running hour**: each event adds one
to its user's (tenant's, module's) count of the hour, and the event whose count first meets
the rule's condition triggers it. The conditions only grow easier with the count, so each
hour triggers at most once (dedup key: rule, subject, hour), and the same events trigger the
same alert however the log is cut into batches.

volume_spike_user: the baseline is the user's counts in the same hour of the week over the
last `weeks` (8) weeks of history (at least `min_weeks`, 4); mean μ (at least one event over
those weeks, 1/n, so a never-busy hour is not a division by zero), dispersion φ = max(1,
s²/μ) (quasi-Poisson: the variance of real activity exceeds the mean), and p = P(Y ≥ c/φ)
for Y ~ Poisson(μ/φ), by the regularized incomplete gamma function. It fires when p ≤
10^-p_exponent and c ≥ ratio x μ and c ≥ min_events.

volume_spike_tenant: an EWMA (λ = lambda_percent/100) over the same hour of the week,
oldest week first: m ← m + λ(x - m), v ← (1 - λ)(v + λ(x - m)²); it fires when c > m +
k_sigma x sigma with sigma = √max(v, m, 1) (never below Poisson noise), c ≥ min_events and
c ≥ min_ratio_percent % of m (200: on the benign month of bench/detections.py, 3 sigma alone
made 11 medium alerts and 150 % still 9, all modules at 30-45 events an hour, where 3 sigma is
only ~1.5x and a Poisson count crosses it ~0.3 % of the hours). Over
consecutive hours instead, every morning would be a spike.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from audit_service.detections.engine import (
    Attempt,
    Finding,
    SettingsFor,
    _Collector,
    _finding,
    _scope_key,
    evidence,
)
from audit_service.detections.rules import CATALOGUE

USER, LOGIN, TENANT, MODULE = "user", "login", "tenant", "module"
# (kind, subject, source, tenant): a detection_volume series.
Key = tuple[str, str, str, str]
Counts = dict[tuple[Key, datetime], int]


# --- local hours -----------------------------------------------------------------------------


def hour_of(at: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant the local hour of `at` starts."""
    # Every zone's offset is a whole number of quarter hours: the quarter decides the hour.
    quarter = at.astimezone(UTC).replace(second=0, microsecond=0)
    return _hour_of(quarter.replace(minute=quarter.minute - quarter.minute % 15), tz)


@lru_cache(maxsize=8192)
def _hour_of(quarter: datetime, tz: ZoneInfo) -> datetime:
    local = quarter.astimezone(tz).replace(minute=0, second=0, microsecond=0)
    return local.astimezone(UTC)


def weeks_before(hour: datetime, tz: ZoneInfo, k: int) -> datetime | None:
    """The same local wall-clock hour 7·k days before `hour`; None when it did not exist."""
    wall = hour.astimezone(tz).replace(tzinfo=None) - timedelta(weeks=k)
    back = wall.replace(tzinfo=tz)
    if back.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != wall:
        return None
    return back.astimezone(UTC)


def baseline_hours(hours: Iterable[datetime], tz: ZoneInfo, weeks: int = 8) -> set[datetime]:
    out: set[datetime] = set()
    for h in hours:
        out.add(h)
        out.update(b for k in range(1, weeks + 1) if (b := weeks_before(h, tz, k)) is not None)
    return out


# --- the Poisson tail ------------------------------------------------------------------------


def _lower_gamma_regularized(a: float, x: float) -> float:
    """P(a, x) = gamma(a, x) / Γ(a) (Numerical Recipes' series / continued fraction)."""
    if x <= 0:
        return 0.0
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-16:
                break
        return min(1.0, total * math.exp(log_front))
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-16:
            break
    return max(0.0, 1.0 - math.exp(log_front) * h)


def poisson_tail(x: float, mu: float) -> float:
    """P(X ≥ x) for X ~ Poisson(mu), continuous in x (P(X ≥ n) = P(n, mu) for integers)."""
    if x <= 0:
        return 1.0
    if mu <= 0:
        return 0.0
    return _lower_gamma_regularized(x, mu)


@dataclass(frozen=True, slots=True)
class Baseline:
    samples: tuple[int, ...]  # oldest week first
    mean: float
    dispersion: float

    @classmethod
    def of(cls, samples: Sequence[int]) -> Baseline:
        n = len(samples)
        mean = max(sum(samples) / n, 1 / n)
        var = sum((x - mean) ** 2 for x in samples) / (n - 1) if n > 1 else mean
        return cls(tuple(samples), mean, max(1.0, var / mean))

    def p(self, count: int) -> float:
        """Quasi-Poisson upper tail of `count`."""
        return poisson_tail(count / self.dispersion, self.mean / self.dispersion)


def _samples(
    counts: Mapping[tuple[Key, datetime], int],
    key: Key,
    hour: datetime,
    tz: ZoneInfo,
    weeks: int,
    since: datetime | None,
) -> list[int]:
    """The counts of the same hour of the week, oldest first, from weeks of history only."""
    out: list[int] = []
    for k in range(weeks, 0, -1):
        b = weeks_before(hour, tz, k)
        if b is None or since is None or b < since:
            continue
        out.append(counts.get((key, b), 0))
    return out


def _ev(
    rows: Sequence[Attempt],
    *,
    observed: dict[str, int],
    thresholds: Mapping[str, int],
    method: str,
    r: Attempt,
    hour: datetime,
    tz: ZoneInfo,
    user: str | None,
    baseline: dict[str, Any],
) -> dict[str, Any]:
    ev = evidence(
        rows,
        observed=observed,
        thresholds=thresholds,
        method=method,
        source=r.source,
        tenant_id=r.tenant_id,
        user=user,
    )
    ev["baseline"] = baseline
    local = hour.astimezone(tz)
    ev["hour"] = {
        "start": hour.isoformat(),
        "local": local.isoformat(),
        "weekday": local.weekday(),
        "hour": local.hour,
        "time_zone": tz.key,
    }
    return ev


# --- volume_spike_user -----------------------------------------------------------------------


def user_spikes(
    events: Sequence[Attempt],
    counts: Counts,
    first_seen: Mapping[Key, datetime],
    settings_for: SettingsFor,
    *,
    tz: ZoneInfo,
) -> list[Finding]:
    """volume_spike_user over the batch's user events (in order); `counts` (the stored
    hours: the running ones and their baselines) gets the batch's events added in place."""
    rule = CATALOGUE["volume_spike_user"]
    out = _Collector()
    cache: dict[tuple[Key, datetime], Baseline | None] = {}
    hour_rows: dict[tuple[Key, datetime], list[Attempt]] = defaultdict(list)
    for r in sorted(events, key=lambda r: r.order):
        if not r.user_name:
            continue
        key: Key = (USER, r.user_name, r.source, r.tenant_id)
        hour = hour_of(r.recorded_at, tz)
        c = counts.get((key, hour), 0) + 1
        counts[(key, hour)] = c
        hour_rows[(key, hour)].append(r)
        eff = settings_for(rule.id, r.tenant_id)
        t = eff.thresholds
        if not eff.enabled or c < t["min_events"]:
            continue
        if (key, hour) not in cache:
            seen = first_seen.get(key)
            samples = _samples(
                counts, key, hour, tz, t["weeks"], None if seen is None else hour_of(seen, tz)
            )
            cache[(key, hour)] = Baseline.of(samples) if len(samples) >= t["min_weeks"] else None
        base = cache[(key, hour)]
        if base is None:
            continue
        limit = 10.0 ** -t["p_exponent"]

        def holds(
            n: int, base: Baseline = base, t: Mapping[str, int] = t, limit: float = limit
        ) -> bool:
            return n >= t["min_events"] and n >= t["ratio"] * base.mean and base.p(n) <= limit

        if not holds(c) or holds(c - 1):
            continue
        p = base.p(c)
        ev = _ev(
            hour_rows[(key, hour)],
            observed={"events": c},
            thresholds=t,
            method="quasi-Poisson upper tail of the hour's events against the same hour of "
            "the week: p ≤ 10^-p_exponent, events ≥ ratio x baseline and ≥ min_events",
            r=r,
            hour=hour,
            tz=tz,
            user=r.user_name,
            baseline={
                "mean": round(base.mean, 4),
                "dispersion": round(base.dispersion, 4),
                "weeks": len(base.samples),
                "samples": list(base.samples),
                "p": p,
            },
        )
        out.add(
            _finding(
                rule,
                eff,
                _scope_key(rule, r.source, r.tenant_id, r.user_name, hour.isoformat()),
                r,
                "user",
                r.user_name,
                f"'{r.user_name}' made {c} events in an hour, usually {base.mean:.1f}",
                ev,
            )
        )
    return list(out.found.values())


# --- volume_spike_tenant ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ewma:
    samples: tuple[int, ...]
    mean: float
    sigma: float

    @classmethod
    def of(cls, samples: Sequence[int], weight: float) -> Ewma:
        m, v = float(samples[0]), 0.0
        for x in samples[1:]:
            d = x - m
            m += weight * d
            v = (1 - weight) * (v + weight * d * d)
        return cls(tuple(samples), m, math.sqrt(max(v, m, 1.0)))


def tenant_spikes(
    events: Sequence[tuple[Attempt, str]],
    counts: Counts,
    first_seen: Mapping[Key, datetime],
    settings_for: SettingsFor,
    *,
    tz: ZoneInfo,
) -> list[Finding]:
    """volume_spike_tenant over every event of the batch with its module, for the source and
    tenant and for the module of it; `counts` is updated in place."""
    rule = CATALOGUE["volume_spike_tenant"]
    out = _Collector()
    cache: dict[tuple[Key, datetime], Ewma | None] = {}
    hour_rows: dict[tuple[Key, datetime], list[Attempt]] = defaultdict(list)
    for r, module in sorted(events, key=lambda x: x[0].order):
        hour = hour_of(r.recorded_at, tz)
        eff = settings_for(rule.id, r.tenant_id)
        t = eff.thresholds
        for key in ((TENANT, "", r.source, r.tenant_id), (MODULE, module, r.source, r.tenant_id)):
            c = counts.get((key, hour), 0) + 1
            counts[(key, hour)] = c
            rows = hour_rows[(key, hour)]
            rows.append(r)
            if len(rows) > 2 * 20:
                del rows[:20]
            if not eff.enabled or c < t["min_events"]:
                continue
            if (key, hour) not in cache:
                seen = first_seen.get(key)
                samples = _samples(
                    counts, key, hour, tz, t["weeks"], None if seen is None else hour_of(seen, tz)
                )
                cache[(key, hour)] = (
                    Ewma.of(samples, t["lambda_percent"] / 100)
                    if len(samples) >= t["min_weeks"]
                    else None
                )
            base = cache[(key, hour)]
            if base is None:
                continue
            limit = base.mean + t["k_sigma"] * base.sigma

            def holds(
                n: int, limit: float = limit, t: Mapping[str, int] = t, base: Ewma = base
            ) -> bool:
                return (
                    n >= t["min_events"]
                    and n > limit
                    and n * 100 >= t["min_ratio_percent"] * base.mean
                )

            if not holds(c) or holds(c - 1):
                continue
            what = f"module {module} of " if key[0] == MODULE else ""
            scope = r.tenant_id or "(no tenant)"
            ev = _ev(
                rows,
                observed={"events": c},
                thresholds=t,
                method="events of the hour above the EWMA of the same hour of the week + "
                "k_sigma x sigma, ≥ min_ratio_percent % of it, and ≥ min_events",
                r=r,
                hour=hour,
                tz=tz,
                user=None,
                baseline={
                    "ewma": round(base.mean, 3),
                    "sigma": round(base.sigma, 3),
                    "limit": round(limit, 3),
                    "weeks": len(base.samples),
                    "samples": list(base.samples),
                },
            )
            ev["filter"].pop("action", None)
            if key[0] == MODULE:
                ev["filter"]["module"] = module
            kind_value = f"{scope} {module}" if key[0] == MODULE else scope
            out.add(
                _finding(
                    rule,
                    eff,
                    _scope_key(rule, r.source, r.tenant_id, key[0], key[1], hour.isoformat()),
                    r,
                    key[0],
                    kind_value,
                    f"{what}{r.source}/{scope}: {c} events in an hour, usually {base.mean:.0f}",
                    ev,
                )
            )
    return list(out.found.values())


# --- off_hours_learned -----------------------------------------------------------------------


def learned_off_hours(
    logins: Sequence[Attempt],
    history: dict[Key, dict[datetime, int]],
    settings_for: SettingsFor,
    *,
    tz: ZoneInfo,
) -> list[Finding]:
    """off_hours_learned over the batch's successful logins (in order); `history` (each
    user's login hours of the last `days` days and more) gets the batch's logins added."""
    rule = CATALOGUE["off_hours_learned"]
    out = _Collector()
    for r in sorted(logins, key=lambda r: r.order):
        if not r.user_name:
            continue
        key: Key = (LOGIN, r.user_name, r.source, r.tenant_id)
        hours = history.setdefault(key, {})
        hour = hour_of(r.recorded_at, tz)
        eff = settings_for(rule.id, r.tenant_id)
        t = eff.thresholds
        if eff.enabled:
            start = hour - timedelta(days=t["days"])
            local = hour.astimezone(tz)
            slot = local.weekday() * 24 + local.hour
            spread = t["spread_hours"]
            total = same = 0
            days: set[Any] = set()
            for h, n in hours.items():
                if not start <= h < hour or n <= 0:
                    continue
                lh = h.astimezone(tz)
                total += n
                days.add(lh.date())
                apart = abs(lh.weekday() * 24 + lh.hour - slot)
                if min(apart, 168 - apart) <= spread:
                    same += n
            if (
                total >= t["min_logins"]
                and len(days) >= t["min_days"]
                and same * 1000 < t["max_share_per_mille"] * total
            ):
                ev = _ev(
                    [r],
                    observed={"logins_in_slot": same, "logins": total, "days": len(days)},
                    thresholds=t,
                    method="the login's local hour of the week (± spread_hours) holds < "
                    "max_share_per_mille ‰ of the user's logins of the last `days` days "
                    "(≥ min_logins on ≥ min_days)",
                    r=r,
                    hour=hour,
                    tz=tz,
                    user=r.user_name,
                    baseline={"share": same / total, "logins": total, "days": len(days)},
                )
                out.add(
                    _finding(
                        rule,
                        eff,
                        _scope_key(rule, r.source, r.tenant_id, r.user_name, hour.isoformat()),
                        r,
                        "user",
                        r.user_name,
                        f"'{r.user_name}' logged in at an unusual hour for them "
                        f"({local:%a %H}:00 {tz.key})",
                        ev,
                    )
                )
        hours[hour] = hours.get(hour, 0) + 1
    return list(out.found.values())
