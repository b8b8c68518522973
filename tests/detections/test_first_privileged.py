"""first_privileged_action (both dialects): a privileged action after `days` without one,
and an action denied to a user that later succeeds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from audit_service.detections.models import DetectionPrivilege
from tests.conftest import Harness
from tests.detections.helpers import SOURCE, alerts, attempt, evaluate, post


def _action(user: str, action: str, outcome: str = "success") -> dict[str, object]:
    return {**attempt("198.51.100.1", user, ok=True), "action": action, "outcome": outcome}


async def _last_privileged(h: Harness, user: str, days_ago: int) -> None:
    async with h.app.state.sessionmaker() as session:
        session.add(
            DetectionPrivilege(
                source=SOURCE,
                tenant_id="",
                user_name=user,
                action="",
                last_allowed_at=datetime.now(UTC) - timedelta(days=days_ago),
                last_denied_at=None,
            )
        )
        await session.commit()


async def test_privileged_after_a_long_pause(h: Harness) -> None:
    await _last_privileged(h, "alice", 31)
    await _last_privileged(h, "bob", 29)
    await post(
        h,
        [
            _action("alice", "api_key.created"),
            _action("alice", "user.updated"),  # the pause is over: no second finding
            _action("bob", "api_key.created"),
            _action("carol", "api_key.created"),  # no history: no alert
            _action("dave", "exam.submitted"),  # not privileged
        ],
    )
    await evaluate(h)
    found = [a for a in await alerts(h, "first_privileged_action") if a.source == SOURCE]
    assert [a.entity_value for a in found] == ["alice"]
    assert found[0].evidence["reason"] == "first_in_days" and found[0].count == 1
    assert found[0].severity == "medium"


async def test_denied_then_allowed(h: Harness) -> None:
    await post(
        h,
        [
            _action("erin", "report.deleted", "denied"),
            _action("frank", "report.deleted", "denied"),
            _action("erin", "report.deleted"),
            _action("gina", "report.deleted"),  # never denied
        ],
    )
    await evaluate(h)
    found = [a for a in await alerts(h, "first_privileged_action") if a.source == SOURCE]
    assert [a.entity_value for a in found] == ["erin"]
    assert found[0].evidence["reason"] == "denied_then_allowed"
    # Allowed again later: the same grant, no new finding.
    await post(h, [_action("erin", "report.deleted")])
    await evaluate(h)
    (again,) = [a for a in await alerts(h, "first_privileged_action") if a.source == SOURCE]
    assert again.count == 1
