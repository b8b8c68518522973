"""POST /admin/integrity/verify and GET …/{run_id}: a verification run asked for over HTTP,
carried out by the `integrity.verify` job (in-process, as `serve` runs it), followed to its
outcome; and the job's own scheduled run, whose result is an audit event."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import text

from audit_service.audit_log.context import system_event
from audit_service.audit_log.repository import insert_events
from audit_service.integrity import repository as integrity_repo
from audit_service.integrity.verify_jobs import VERIFY_JOB
from tests.conftest import Harness, make_settings, start_harness
from tests.integrity.test_log_job import _until

PROBLEM = "application/problem+json"
API = "/admin/integrity/verify"
harness = asynccontextmanager(start_harness)


@asynccontextmanager
async def serving(url: str, **overrides: object) -> AsyncIterator[Harness]:
    """The service with its jobs running; the verify job polls for requested runs fast."""
    values: dict[str, Any] = {"run_jobs": True, "verify_poll_interval": 0.2, **overrides}
    async with harness(make_settings(url, **values)) as h:
        yield h


async def add_events(h: Harness, n: int) -> None:
    rows = [system_event("test.event", "test", f"event {i}", n=i) for i in range(n)]
    async with h.app.state.sessionmaker() as session:
        await insert_events(session, rows)
        await session.commit()


async def signed(h: Harness, size: int) -> None:
    """Wait for the log job to sign a checkpoint of `size` events or more (helpers.seal
    would race the job's own sequencer)."""

    async def covered() -> bool:
        async with h.app.state.sessionmaker() as session:
            latest = await integrity_repo.latest_checkpoint(session)
        return latest is not None and latest.tree_size >= size

    await _until(covered)


async def edit_row(h: Harness, position: int) -> tuple[int, str]:
    """UPDATE one sequenced row behind the triggers' back; its (id, event_id)."""
    sqlite = h.app.state.settings.database_url.startswith("sqlite")
    async with h.admin() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT e.id, e.event_id FROM audit_leaf l JOIN audit_event e "
                    "ON e.id = l.event_pk WHERE l.position = :p"
                ),
                {"p": position},
            )
        ).one()
        if sqlite:
            await conn.execute(text("DROP TRIGGER audit_event_no_update"))
        else:
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(
            text("UPDATE audit_event SET description = 'edited' WHERE id = :id"), {"id": row.id}
        )
    return int(row.id), str(uuid.UUID(str(row.event_id)))


async def finished(h: Harness, run_id: int, headers: dict[str, str]) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        r = await h.client.get(f"{API}/{run_id}", headers=headers)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body if body["status"] == "finished" else None

    result: dict[str, Any] = await _until(done, within=60)
    return result


async def test_only_admins_ask_and_asking_twice_is_one_run(h: Harness) -> None:
    user = await h.auth("bob", "user")
    auditor = await h.auth("carol", "auditor")
    admin = await h.auth()

    r = await h.client.post(API)
    assert (r.status_code, r.headers["content-type"]) == (401, PROBLEM)
    for headers in (user, auditor):
        r = await h.client.post(API, headers=headers)
        assert (r.status_code, r.headers["content-type"]) == (403, PROBLEM)

    r = await h.client.post(API, headers=admin)
    assert r.status_code == 202, r.text
    run = r.json()
    assert r.headers["location"] == f"{API}/{run['id']}"
    assert (run["status"], run["trigger"], run["requested_by"]) == ("queued", "api", "admin")
    assert (run["progress"], run["outcome"], run["problems"], run["tree_size"]) == (
        0.0,
        None,
        [],
        None,
    )
    again = await h.client.post(API, headers=admin)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == run["id"]
    assert again.headers["location"] == r.headers["location"]

    # Followed by an auditor as well as an admin; others are refused.
    for headers in (auditor, admin):
        got = await h.client.get(r.headers["location"], headers=headers)
        assert got.status_code == 200 and got.json()["id"] == run["id"]
    assert (await h.client.get(r.headers["location"], headers=user)).status_code == 403

    for path, status in ((f"{API}/999", 404), (f"{API}/abc", 422), (f"{API}/0", 422)):
        got = await h.client.get(path, headers=admin)
        assert (got.status_code, got.headers["content-type"]) == (status, PROBLEM), path
    assert "No verification run 999" in (await h.client.get(f"{API}/999", headers=admin)).text

    requested = await h.events(action="integrity.verify_requested")
    assert [(e.outcome, e.actor_name) for e in requested] == [
        ("denied", None),
        ("denied", "bob"),
        ("denied", "carol"),
        ("success", "admin"),
        ("success", "admin"),
    ]
    assert [e.event_metadata.get("created") for e in requested[3:]] == [True, False]
    assert requested[3].target_id == str(run["id"])
    viewed = await h.events(action="integrity.verify_viewed")
    assert [(e.outcome, e.actor_name, e.target_id) for e in viewed][:3] == [
        ("success", "carol", str(run["id"])),
        ("success", "admin", str(run["id"])),
        ("denied", "bob", None),  # refused before the route reads its id
    ]
    assert ("failure", "999") in [(e.outcome, e.target_id) for e in viewed]


