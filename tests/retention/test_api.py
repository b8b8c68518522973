"""/admin/retention on both databases: rules CRUD with config.changed before/after, bad
rules refused with 422, the preview against a brute-force count, legal holds, the archive
list, and who may do what (auditor reads, plain user 403)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from audit_service.audit_log.models import AuditEvent
from audit_service.retention import repository as repo
from audit_service.retention import service
from audit_service.retention.jobs import StepContext, run_steps
from audit_service.retention.policy import assign
from tests.conftest import Harness
from tests.integrity.helpers import seal
from tests.retention.conftest import NOW, reset_policies, seed


def _event_dict(e: AuditEvent) -> dict[str, Any]:
    return {
        "action": e.action,
        "module": e.module,
        "outcome": e.outcome,
        "source": e.source,
        "tenant_id": e.tenant_id,
    }


async def test_default_rules_and_crud(h: Harness) -> None:
    await reset_policies(h)
    admin = await h.auth()
    r = await h.client.get("/admin/retention/policies", headers=admin)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [p["name"] for p in items][-1] == "Everything else"
    assert items[-1] | {"id": 0} == items[-1] | {"id": 0}
    catch_all = items[-1]
    assert (catch_all["archive_after_days"], catch_all["delete_after_days"]) == (90, 365)
    assert all(p["critical"] and p["delete_after_days"] == 2555 for p in items[:-1])

    body = {
        "name": "Tenant t9 keeps 30 days",
        "position": 500,
        "match": {"tenant_id": "t9"},
        "archive_after_days": 7,
        "delete_after_days": 30,
    }
    r = await h.client.post("/admin/retention/policies", json=body, headers=admin)
    assert r.status_code == 201, r.text
    created = r.json()
    event = await h.last_event()
    assert (event.action, event.module) == ("config.changed", "retention")
    assert event.event_metadata["before"] is None
    assert event.event_metadata["after"]["match"] == {"tenant_id": "t9"}

    r = await h.client.patch(
        f"/admin/retention/policies/{created['id']}",
        json={"delete_after_days": 60},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    assert r.json()["delete_after_days"] == 60
    event = await h.last_event()
    assert event.event_metadata["before"]["delete_after_days"] == 30
    assert event.event_metadata["after"]["delete_after_days"] == 60

    r = await h.client.delete(f"/admin/retention/policies/{created['id']}", headers=admin)
    assert r.status_code == 204
    event = await h.last_event()
    assert event.event_metadata["after"] is None
    r = await h.client.delete(f"/admin/retention/policies/{created['id']}", headers=admin)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_bad_rules_are_422(h: Harness) -> None:
    await reset_policies(h)
    admin = await h.auth()
    base = {"name": "x", "position": 2000, "match": {"module": "m"}}
    bad: list[dict[str, Any]] = [
        {**base, "archive_after_days": 30, "delete_after_days": 10},  # delete before archive
        {**base, "archive_after_days": -1},  # negative
        {**base, "archive_after_days": "90d"},  # a unit
        {**base, "delete_after_days": 10},  # delete without archive
        {**base, "match": {"colour": "red"}},  # unknown key
        {**base, "match": {"outcome": "maybe"}},
        # after the catch-all (position 1000): it would never match
        {**base, "archive_after_days": 1},
        # narrower than the earlier "user." rule (position 20): never matches
        {**base, "position": 25, "match": {"action_prefix": "user.admin"}},
    ]
    for body in bad:
        r = await h.client.post("/admin/retention/policies", json=body, headers=admin)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    # Duplicate position: 409.
    r = await h.client.post(
        "/admin/retention/policies",
        json={**base, "position": 10, "match": {"tenant_id": "z"}, "name": "dup"},
        headers=admin,
    )
    assert r.status_code == 409, r.text
    # A PATCH that makes delete precede archive.
    policies = (await h.client.get("/admin/retention/policies", headers=admin)).json()["items"]
    r = await h.client.patch(
        f"/admin/retention/policies/{policies[-1]['id']}",
        json={"archive_after_days": 400},
        headers=admin,
    )
    assert r.status_code == 422, r.text


async def test_permissions(h: Harness) -> None:
    await reset_policies(h)
    auditor = await h.auth("audrey", role="auditor")
    user = await h.auth("plain", role="user")
    for path in (
        "/admin/retention/policies",
        "/admin/retention/policies/preview",
        "/admin/retention/holds",
        "/admin/retention/archives",
    ):
        assert (await h.client.get(path, headers=auditor)).status_code == 200, path
        assert (await h.client.get(path, headers=user)).status_code == 403, path
        assert (await h.client.get(path)).status_code == 401, path
    body = {"name": "n", "position": 1, "match": {"tenant_id": "q"}}
    for headers in (auditor, user):
        r = await h.client.post("/admin/retention/policies", json=body, headers=headers)
        assert r.status_code == 403
        hold = {"reason": "r", "filter": {"actor": "x"}}
        assert (
            await h.client.post("/admin/retention/holds", json=hold, headers=headers)
        ).status_code == 403
        assert (
            await h.client.patch("/admin/retention/policies/1", json={}, headers=headers)
        ).status_code == 403
        assert (
            await h.client.post("/admin/retention/holds/1/release", headers=headers)
        ).status_code == 403


async def test_holds(h: Harness) -> None:
    admin = await h.auth()
    r = await h.client.post(
        "/admin/retention/holds", json={"reason": "case 42", "filter": {}}, headers=admin
    )
    assert r.status_code == 422 and "empty filter" in r.text
    for bad in ({"ip": "not-an-ip"}, {"since": "yesterday"}, {"colour": "red"}):
        r = await h.client.post(
            "/admin/retention/holds", json={"reason": "x", "filter": bad}, headers=admin
        )
        assert r.status_code == 422, (bad, r.text)
    r = await h.client.post(
        "/admin/retention/holds",
        json={
            "reason": "Litigation 2026-17",
            "filter": {"actor": "user-1", "ip": "198.51.100.0/24", "action": ["item.viewed"]},
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    hold = r.json()
    assert hold["active"] and hold["created_by"] == "admin"
    event = await h.last_event()
    assert event.action == "retention.hold_created"
    assert event.event_metadata["after"]["reason"] == "Litigation 2026-17"

    r = await h.client.get("/admin/retention/holds?active=true", headers=admin)
    assert [x["id"] for x in r.json()["items"]] == [hold["id"]]
    r = await h.client.post(f"/admin/retention/holds/{hold['id']}/release", headers=admin)
    assert r.status_code == 200 and not r.json()["active"]
    assert (await h.last_event()).action == "retention.hold_released"
    r = await h.client.post(f"/admin/retention/holds/{hold['id']}/release", headers=admin)
    assert r.status_code == 409
    r = await h.client.post("/admin/retention/holds/999/release", headers=admin)
    assert r.status_code == 404
    assert (await h.client.get("/admin/retention/holds?active=true", headers=admin)).json()[
        "items"
    ] == []
    assert len((await h.client.get("/admin/retention/holds", headers=admin)).json()["items"]) == 1


async def test_held_clause_matches_the_activity_filter(h: Harness) -> None:
    await seed(h, n=120)
    admin = await h.auth()
    spec = {"actor": "user-1", "ip": "198.51.100.0/24"}
    r = await h.client.post(
        "/admin/retention/holds", json={"reason": "r", "filter": spec}, headers=admin
    )
    assert r.status_code == 201
    async with h.app.state.sessionmaker() as session:
        clause = await repo.held_clause(session)
        held = set((await session.scalars(select(AuditEvent.id).where(clause))).all())
    r = await h.client.get("/admin/activity", params={**spec, "page_size": 100}, headers=admin)
    assert r.status_code == 200, r.text
    assert held and held == {e["id"] for e in r.json()["items"]}


def _brute_force(
    events: list[AuditEvent], policies: Any, archived: dict[int, Any], held: set[int]
) -> dict[int, tuple[int, int, int]]:
    out: dict[int, list[int]] = {p.id: [0, 0, 0] for p in policies}
    for e in events:
        p = assign(policies, _event_dict(e))
        if p is None or p.archive_after_days is None:
            continue
        done = archived.get(p.id)
        end = datetime.combine((NOW - timedelta(days=p.archive_after_days)).date(), time(), UTC)
        start = None if done is None else datetime.combine(done + timedelta(days=1), time(), UTC)
        if e.recorded_at < end and (start is None or e.recorded_at >= start):
            out[p.id][0] += 1
        if p.delete_after_days is not None and done is not None:
            bound = min(
                NOW - timedelta(days=p.delete_after_days),
                datetime.combine(done + timedelta(days=1), time(), UTC),
            )
            if e.recorded_at < bound:
                out[p.id][2 if e.id in held else 1] += 1
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}


async def test_preview_equals_a_brute_force_count(h: Harness) -> None:
    await reset_policies(h)
    await seed(h)
    await seal(h)
    admin = await h.auth()

    async def check() -> dict[int, tuple[int, int, int]]:
        async with h.app.state.sessionmaker() as session:
            policies = await repo.list_policies(session)
            archived = {p.id: await repo.archived_until(session, p.id) for p in policies}
            clause = await repo.held_clause(session)
            held = set((await session.scalars(select(AuditEvent.id).where(clause))).all())
            preview = await service.preview(session, _Sink(), NOW)
        got = {i.policy_id: (i.archive, i.delete, i.held) for i in preview.items}
        assert got == _brute_force(await h.events(), policies, archived, held)
        return got

    before = await check()
    assert sum(a for a, _, _ in before.values()) > 0
    assert all(d == 0 for _, d, _ in before.values())  # nothing archived: nothing deletable
    r = await h.client.post(
        "/admin/retention/holds",
        json={"reason": "r", "filter": {"tenant_id": "t1"}},
        headers=admin,
    )
    assert r.status_code == 201
    await run_steps(StepContext(h.app.state.sessionmaker, h.app.state.settings, NOW))
    after = await check()
    assert all(a == 0 for a, _, _ in after.values())  # all archived
    assert sum(d for _, d, _ in after.values()) > 0  # the catch-all's year-old events
    assert sum(k for _, _, k in after.values()) > 0  # tenant t1's are held
    r = await h.client.get("/admin/retention/policies/preview", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["checkpoint_size"] > 0

    r = await h.client.get("/admin/retention/archives?limit=2", headers=admin)
    assert r.status_code == 200, r.text
    page = r.json()
    assert len(page["items"]) == 2 and page["next_before_id"] == page["items"][-1]["id"]
    first = page["items"][0]
    assert {"path", "manifest_hash", "count", "first_position", "last_position"} <= set(first)
    r = await h.client.get(
        f"/admin/retention/archives?before_id={page['next_before_id']}", headers=admin
    )
    assert all(x["id"] < page["next_before_id"] for x in r.json()["items"])


async def test_preview_counts_use_the_recorded_at_index(pg_only_url: str, h: Harness) -> None:
    """EXPLAIN: the preview's count is a range of ix_audit_event_recorded_at_id, not a scan
    of the table (seqscan off: the test table is too small for the planner to bother)."""
    if h.app.state.settings.database_url != pg_only_url:
        pytest.skip("EXPLAIN of PostgreSQL's plan")
    await reset_policies(h)
    async with h.app.state.sessionmaker() as session:
        policies = await repo.list_policies(session)
        stmt = repo.count_statement(
            repo.policy_clause(policies, policies[-1].id), NOW - timedelta(days=400), NOW
        )
        compiled = stmt.compile(h.engine.sync_engine, compile_kwargs={"literal_binds": True})
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join((await session.execute(text(f"EXPLAIN {compiled}"))).scalars().all())
    assert "ix_audit_event_recorded_at_id" in plan, plan


class _Sink:
    """A sink that keeps what the service says (the preview is called directly here)."""

    actor = None

    def describe(self, **_: Any) -> None:
        return None
