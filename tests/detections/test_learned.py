"""off_hours_learned, volume_spike_user and volume_spike_tenant through the evaluator (both
dialects): the weeks of history are seeded into detection_volume (recorded_at is the
server's clock, so history cannot come in through the API), today's events come in through
the API and the log like any others."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from audit_service.detections import baselines as b
from audit_service.detections import repository as repo
from audit_service.detections.models import DetectionSubject, DetectionVolume
from tests.conftest import Harness
from tests.detections.helpers import SOURCE, alerts, attempt, evaluate, post

UTC_ZONE = ZoneInfo("UTC")


async def _seed(h: Harness, key: b.Key, counts: dict[datetime, int], first: datetime) -> None:
    async with h.app.state.sessionmaker() as session:
        await repo.save_volume(
            session,
            [
                {
                    "kind": key[0],
                    "subject": key[1],
                    "source": key[2],
                    "tenant_id": key[3],
                    "hour_start": at,
                    "events": n,
                }
                for at, n in counts.items()
            ],
        )
        await repo.save_subjects(
            session,
            [
                {
                    "kind": key[0],
                    "subject": key[1],
                    "source": key[2],
                    "tenant_id": key[3],
                    "first_seen_at": first,
                    "last_seen_at": first + timedelta(days=1),
                }
            ],
        )
        await session.commit()


def _weekly(per_hour: int) -> dict[datetime, int]:
    """`per_hour` in this hour and the next, every week of the last 8."""
    now = b.hour_of(datetime.now(UTC), UTC_ZONE)
    out: dict[datetime, int] = {}
    for hour in (now, now + timedelta(hours=1)):
        for k in range(1, 9):
            at = b.weeks_before(hour, UTC_ZONE, k)
            assert at is not None
            out[at] = per_hour
    return out


def _user_events(user: str, n: int, **fields: Any) -> list[dict[str, Any]]:
    return [
        {
            "action": "grade.viewed",
            "outcome": "success",
            "actor_id": user,
            "actor_name": user,
            "actor_type": "user",
            "occurred_at": datetime.now(UTC).isoformat(),
            "ip": "198.51.100.20",
            **fields,
        }
        for _ in range(n)
    ]


async def test_volume_spike_user(h: Harness) -> None:
    eight_weeks = datetime.now(UTC) - timedelta(weeks=8, days=1)
    await _seed(h, (b.USER, "alice", SOURCE, "t1"), _weekly(2), eight_weeks)
    await _seed(
        h, (b.USER, "bob", SOURCE, "t1"), _weekly(2), datetime.now(UTC) - timedelta(weeks=2)
    )
    await post(
        h, _user_events("alice", 30, tenant_id="t1") + _user_events("bob", 30, tenant_id="t1")
    )
    await evaluate(h, batch=7)
    found = await alerts(h, "volume_spike_user")
    assert [(a.entity_value, a.severity, a.count) for a in found] == [("alice", "medium", 1)]
    ev = found[0].evidence
    assert ev["observed"]["events"] >= 20 and ev["baseline"]["weeks"] == 8
    assert ev["baseline"]["mean"] == 2.0 and ev["baseline"]["p"] <= 1e-6
    assert ev["filter"]["actor"] == "alice" and ev["filter"]["tenant_id"] == "t1"
    # Counted: this hour's row holds every event of alice and bob.
    async with h.app.state.sessionmaker() as session:
        rows = (
            await session.execute(
                select(DetectionVolume.subject, DetectionVolume.events).where(
                    DetectionVolume.kind == "user",
                    DetectionVolume.hour_start
                    >= b.hour_of(datetime.now(UTC), UTC_ZONE) - timedelta(hours=1),
                )
            )
        ).all()
        subjects = (
            await session.scalars(
                select(DetectionSubject.subject).where(DetectionSubject.kind == "user")
            )
        ).all()
    totals: dict[str, int] = {}
    for subject, n in rows:
        totals[subject] = totals.get(subject, 0) + n
    assert totals["alice"] == 30 and totals["bob"] == 30
    assert {"alice", "bob"} <= set(subjects)
    # More of the same hour adds nothing: one alert per user and hour, counted once.
    await post(h, _user_events("alice", 5, tenant_id="t1"))
    await evaluate(h)
    assert [a.count for a in await alerts(h, "volume_spike_user")] == [1]


async def test_volume_spike_user_needs_history(h: Harness) -> None:
    await post(h, _user_events("carol", 60))
    await evaluate(h)
    assert await alerts(h, "volume_spike_user") == []


async def test_volume_spike_tenant(h: Harness) -> None:
    three_weeks = datetime.now(UTC) - timedelta(weeks=3, days=1)
    await _seed(h, (b.TENANT, "", SOURCE, "t9"), _weekly(10), three_weeks)
    await _seed(h, (b.MODULE, "grade", SOURCE, "t9"), _weekly(10), three_weeks)
    admin = await h.auth()
    r = await h.client.patch(
        "/admin/detections/rules/volume_spike_tenant",
        headers=admin,
        json={"thresholds": {"min_events": 20}},
    )
    assert r.status_code == 200, r.text
    events = [e for i in range(30) for e in _user_events(f"u{i}", 1, tenant_id="t9")]
    await post(h, events)
    await evaluate(h)
    found = {a.entity_kind: a for a in await alerts(h, "volume_spike_tenant")}
    assert set(found) == {"tenant", "module"}
    assert found["tenant"].entity_value == "t9"
    assert found["module"].entity_value == "t9 grade"
    assert found["tenant"].evidence["baseline"]["ewma"] == 10.0
    assert found["module"].evidence["filter"]["module"] == "grade"


async def test_off_hours_learned(h: Harness) -> None:
    now = datetime.now(UTC)
    usual = b.hour_of(now, UTC_ZONE) - timedelta(hours=12)
    history = {usual - timedelta(days=d): 1 for d in range(1, 25)}
    await _seed(h, (b.LOGIN, "dora", SOURCE, ""), history, now - timedelta(days=30))
    await _seed(h, (b.LOGIN, "erin", SOURCE, ""), dict(list(history.items())[:15]), now)
    await post(
        h,
        [
            attempt("198.51.100.30", "dora", ok=True),
            attempt("198.51.100.30", "dora", ok=True),
            attempt("198.51.100.31", "erin", ok=True),  # 15 logins: too little history
            attempt("127.0.0.1", "dora", ok=False),
        ],
    )
    await evaluate(h)
    found = await alerts(h, "off_hours_learned")
    assert [(a.entity_value, a.severity, a.count) for a in found] == [("dora", "low", 2)]
    assert found[0].evidence["observed"]["logins"] == 24
    assert found[0].evidence["observed"]["logins_in_slot"] == 0
