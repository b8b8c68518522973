"""off_hours_policy (both dialects): a user's login or privileged action arriving outside
business hours. The hours are set around the current time, so the test holds at any hour."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.conftest import Harness
from tests.detections.helpers import alerts, attempt, evaluate, post


def _outside_now() -> dict[str, int]:
    hour = datetime.now(UTC).hour
    if hour == 0:
        return {"start_hour": 1, "end_hour": 24, "weekends_off": 0}
    return {"start_hour": 0, "end_hour": hour, "weekends_off": 0}


async def _hours(h: Harness, thresholds: dict[str, int]) -> None:
    admin = await h.auth()
    r = await h.client.patch(
        "/admin/detections/rules/off_hours_policy", headers=admin, json={"thresholds": thresholds}
    )
    assert r.status_code == 200, r.text


async def test_a_login_and_admin_work_outside_hours(h: Harness) -> None:
    await _hours(h, _outside_now())
    await post(
        h,
        [
            attempt("198.51.100.1", "alice", ok=True),
            {**attempt("198.51.100.1", "alice", ok=True), "action": "user.created"},
            {**attempt("198.51.100.1", "bob", ok=True), "action": "exam.submitted"},
        ],
    )
    await evaluate(h)
    found = {a.entity_value: a for a in await alerts(h, "off_hours_policy") if a.source == "lms"}
    assert set(found) == {"alice"}  # bob did nothing privileged
    assert found["alice"].count == 2 and found["alice"].severity == "low"
    assert found["alice"].evidence["filter"]["actor"] == "alice"


async def test_inside_hours_nothing(h: Harness) -> None:
    await _hours(h, {"start_hour": 0, "end_hour": 24, "weekends_off": 0})
    await post(h, [attempt("198.51.100.1", "alice", ok=True)])
    await evaluate(h)
    assert await alerts(h, "off_hours_policy") == []


async def test_failures_and_system_events_are_not_off_hours_activity(h: Harness) -> None:
    await _hours(h, _outside_now())
    await post(h, [attempt("198.51.100.1", "alice"), attempt("127.0.0.1", "carol", ok=True)])
    await evaluate(h)
    assert [a for a in await alerts(h, "off_hours_policy") if a.source == "lms"] == []
