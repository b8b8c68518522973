"""Each rule fires at its threshold and not one below (both dialects), driven by login
attempts posted through the API and the evaluator run as its job would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.conftest import Harness
from tests.detections.helpers import (
    alerts,
    attempt,
    entities,
    evaluate,
    failures,
    post,
)

A, B, C = "198.51.100.1", "198.51.100.2", "198.51.100.3"


async def test_failed_logins_per_ip_daily_fires_above_five(h: Harness) -> None:
    await post(h, failures(A, "alice", 6) + failures(B, "bob", 5))
    await evaluate(h)
    (alert,) = await alerts(h, "failed_logins_per_ip_daily")
    assert alert.entity_value == A and alert.severity == "low" and alert.count == 1
    assert alert.evidence["observed"] == {"failures": 6}
    assert alert.evidence["threshold"] == {"max_failures": 5}


async def test_brute_force_ip_needs_ten_in_ten_minutes(h: Harness) -> None:
    users = [f"u{i}" for i in range(10)]
    await post(h, [attempt(A, u) for u in users] + [attempt(B, u) for u in users[:9]])
    await evaluate(h)
    found = await alerts(h, "brute_force_ip")
    assert entities(found) == {A}
    assert found[0].severity == "medium"
    ev = found[0].evidence
    assert ev["observed"] == {"failures": 10}
    assert len(ev["sample_event_ids"]) == 10
    assert ev["filter"]["ip"] == A and ev["filter"]["action"] == ["auth.login_failed"]
    assert ev["activity_url"].startswith("/admin/activity?action=auth.login_failed")


async def test_account_guessing_needs_ten_for_one_user(h: Harness) -> None:
    await post(h, failures(A, "alice", 10) + failures(B, "bob", 9))
    await evaluate(h)
    (alert,) = await alerts(h, "account_guessing")
    assert alert.entity_kind == "ip_user" and alert.entity_value == f"{A} alice"
    assert alert.evidence["filter"]["actor"] == "alice"


async def test_success_after_failures_and_its_inhibition(h: Harness) -> None:
    # alice: 10 failures then a success -> success_after_failures, and no brute-force alerts
    # for her IP; bob: 4 failures then a success -> nothing.
    await post(
        h,
        [
            *failures(A, "alice", 10),
            attempt(A, "alice", ok=True),
            *failures(B, "bob", 4),
            attempt(B, "bob", ok=True),
        ],
    )
    await evaluate(h)
    (alert,) = await alerts(h, "success_after_failures")
    assert alert.severity == "high" and alert.entity_value == "alice"
    assert alert.evidence["observed"] == {"failures": 10}
    assert await alerts(h, "brute_force_ip") == []
    assert await alerts(h, "account_guessing") == []
    # The daily count is not muted.
    assert entities(await alerts(h, "failed_logins_per_ip_daily")) == {A}


async def test_success_after_five_failures_fires(h: Harness) -> None:
    await post(h, [*failures(A, "alice", 5), attempt(A, "alice", ok=True)])
    await evaluate(h)
    (alert,) = await alerts(h, "success_after_failures")
    assert alert.evidence["success_event_id"] in alert.evidence["sample_event_ids"]


async def test_inhibition_holds_across_batches(h: Harness) -> None:
    await post(h, [*failures(A, "alice", 5), attempt(A, "alice", ok=True)])
    await evaluate(h)
    await post(h, failures(A, "alice", 10))
    await evaluate(h)
    assert await alerts(h, "brute_force_ip") == []
    assert await alerts(h, "account_guessing") == []


async def test_password_spray(h: Harness) -> None:
    # A: 5 users x 3 tries = 15 -> spray. B: 4 users x 4 = 16 (too few users). C: 5 users,
    # one of them tried 7 times (more than max_per_user 6): targeted, not a spray.
    spray = [attempt(A, f"a{i}") for _ in range(3) for i in range(5)]
    few = [attempt(B, f"b{i}") for _ in range(4) for i in range(4)]
    targeted = failures(C, "c9", 7) + [attempt(C, f"c{i}") for _ in range(3) for i in range(4)]
    await post(h, spray + few + targeted)
    await evaluate(h)
    found = await alerts(h, "password_spray")
    assert entities(found) == {A}
    assert found[0].evidence["observed"] == {"users": 5, "tries": 15, "max_per_user": 3}


async def test_password_spray_one_try_short(h: Harness) -> None:
    await post(h, [attempt(A, f"a{i}") for _ in range(3) for i in range(5)][:14])
    await evaluate(h)
    assert await alerts(h, "password_spray") == []


async def test_distributed_brute_force(h: Harness) -> None:
    ips = [f"192.0.2.{i}" for i in range(1, 6)]
    await post(h, [attempt(ip, "carol") for ip in ips for _ in range(2)])
    await post(h, [attempt(ip, "dave") for ip in ips[:4] for _ in range(3)])  # 4 IPs
    await post(h, [attempt(ip, "erin") for ip in ips for _ in range(2)][:9])  # 9 failures
    await evaluate(h)
    found = await alerts(h, "distributed_brute_force")
    assert entities(found) == {"carol"}
    assert found[0].evidence["observed"] == {"ips": 5, "failures": 10}
    assert len(found[0].evidence["top_ips"]) == 5


async def test_back_dated_attempts_are_still_caught(h: Harness) -> None:
    long_ago = (datetime.now(UTC) - timedelta(days=400)).isoformat()
    await post(h, failures(A, "alice", 10, occurred_at=long_ago))
    await evaluate(h)
    assert entities(await alerts(h, "brute_force_ip")) == {A}


async def test_native_failed_logins_count(h: Harness) -> None:
    await h.create_user("alice")
    for _ in range(10):
        r = await h.client.post("/login", json={"username": "alice", "password": "wrong-pass-1"})
        # Past the lockout the attempts are refused (429, recorded as a denied auth.login):
        # they count as failures too.
        assert r.status_code in (401, 429)
    await evaluate(h)
    (alert,) = await alerts(h, "account_guessing")
    assert alert.entity_value == "203.0.113.7 alice"
    assert alert.evidence["observed"] == {"failures": 10}
