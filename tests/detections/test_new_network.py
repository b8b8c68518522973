"""new_network (both dialects): a user's first login from a /24 or /48 not seen in 14 days,
after at least 10 earlier logins."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from audit_service.detections.models import DetectionNetwork
from tests.conftest import Harness
from tests.detections.helpers import alerts, attempt, evaluate, post


def _logins(user: str, n: int, ip: str = "198.51.100.10") -> list[dict[str, object]]:
    return [attempt(ip, user, ok=True) for _ in range(n)]


async def test_a_new_network_after_ten_logins(h: Harness) -> None:
    await post(h, _logins("alice", 10) + _logins("bob", 9))
    await evaluate(h)
    await post(
        h,
        [
            attempt("198.51.100.99", "alice", ok=True),  # the same /24: known
            attempt("203.0.113.50", "alice", ok=True),  # new
            attempt("203.0.113.51", "alice", ok=True),  # the same new /24: one alert
            attempt("2001:db8:1:2::1", "alice", ok=True),  # a new /48
            attempt("203.0.113.50", "bob", ok=True),  # bob has only 9 earlier logins
        ],
    )
    await evaluate(h)
    found = await alerts(h, "new_network")
    assert {a.evidence["network"] for a in found} == {"203.0.113.0/24", "2001:db8:1::/48"}
    assert {a.entity_value for a in found} == {"alice"}
    v4 = next(a for a in found if a.evidence["network"] == "203.0.113.0/24")
    assert v4.count == 1 and v4.evidence["known_networks"] == ["198.51.100.0/24"]
    assert v4.evidence["observed"] == {"earlier_logins": 11}


async def test_a_network_unused_for_14_days_is_new_again(h: Harness) -> None:
    await post(h, _logins("alice", 10) + _logins("alice", 1, "203.0.113.5"))
    await evaluate(h)
    assert await alerts(h, "new_network") != []  # the first 203.0.113.x login
    async with h.app.state.sessionmaker() as session:
        await session.execute(
            update(DetectionNetwork)
            .where(DetectionNetwork.network == "203.0.113.0/24")
            .values(last_seen_at=datetime.now(UTC) - timedelta(days=15))
        )
        await session.commit()
    admin = await h.auth()
    (first,) = await alerts(h, "new_network")
    r = await h.client.post(
        f"/admin/alerts/{first.id}/resolve", headers=admin, json={"resolution": "benign"}
    )
    assert r.status_code == 200
    await post(h, _logins("alice", 1, "203.0.113.5"))
    await evaluate(h)
    assert [a.status for a in await alerts(h, "new_network")] == ["resolved", "open"]
