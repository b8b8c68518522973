"""The learned rules' pure logic (baselines.py): the Poisson tail, local hours across DST,
and each rule at its threshold edges and history guards. No database: the evaluator's
bookkeeping around them is tested in test_learned.py on both dialects."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from audit_service.detections import baselines as b
from audit_service.detections.engine import Attempt, Effective
from audit_service.detections.rules import CATALOGUE

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 11, 18, 10, 15, tzinfo=UTC)  # a Wednesday


def settings(overrides: dict[str, dict[str, int]] | None = None):  # type: ignore[no-untyped-def]
    def effective(rule_id: str, tenant: str) -> Effective:
        rule = CATALOGUE[rule_id]
        return Effective(
            True, rule.severity, {**rule.defaults(), **(overrides or {}).get(rule_id, {})}
        )

    return effective


def ev(pk: int, at: datetime, user: str = "alice", module: str = "exams") -> Attempt:
    return Attempt(pk, at, at, "lms", "t1", "198.51.100.7", user, "ua", True, f"{module}.x")


def exact_tail(k: int, mu: float) -> float:
    return 1 - sum(math.exp(-mu) * mu**i / math.factorial(i) for i in range(k))


@pytest.mark.parametrize(("k", "mu"), [(1, 0.5), (5, 2.0), (20, 3.0), (30, 10.0), (3, 7.5)])
def test_poisson_tail_matches_the_sum(k: int, mu: float) -> None:
    assert b.poisson_tail(k, mu) == pytest.approx(exact_tail(k, mu), rel=1e-9, abs=1e-15)


def test_poisson_tail_edges() -> None:
    assert b.poisson_tail(0, 3.0) == 1.0
    assert b.poisson_tail(5, 0.0) == 0.0
    assert 0 < b.poisson_tail(60, 2.0) < 1e-40  # tiny tails keep their precision


def test_quasi_poisson_is_wider_than_poisson() -> None:
    steady = b.Baseline.of([5, 5, 5, 5])
    bursty = b.Baseline.of([0, 12, 1, 7])
    assert steady.dispersion == 1.0 and bursty.dispersion > 1.0
    assert bursty.p(25) > steady.p(25)


def test_weeks_before_keeps_the_local_hour_across_dst() -> None:
    # 2026-10-25: Berlin leaves summer time. 09:00 local is 07:00 UTC before, 08:00 after.
    after = datetime(2026, 10, 28, 8, 0, tzinfo=UTC)  # Wed 09:00 CET
    back = b.weeks_before(after, BERLIN, 1)
    assert back == datetime(2026, 10, 21, 7, 0, tzinfo=UTC)  # Wed 09:00 CEST
    assert back is not None and back.astimezone(BERLIN).hour == 9
    # A wall-clock hour that did not exist (spring forward, 2026-03-29 02:00) is no sample.
    assert b.weeks_before(datetime(2026, 4, 5, 0, 0, tzinfo=UTC), BERLIN, 1) is None


def test_hour_of_cuts_local_hours() -> None:
    india = ZoneInfo("Asia/Kolkata")
    assert b.hour_of(datetime(2026, 1, 1, 10, 40, tzinfo=UTC), india) == datetime(
        2026, 1, 1, 10, 30, tzinfo=UTC
    )


def _history(key: b.Key, hour: datetime, samples: list[int]) -> b.Counts:
    """Counts for the same hour of the week, newest week last."""
    counts: b.Counts = {}
    for k, n in zip(range(len(samples), 0, -1), samples, strict=True):
        at = b.weeks_before(hour, UTC_ZONE, k)
        assert at is not None
        counts[(key, at)] = n
    return counts


UTC_ZONE = ZoneInfo("UTC")
USER_KEY: b.Key = (b.USER, "alice", "lms", "t1")


def _spike(n: int, samples: list[int], weeks_seen: int = 8, **t: int) -> list[int]:
    hour = b.hour_of(NOW, UTC_ZONE)
    counts = _history(USER_KEY, hour, samples)
    first = {USER_KEY: hour - timedelta(weeks=weeks_seen)}
    events = [ev(i, NOW + timedelta(seconds=i)) for i in range(n)]
    found = b.user_spikes(events, counts, first, settings({"volume_spike_user": t}), tz=UTC_ZONE)
    assert counts[(USER_KEY, hour)] == n
    return [f.evidence["observed"]["events"] for f in found]


def test_user_spike_fires_once_at_the_crossing() -> None:
    found = _spike(40, [2, 3, 2, 3, 2, 3, 2, 3])
    assert len(found) == 1 and 20 <= found[0] < 40  # the event whose count first crossed


def test_user_spike_needs_min_events() -> None:
    # A never-busy hour: the p-value and ratio hold early; min_events 20 decides.
    assert _spike(19, [0] * 8) == []
    assert _spike(20, [0] * 8) == [20]


def test_user_spike_needs_the_ratio() -> None:
    # Baseline 10: 29 events is p ≤ 1e-6 but < 3x; 30 is both.
    assert _spike(29, [10] * 8) == []
    assert _spike(30, [10] * 8) == [30]


def test_user_spike_needs_weeks_of_history() -> None:
    assert _spike(40, [0] * 8, weeks_seen=3) == []  # 3 weeks < min_weeks 4
    assert _spike(40, [0] * 8, weeks_seen=4) == [20]


def test_user_spike_over_dispersion_raises_the_bar() -> None:
    steady = _spike(30, [10, 10, 10, 10, 10, 10, 10, 10])
    bursty = _spike(30, [0, 25, 2, 20, 0, 18, 5, 10])  # mean 10, but wild
    assert steady == [30] and bursty == []


def test_user_spike_is_the_same_however_batched() -> None:
    hour = b.hour_of(NOW, UTC_ZONE)
    events = [ev(i, NOW + timedelta(seconds=i)) for i in range(50)]
    keys = []
    for cut in (50, 7, 1):
        counts = _history(USER_KEY, hour, [1] * 8)
        first = {USER_KEY: hour - timedelta(weeks=8)}
        found = []
        for i in range(0, 50, cut):
            found += b.user_spikes(events[i : i + cut], counts, first, settings(), tz=UTC_ZONE)
        keys.append([(f.dedup_key, f.last_seen_at) for f in found])
    assert keys[0] == keys[1] == keys[2] and len(keys[0]) == 1


TENANT_KEY: b.Key = (b.TENANT, "", "lms", "t1")


def _tenant(n: int, samples: list[int], weeks_seen: int = 8, **t: int) -> list[str]:
    hour = b.hour_of(NOW, UTC_ZONE)
    counts = _history(TENANT_KEY, hour, samples)
    first = {TENANT_KEY: hour - timedelta(weeks=weeks_seen)}
    events = [(ev(i, NOW + timedelta(seconds=i), user=f"u{i % 50}"), "exams") for i in range(n)]
    found = b.tenant_spikes(
        events, counts, first, settings({"volume_spike_tenant": t}), tz=UTC_ZONE
    )
    return sorted(f"{f.entity_kind}:{f.evidence['observed']['events']}" for f in found)


def test_tenant_spike_over_ewma_plus_k_sigma() -> None:
    # Steady 100/h: EWMA 100, sigma = sqrt(100) = 10, limit 130 -> the 131st event fires.
    assert _tenant(130, [100] * 8, min_ratio_percent=100) == []
    assert _tenant(131, [100] * 8, min_ratio_percent=100) == ["tenant:131"]


def test_tenant_spike_needs_the_ratio() -> None:
    # 3 sigma is crossed at 131, but the default 200 % of the EWMA only at 200.
    assert _tenant(199, [100] * 8) == []
    assert _tenant(200, [100] * 8) == ["tenant:200"]


def test_tenant_spike_ewma_weights_recent_weeks() -> None:
    # Grown from 50 to 100 over the weeks: the EWMA (λ 0.3) sits near the recent weeks.
    rising = _tenant(400, [50, 50, 50, 50, 100, 100, 100, 100])
    flat = _tenant(400, [75] * 8)
    assert rising and flat and int(rising[0].split(":")[1]) > int(flat[0].split(":")[1])


def test_tenant_spike_needs_three_weeks_and_min_events() -> None:
    assert _tenant(500, [100] * 8, weeks_seen=2) == []
    assert _tenant(500, [100] * 8, weeks_seen=3) == ["tenant:200"]
    assert _tenant(49, [0] * 8) == []  # min_events 50
    assert _tenant(50, [0] * 8) == ["tenant:50"]


def test_module_spike_is_its_own_series() -> None:
    hour = b.hour_of(NOW, UTC_ZONE)
    module_key: b.Key = (b.MODULE, "exams", "lms", "t1")
    counts = {**_history(TENANT_KEY, hour, [1000] * 8), **_history(module_key, hour, [10] * 8)}
    first = {TENANT_KEY: hour - timedelta(weeks=8), module_key: hour - timedelta(weeks=8)}
    events = [(ev(i, NOW + timedelta(seconds=i)), "exams") for i in range(100)]
    found = b.tenant_spikes(events, counts, first, settings(), tz=UTC_ZONE)
    assert [(f.entity_kind, f.entity_value) for f in found] == [("module", "t1 exams")]
    assert found[0].evidence["filter"]["module"] == "exams"


LOGIN_KEY: b.Key = (b.LOGIN, "alice", "lms", "t1")


def _logins_history(days: int, per_day: int = 1, hour: int = 9) -> dict[b.Key, dict[datetime, int]]:
    start = datetime(2026, 11, 18, hour, 0, tzinfo=UTC)
    return {LOGIN_KEY: {start - timedelta(days=d): per_day for d in range(1, days + 1)}}


def _learned(history: dict[b.Key, dict[datetime, int]], at: datetime, **t: int) -> int:
    login = Attempt(1, at, at, "lms", "t1", "198.51.100.7", "alice", "ua", True, "auth.login")
    return len(
        b.learned_off_hours([login], history, settings({"off_hours_learned": t}), tz=UTC_ZONE)
    )


def test_learned_off_hours_fires_at_a_new_hour_only() -> None:
    at_3 = datetime(2026, 11, 18, 3, 5, tzinfo=UTC)
    at_9 = datetime(2026, 11, 18, 9, 5, tzinfo=UTC)
    assert _learned(_logins_history(20), at_3) == 1
    assert _learned(_logins_history(21), at_9) == 0  # Wednesdays 09:00 hold 3/21


def test_learned_off_hours_needs_history() -> None:
    at_3 = datetime(2026, 11, 18, 3, 5, tzinfo=UTC)
    assert _learned(_logins_history(19), at_3) == 0  # 19 logins < 20
    assert _learned(_logins_history(9, per_day=3), at_3) == 0  # 27 logins on 9 days < 10
    assert _learned(_logins_history(10, per_day=2), at_3) == 1  # 20 on 10 days


def test_learned_off_hours_share_edge() -> None:
    # 100 logins over 25 days, one of them on a Wednesday at 03:00: exactly 1 %, not < 1 %.
    hist = _logins_history(25, per_day=4)
    hist[LOGIN_KEY][datetime(2026, 11, 11, 3, 0, tzinfo=UTC)] = 1
    hist[LOGIN_KEY][datetime(2026, 11, 17, 9, 0, tzinfo=UTC)] = 3
    at_3 = datetime(2026, 11, 18, 3, 5, tzinfo=UTC)
    assert _learned(hist, at_3) == 0
    assert _learned(hist, at_3, max_share_per_mille=11) == 1


def test_learned_off_hours_follows_local_time_across_dst() -> None:
    # Every day 09:00 Berlin; after the switch that is another UTC hour, still no alert.
    history: dict[b.Key, dict[datetime, int]] = {LOGIN_KEY: {}}
    for d in range(28):
        day = datetime(2026, 10, 1) + timedelta(days=d)
        local = day.replace(hour=9, tzinfo=BERLIN)
        history[LOGIN_KEY][b.hour_of(local.astimezone(UTC), BERLIN)] = 1
    after = datetime(2026, 10, 29, 9, 10, tzinfo=BERLIN).astimezone(UTC)
    login = Attempt(1, after, after, "lms", "t1", "198.51.100.7", "alice", "ua", True, "auth.login")
    assert b.learned_off_hours([login], history, settings(), tz=BERLIN) == []
    utc_hour_earlier = after - timedelta(hours=2)
    login = Attempt(
        2, utc_hour_earlier, utc_hour_earlier, "lms", "t1", None, "alice", None, True, "a"
    )
    assert len(b.learned_off_hours([login], history, settings(), tz=BERLIN)) == 1


def test_learned_off_hours_spread_hours() -> None:
    at_10 = datetime(2026, 11, 18, 10, 5, tzinfo=UTC)  # history: 09:00 every day
    assert _learned(_logins_history(21), at_10) == 0  # 09:00 is within ±1 h
    assert _learned(_logins_history(21), at_10, spread_hours=0) == 1
