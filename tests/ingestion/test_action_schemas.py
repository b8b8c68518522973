"""/admin/actions: known actions, and JSON Schemas that ingested metadata must match."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from audit_service.ingestion.models import ActionSchema
from tests.conftest import Harness
from tests.ingestion.helpers import bearer, event, ingested, make_key

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["answers"],
    "properties": {
        "answers": {"type": "integer", "minimum": 0},
        "grade": {"enum": ["A", "B", "C"]},
    },
}
URL = "/admin/actions/exam.submitted/schema"


@pytest.mark.parametrize(
    ("method", "path", "auditor_may"),
    [
        ("GET", "/admin/actions", True),
        ("GET", URL, True),
        ("PUT", URL, False),
        ("DELETE", URL, False),
    ],
)
async def test_permissions(h: Harness, method: str, path: str, auditor_may: bool) -> None:
    assert (await h.client.request(method, path, json=SCHEMA)).status_code == 401
    user = await h.auth("u", role="user")
    assert (await h.client.request(method, path, headers=user, json=SCHEMA)).status_code == 403
    assert (await h.last_event()).outcome == "denied"
    auditor = await h.auth("aud", role="auditor")
    r = await h.client.request(method, path, headers=auditor, json=SCHEMA)
    assert (r.status_code != 403) is auditor_may, r.text
    key = await make_key(h)
    assert (await h.client.request(method, path, headers=bearer(key))).status_code == 401


async def test_register_enforce_replace_remove(h: Harness) -> None:
    admin = await h.auth()
    key = await make_key(h)
    r = await h.client.put(URL, headers=admin, json=SCHEMA)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["action"], out["schema"]) == ("exam.submitted", SCHEMA)
    e = await h.last_event()
    assert (e.action, e.module, e.outcome, e.target_type, e.target_id) == (
        "config.changed",
        "ingestion",
        "success",
        "action",
        "exam.submitted",
    )
    assert e.event_metadata["after"] == SCHEMA and e.event_metadata["previous_sha256"] is None
    assert e.event_metadata["before"] is None
    assert (await h.client.get(URL, headers=admin)).json()["schema"] == SCHEMA

    good = await h.client.post("/events", headers=bearer(key), json=event(metadata={"answers": 3}))
    assert good.status_code == 201, good.text
    bad = await h.client.post(
        "/events", headers=bearer(key), json=event(metadata={"answers": -1, "grade": "Z"})
    )
    assert bad.status_code == 422
    errors = bad.json()["errors"]
    assert [e["loc"] for e in errors] == [
        ["body", "metadata", "answers"],
        ["body", "metadata", "grade"],
    ]
    assert errors[0]["type"] == "metadata_schema.minimum" and "minimum" in errors[0]["msg"]
    missing = await h.client.post("/events", headers=bearer(key), json=event(metadata={}))
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["loc"] == ["body", "metadata"]
    # Other actions are not checked.
    other = await h.client.post(
        "/events", headers=bearer(key), json=event(action="exam.started", metadata={"x": 1})
    )
    assert other.status_code == 201

    batch = [
        event(metadata={"answers": 1}),
        event(metadata={"answers": "many"}),
        event(action="exam.started"),
        event(metadata={"answers": 2}),
        event(metadata={"grade": "A"}),
    ]
    r = await h.client.post("/events/batch", headers=bearer(key), json={"events": batch})
    assert r.status_code == 422
    assert sorted({e["loc"][2] for e in r.json()["errors"]}) == [1, 4]
    assert "2 of 5 events" in r.json()["detail"]
    failed = await h.last_event()
    assert (failed.action, failed.actor_type, failed.event_metadata["rejected_indexes"]) == (
        "ingestion.batch_posted",
        "service",
        [1, 4],
    )
    assert len(await ingested(h)) == 2

    # Replace: the new rule applies from the next request on.
    loose = {"type": "object"}
    r = await h.client.put(URL, headers=admin, json=loose)
    assert r.status_code == 200
    assert (await h.last_event()).event_metadata["previous_sha256"] is not None
    r = await h.client.post("/events", headers=bearer(key), json=event(metadata={"answers": "x"}))
    assert r.status_code == 201

    strict = {"type": "object", "additionalProperties": False}
    assert (await h.client.put(URL, headers=admin, json=strict)).status_code == 200
    r = await h.client.post("/events", headers=bearer(key), json=event(metadata={"a": 1}))
    assert r.status_code == 422  # the cached validator of the old schema is not reused
    # received_from and api_key_prefix are added after the check, so strict schemas work.
    assert (
        await h.client.post("/events", headers=bearer(key), json=event(metadata={}))
    ).status_code == 201

    assert (await h.client.delete(URL, headers=admin)).status_code == 204
    assert (await h.last_event()).action == "config.changed"
    r = await h.client.post("/events", headers=bearer(key), json=event(metadata={"a": 1}))
    assert r.status_code == 201
    assert (await h.client.delete(URL, headers=admin)).status_code == 404
    assert (await h.client.get(URL, headers=admin)).status_code == 404


async def test_list_actions(h: Harness) -> None:
    admin = await h.auth()
    key = await make_key(h)
    events = [event(), event(), event(action="exam.started", module="exams")]
    await h.client.post("/events/batch", headers=bearer(key), json={"events": events})
    await h.client.put("/admin/actions/course.archived/schema", headers=admin, json=SCHEMA)
    r = await h.client.get("/admin/actions", headers=admin)
    assert r.status_code == 200, r.text
    items = {i["action"]: i for i in r.json()["items"]}
    assert items["exam.submitted"] == {
        "action": "exam.submitted",
        "module": "exam",
        "event_count": 2,
        "event_count_is_estimate": False,
        "schema": None,
        "schema_updated_at": None,
    }
    assert (items["exam.started"]["module"], items["exam.started"]["event_count"]) == ("exams", 1)
    # Registered before any event: listed with its schema and no events.
    assert items["course.archived"]["schema"] == SCHEMA
    assert items["course.archived"]["event_count"] == 0
    # The service's own actions are known too.
    assert items["auth.login"]["module"] == "auth" and items["auth.login"]["event_count"] >= 1
    assert list(items) == sorted(items)
    assert (await h.last_event()).action == "action.listed"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (URL, {"type": "no-such-type"}),
        (URL, {"type": "object", "required": "answers"}),
        (URL, {"$ref": "https://example.com/schema.json"}),
        (URL, {"properties": {"a": {"$ref": "http://169.254.169.254/latest"}}}),
        (URL, {"type": "object", "description": "x" * 17_000}),
        (URL, {"type": "object", "description": "a\x00b"}),
        (URL, ["not", "an", "object"]),
        ("/admin/actions/Not An Action/schema", SCHEMA),
        ("/admin/actions/exam/schema", SCHEMA),
    ],
)
async def test_bad_schemas_are_refused(h: Harness, path: str, body: Any) -> None:
    admin = await h.auth()
    r = await h.client.put(path, headers=admin, json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert (await h.events(action="config.changed"))[-1].outcome == "failure"
    async with h.app.state.sessionmaker() as session:
        assert (await session.scalars(select(ActionSchema))).all() == []


async def test_local_refs_and_formats_work(h: Harness) -> None:
    admin = await h.auth()
    key = await make_key(h)
    schema = {
        "$defs": {"email": {"type": "string", "format": "email"}},
        "type": "object",
        "properties": {"contact": {"$ref": "#/$defs/email"}},
    }
    assert (await h.client.put(URL, headers=admin, json=schema)).status_code == 200
    ok = event(metadata={"contact": "ada@example.com"})
    assert (await h.client.post("/events", headers=bearer(key), json=ok)).status_code == 201
    r = await h.client.post(
        "/events", headers=bearer(key), json=event(metadata={"contact": "not-an-email"})
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "metadata", "contact"]
