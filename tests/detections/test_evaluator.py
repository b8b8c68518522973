"""The evaluator as a log consumer (both dialects): dedup, exclusions, settings, alert
events, crash and rerun, concurrent evaluators."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from audit_service.audit_log.sequencer import no_fence
from audit_service.detections import service
from audit_service.detections.models import DetectionLogin
from audit_service.integrity.jobs import make_sequencer
from tests.conftest import Harness, make_settings, start_harness
from tests.detections.helpers import alerts, attempt, entities, evaluate, failures, post

A, B = "198.51.100.1", "198.51.100.2"


async def test_a_repeat_adds_to_the_unresolved_alert(h: Harness) -> None:
    await post(h, failures(A, "alice", 10))
    await evaluate(h)
    (first,) = await alerts(h, "brute_force_ip")
    assert first.count == 1
    await post(h, failures(A, "alice", 3))
    await evaluate(h)
    (again,) = await alerts(h, "brute_force_ip")
    assert again.id == first.id and again.count == 4
    assert again.last_seen_at > first.last_seen_at
    assert again.evidence["observed"] == {"failures": 13}
    opened = await h.events(action="alert.opened")
    assert {e.target_id for e in opened} >= {str(first.id)}
    assert all(e.actor_type == "system" for e in opened)


async def test_counts_do_not_depend_on_batch_size(h: Harness) -> None:
    await post(h, failures(A, "alice", 14))
    await evaluate(h, batch=3)
    (alert,) = await alerts(h, "brute_force_ip")
    assert alert.count == 5  # the 10th to the 14th failure


async def test_after_a_resolution_the_next_finding_opens_a_new_alert(h: Harness) -> None:
    await post(h, failures(A, "alice", 10))
    await evaluate(h)
    (first,) = await alerts(h, "brute_force_ip")
    admin = await h.auth()
    r = await h.client.post(
        f"/admin/alerts/{first.id}/resolve", headers=admin, json={"resolution": "benign"}
    )
    assert r.status_code == 200, r.text
    await post(h, failures(A, "alice", 1))
    await evaluate(h)
    found = await alerts(h, "brute_force_ip")
    assert [a.status for a in found] == ["resolved", "open"]
    assert found[0].dedup_key == found[1].dedup_key


async def _harness(db_url: str, **overrides: object) -> AsyncIterator[Harness]:
    async for h in start_harness(make_settings(db_url, **overrides)):
        yield h


async def test_loopback_and_trusted_networks_are_excluded(db_url: str) -> None:
    async for h in _harness(db_url, detections_trusted_cidrs="10.0.0.0/8, 2001:db8::/32"):
        await post(
            h,
            failures("127.0.0.1", "a", 10)
            + failures("::1", "b", 10)
            + failures("10.1.2.3", "c", 10)
            + failures("2001:db8::5", "d", 10)
            + failures(A, "e", 10),
        )
        await evaluate(h)
        assert entities(await alerts(h, "brute_force_ip")) == {A}


async def test_login_actions_per_source(db_url: str) -> None:
    async for h in _harness(db_url, detections_login_actions="hr:user.signin:user.signin_failed"):
        await post(h, failures(A, "alice", 10, action="user.signin_failed"), source="hr")
        # The default actions mean nothing for that source.
        await post(h, failures(B, "bob", 10), source="hr")
        await evaluate(h)
        found = await alerts(h, "brute_force_ip")
        assert entities(found) == {A} and found[0].source == "hr"
        assert found[0].evidence["filter"]["action"] == ["user.signin_failed"]


async def test_rules_are_keyed_per_source_and_tenant(h: Harness) -> None:
    await post(h, failures(A, "alice", 5, tenant_id="t1") + failures(A, "alice", 5, tenant_id="t2"))
    await post(h, failures(A, "alice", 5), source="other")
    await evaluate(h)
    assert await alerts(h, "brute_force_ip") == []


async def test_a_disabled_rule_and_a_tenant_override(h: Harness) -> None:
    admin = await h.auth()
    r = await h.client.patch(
        "/admin/detections/rules/brute_force_ip", headers=admin, json={"enabled": False}
    )
    assert r.status_code == 200, r.text
    r = await h.client.patch(
        "/admin/detections/rules/account_guessing",
        headers=admin,
        json={"tenant_id": "t1", "thresholds": {"failures": 3}, "severity": "critical"},
    )
    assert r.status_code == 200, r.text
    await post(h, failures(A, "alice", 3, tenant_id="t1") + failures(B, "bob", 3, tenant_id="t2"))
    await evaluate(h)
    assert await alerts(h, "brute_force_ip") == []
    (alert,) = await alerts(h, "account_guessing")
    assert alert.tenant_id == "t1" and alert.severity == "critical"


async def test_window_state_is_stored_and_ignores_other_events(h: Harness) -> None:
    await post(h, [*failures(A, "alice", 2), {**attempt(A, "alice"), "action": "exam.submitted"}])
    await evaluate(h)
    async with h.app.state.sessionmaker() as session:
        rows = (await session.scalars(select(DetectionLogin))).all()
    # (The admin's own login, making the API key, is the third.)
    assert len([r for r in rows if r.ip == A]) == 2


class Crash(Exception):
    pass


async def _crash(_: object) -> None:
    raise Crash


async def test_a_crash_before_commit_loses_nothing_and_doubles_nothing(h: Harness) -> None:
    await post(h, failures(A, "alice", 12))
    await make_sequencer().catch_up(h.app.state.sessionmaker, no_fence)
    config = service.Config.of(h.app.state.settings)
    with pytest.raises(Crash):
        async with h.app.state.sessionmaker() as session:
            await service.evaluate_round(session, config, _crash, batch=100)
    assert await alerts(h) == []
    await evaluate(h)
    before = [(a.rule_id, a.dedup_key, a.count) for a in await alerts(h)]
    assert ("brute_force_ip", f"brute_force_ip|lms||{A}", 3) in before
    # A second run finds nothing new (it reads only the alert.opened events since).
    again = await evaluate(h)
    assert again.changes == []
    assert [(a.rule_id, a.dedup_key, a.count) for a in await alerts(h)] == before
    assert len(await h.events(action="alert.opened")) == len(before)


async def test_two_concurrent_evaluators_open_one_alert(h: Harness) -> None:
    await post(h, failures(A, "alice", 10))
    await make_sequencer().catch_up(h.app.state.sessionmaker, no_fence)
    config = service.Config.of(h.app.state.settings)

    async def one() -> service.Round:
        async with h.app.state.sessionmaker() as session:
            return await service.evaluate_round(session, config, no_fence, batch=100)

    rounds = await asyncio.gather(one(), one())
    assert sorted(r.evaluated for r in rounds)[0] == 0
    found = await alerts(h, "brute_force_ip")
    assert len(found) == 1 and found[0].count == 1


async def test_the_evaluator_reports_how_far_behind_it_is(h: Harness) -> None:
    await post(h, failures(A, "mallory", 3))
    await make_sequencer().catch_up(h.app.state.sessionmaker, no_fence)
    config = service.Config.of(h.app.state.settings)
    async with h.app.state.sessionmaker() as session:
        first = await service.evaluate_round(session, config, no_fence, batch=1)
    # Positions are still waiting: the lag is the age of the next one (what /admin/jobs shows).
    assert first.more and first.lag_seconds is not None and 0 <= first.lag_seconds < 60
    done = await service.catch_up(h.app.state.sessionmaker, config, no_fence)
    # What it wrote itself (an alert.opened, say) waits for the sequencer: a lag again.
    assert not done.more
    await make_sequencer().catch_up(h.app.state.sessionmaker, no_fence)
    done = await service.catch_up(h.app.state.sessionmaker, config, no_fence)
    assert done.lag_seconds is None  # every committed event evaluated: nothing is waiting
