"""The recorder's guarantees (DESIGN §3), each against the real database."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select, text

from audit_service.audit_log.models import AuditEvent
from audit_service.auth.models import User
from tests.conftest import CLIENT_IP, Harness

PREDICT = {"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5}


async def test_exactly_one_event_per_request_of_every_kind(h: Harness) -> None:
    headers = await h.auth()
    cases = [
        ("GET", "/me", headers, None, 200),
        ("GET", "/me", {}, None, 401),
        ("GET", "/admin/activity?page_size=7", headers, None, 422),
        ("GET", "/no-such-page", headers, None, 404),
        ("DELETE", "/predict", headers, None, 405),
        ("POST", "/predict", headers, PREDICT, 200),
        ("POST", "/admin/users", headers, {"username": "dup", "password": "x" * 12}, 201),
        ("POST", "/admin/users", headers, {"username": "dup", "password": "x" * 12}, 409),
    ]
    for method, path, hdrs, body, status in cases:
        before = await h.count_events()
        r = await h.client.request(method, path, headers=hdrs, json=body)
        assert r.status_code == status, (path, r.text)
        assert await h.count_events() == before + 1, f"{method} {path} recorded != 1 event"
        event = await h.last_event()
        assert event.request_id == r.headers["x-request-id"]
        assert event.status_code == status


async def test_health_and_docs_are_not_recorded(h: Harness) -> None:
    before = await h.count_events()
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        assert (await h.client.get(path)).status_code == 200
    assert await h.count_events() == before


async def test_event_carries_request_facts(h: Harness) -> None:
    headers = await h.auth()
    r = await h.client.post(
        "/predict", headers={**headers, "User-Agent": "ua/" + "x" * 600}, json=PREDICT
    )
    assert r.status_code == 200
    e = await h.last_event()
    assert (e.action, e.module, e.outcome, e.method, e.path) == (
        "prediction.created",
        "prediction",
        "success",
        "POST",
        "/predict",
    )
    assert (e.actor_type, e.actor_name, e.actor_role) == ("user", "admin", "admin")
    assert e.ip == CLIENT_IP and e.ip_bytes is not None and len(e.ip_bytes) == 16
    assert e.user_agent is not None and len(e.user_agent) == 512
    assert e.latency_ms is not None and e.latency_ms > 0
    assert e.occurred_at.tzinfo is not None and e.recorded_at >= e.occurred_at
    assert e.source == "audit-service"
    assert e.event_metadata["label"] == r.json()["label"]


async def test_outcomes_follow_status(h: Harness) -> None:
    headers = await h.auth("bob", role="user")
    assert (await h.client.get("/admin/activity", headers=headers)).status_code == 403
    denied = await h.last_event()
    assert (denied.action, denied.outcome, denied.actor_name) == (
        "activity.viewed",
        "denied",
        "bob",
    )
    assert (await h.client.post("/predict", headers=headers, json={})).status_code == 422
    assert (await h.last_event()).outcome == "failure"


async def _asgi_call(
    app: Any, method: str, path: str, headers: dict[str, str], on_start: Any
) -> list[dict[str, Any]]:
    """Drive the app as the server would, calling `on_start` when the response starts."""
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": (CLIENT_IP, 1234),
        "server": ("testserver", 80),
        "app": app,
    }
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            await on_start(message)
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_event_is_committed_before_the_first_byte(h: Harness) -> None:
    headers = await h.auth()
    seen: dict[str, Any] = {}

    async def on_start(message: dict[str, Any]) -> None:
        request_id = dict(message["headers"])[b"x-request-id"].decode()
        # A separate connection only sees committed rows.
        async with h.engine.connect() as conn:
            seen["row"] = (
                await conn.execute(
                    select(AuditEvent.action).where(AuditEvent.request_id == request_id)
                )
            ).one_or_none()

    sent = await _asgi_call(h.app, "GET", "/me", headers, on_start)
    assert sent[0]["status"] == 200
    assert seen["row"] == ("auth.profile_viewed",)


async def _refuse_audit_inserts(h: Harness) -> None:
    async with h.admin() as conn:  # DDL: not the service's role
        if h.engine.dialect.name == "postgresql":
            await conn.execute(
                text(
                    "CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'disk full (test)'; END $$"
                )
            )
            await conn.execute(
                text(
                    "CREATE TRIGGER test_refuse BEFORE INSERT ON audit_event "
                    "FOR EACH ROW EXECUTE FUNCTION test_refuse()"
                )
            )
        else:
            await conn.execute(
                text(
                    "CREATE TRIGGER test_refuse BEFORE INSERT ON audit_event "
                    "BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END"
                )
            )


async def _allow_audit_inserts(h: Harness) -> None:
    async with h.admin() as conn:
        if h.engine.dialect.name == "postgresql":
            await conn.execute(text("DROP TRIGGER test_refuse ON audit_event"))
            await conn.execute(text("DROP FUNCTION test_refuse()"))
        else:
            await conn.execute(text("DROP TRIGGER test_refuse"))


async def test_fails_closed_when_the_event_cannot_be_stored(h: Harness) -> None:
    headers = await h.auth()
    events_before = await h.count_events()
    await _refuse_audit_inserts(h)
    try:
        # A write request: the business change must not survive without its event.
        r = await h.client.post(
            "/admin/users", headers=headers, json={"username": "ghost", "password": "p" * 12}
        )
        assert r.status_code == 503
        assert r.headers["content-type"] == "application/problem+json"
        assert "ghost" not in r.text
        # A read request through the group-commit writer fails closed too.
        r = await h.client.post("/predict", headers=headers, json=PREDICT)
        assert r.status_code == 503 and "label" not in r.text
    finally:
        await _allow_audit_inserts(h)
    async with h.app.state.sessionmaker() as session:
        assert await session.scalar(select(User).where(User.username == "ghost")) is None
    assert await h.count_events() == events_before
    # And the service recovers once the database does.
    assert (await h.client.get("/me", headers=headers)).status_code == 200


async def test_business_change_and_event_commit_together(h: Harness) -> None:
    headers = await h.auth()
    r = await h.client.post(
        "/admin/users",
        headers=headers,
        json={"username": "carol", "password": "p" * 12, "role": "auditor"},
    )
    assert r.status_code == 201
    event = await h.last_event()
    assert (event.action, event.target_type, event.target_id) == (
        "user.created",
        "user",
        str(r.json()["id"]),
    )
    assert event.event_metadata == {"role": "auditor"}


async def test_failed_request_is_recorded_though_its_changes_roll_back(h: Harness) -> None:
    headers = await h.auth()
    await h.create_user("dave")
    r = await h.client.post(
        "/admin/users", headers=headers, json={"username": "dave", "password": "p" * 12}
    )
    assert r.status_code == 409
    event = await h.last_event()
    assert (event.action, event.outcome, event.status_code) == ("user.created", "failure", 409)
    async with h.app.state.sessionmaker() as session:
        names = (await session.scalars(select(User.username))).all()
    assert sorted(names) == ["admin", "dave"]


async def test_unhandled_exception_becomes_system_error_and_clean_500(h: Harness) -> None:
    async def boom() -> None:
        raise RuntimeError("secret internals /etc/passwd")

    h.app.add_api_route("/boom", boom, methods=["GET"])
    r = await h.client.get("/boom")
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert "secret internals" not in r.text and "Traceback" not in r.text
    assert r.json()["request_id"] == r.headers["x-request-id"]
    event = await h.last_event()
    assert (event.action, event.module, event.outcome, event.status_code) == (
        "system.error",
        "system",
        "error",
        500,
    )
    assert event.event_metadata["error"] == "RuntimeError"


async def test_concurrent_requests_share_commits(h: Harness) -> None:
    headers = await h.auth()
    writer = h.app.state.recorder.writer
    batches, events = writer.batches, writer.events
    responses = await asyncio.gather(*(h.client.get("/me", headers=headers) for _ in range(60)))
    assert all(r.status_code == 200 for r in responses)
    assert writer.events - events == 60
    assert writer.batches - batches < 60, "group commit never grouped anything"
    assert len(await h.events(action="auth.profile_viewed")) == 60


async def test_recording_can_be_switched_off_for_benchmarks(db_url: str) -> None:
    from tests.conftest import make_settings, start_harness

    async for h in start_harness(make_settings(db_url, record_requests=False)):
        before = await h.count_events()
        headers = await h.auth()
        assert (await h.client.get("/me", headers=headers)).status_code == 200
        assert await h.count_events() == before


@pytest.mark.parametrize("verb", ["UPDATE audit_event SET action = 'x'", "DELETE FROM audit_event"])
async def test_events_are_append_only_in_the_database(h: Harness, verb: str) -> None:
    """The trigger binds every role, the superuser too (the service's role has no such
    privilege in the first place: tests/deploy/test_roles.py)."""
    await h.auth()
    with pytest.raises(Exception, match="append-only"):
        async with h.admin() as conn:
            await conn.execute(text(verb))
    assert await h.count_events() >= 2


@pytest.mark.usefixtures("pg_only_url")  # an empty log
async def test_no_door_in_the_trigger_lets_anyone_remove_events(pg_admin_url: str) -> None:
    """Migration 0004: the `audit.allow_delete` door is gone and TRUNCATE is refused, by the
    triggers, whoever asks: here the superuser (the service's role lacks the privileges
    anyway, door or not: tests/deploy/test_roles.py)."""
    from audit_service.core.db import create_engine

    engine = create_engine(pg_admin_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO audit_event (event_id, occurred_at, recorded_at, source, "
                    "actor_type, action, module, outcome, metadata) VALUES (gen_random_uuid(), "
                    "now(), now(), 't', 'system', 't.kept', 't', 'success', '{}'::jsonb)"
                )
            )
        with pytest.raises(Exception, match="append-only"):
            async with engine.begin() as conn:
                await conn.execute(text("SET LOCAL audit.allow_delete = 'on'"))
                await conn.execute(text("DELETE FROM audit_event"))
        with pytest.raises(Exception, match="append-only: TRUNCATE refused"):
            async with engine.begin() as conn:
                await conn.execute(text("TRUNCATE audit_event"))
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT count(*) FROM audit_event")) == 1
    finally:
        await engine.dispose()