async def test_a_requested_run_is_carried_out_by_the_job(db_url: str) -> None:
    async with serving(db_url) as h:
        admin = await h.auth()
        await add_events(h, 30)
        await signed(h, 31)
        r = await h.client.post(API, headers=admin)
        assert r.status_code == 202, r.text
        run = await finished(h, r.json()["id"], admin)
        assert (run["outcome"], run["problem_count"], run["problems"]) == ("intact", 0, [])
        assert run["progress"] == 1.0 and run["tree_size"] >= 31
        assert run["positions_done"] == run["tree_size"]
        assert run["tasks_done"] == run["tasks_total"] >= 1
        assert run["started_at"] <= run["finished_at"] and run["error"] is None
        [verified] = [
            e
            for e in await h.events(action="integrity.verified")
            if e.event_metadata["run_id"] == run["id"]
        ]
        assert verified.actor_id == f"job:{VERIFY_JOB}" and verified.outcome == "success"
        assert verified.event_metadata["trigger"] == "api"

        pk, event_id = await edit_row(h, 5)
        r = await h.client.post(API, headers=admin)
        assert r.status_code == 202, r.text
        run = await finished(h, r.json()["id"], admin)
        assert run["outcome"] == "tampered" and run["problem_count"] == 1
        assert run["problem_counts"] == {"modified": 1}
        [problem] = run["problems"]
        assert (problem["kind"], problem["position"]) == ("modified", 5)
        assert (problem["event_pk"], problem["event_id"]) == (pk, event_id)
        [detected] = await h.events(action="integrity.tampering_detected")
        assert detected.outcome == "failure" and detected.target_id == str(run["id"])
        assert detected.event_metadata["problems"][0]["event_id"] == event_id


async def test_the_scheduled_run_leaves_an_event_and_shows_in_jobs(db_url: str) -> None:
    async with serving(db_url, verify_interval=1.0) as h:
        await add_events(h, 10)

        async def scheduled() -> Any:
            return [
                e
                for e in await h.events(action="integrity.verified")
                if e.event_metadata["trigger"] == "schedule"
            ]

        [event, *_] = await _until(scheduled, within=60)
        assert event.actor_id == f"job:{VERIFY_JOB}" and event.outcome == "success"
        assert event.event_metadata["tree_size"] >= 10
        assert event.event_metadata["checked"] == event.event_metadata["tree_size"]
        assert "is intact" in event.description

        r = await h.client.get("/admin/jobs", headers=await h.auth())
        assert r.status_code == 200, r.text
        [job] = [j for j in r.json()["items"] if j["name"] == VERIFY_JOB]
        assert job["runs"] >= 1 and job["failures"] == 0 and job["last_error"] is None
        assert job["interval_seconds"] == 0.2
        got = await h.client.get(f"{API}/{event.event_metadata['run_id']}", headers=await h.auth())
        assert got.json()["trigger"] == "schedule" and got.json()["outcome"] == "intact"
