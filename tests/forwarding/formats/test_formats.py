"""The forwarding formats: the column guard, JSON-readiness, native = the API's shape, ECS."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import Table

from audit_service.activity.schemas import EventOut
from audit_service.audit_log import log
from audit_service.audit_log.models import AuditEvent
from audit_service.audit_log.sequencer import no_fence
from audit_service.forwarding import formats
from audit_service.forwarding.formats import (
    DROPPED,
    FORMATS,
    UnknownFormat,
    render_cef,
    render_json,
    render_text,
)
from audit_service.integrity.jobs import make_sequencer
from tests.conftest import Harness
from tests.forwarding.formats.events import sample
from tests.forwarding.formats.test_ocsf import validate

TABLE_COLUMNS = {c.name for c in cast(Table, AuditEvent.__table__).columns}


def test_every_column_is_mapped_or_dropped_in_every_format() -> None:
    dropped = {name for name, _reason in DROPPED}
    assert dropped <= TABLE_COLUMNS, "DROPPED names a column audit_event does not have"
    assert all(reason.strip() for _name, reason in DROPPED)
    for fmt in FORMATS:
        mapped = formats.COLUMNS[fmt]
        assert mapped.isdisjoint(dropped), fmt
        missing = TABLE_COLUMNS - mapped - dropped
        assert not missing, f"{fmt}: map these audit_event columns or list them in DROPPED"
        assert mapped <= TABLE_COLUMNS, f"{fmt} maps columns that do not exist"


def _sentinels() -> dict[str, Any]:
    """A distinct, recognisable value for every column."""
    values: dict[str, Any] = {}
    for name in sorted(TABLE_COLUMNS):
        values[name] = f"sentinel-{name}"
        if name == "id":
            values[name] = 987654321
        if name == "status_code":
            values[name] = 418
        if name == "latency_ms":
            values[name] = 31.25
    values.update(
        event_id=uuid.UUID("11111111-2222-4333-8444-555555555555"),
        occurred_at=datetime(2021, 3, 4, 5, 6, 7, 891011, tzinfo=UTC),
        recorded_at=datetime(2022, 3, 4, 5, 6, 7, 121314, tzinfo=UTC),
        metadata={"sentinel_key": "sentinel-metadata"},
        ip="192.0.2.77",
        ip_bytes=b"\x00" * 16,
        outcome="denied",
        actor_type="user",
        action="sentinel.action",
    )
    return values


def _shows(text: str, name: str, value: Any) -> bool:
    if isinstance(value, datetime):
        ms = int((value - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(milliseconds=1))
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") in text or str(ms) in text
    if name == "metadata":
        return "sentinel-metadata" in text
    return str(value) in text


def test_every_mapped_column_reaches_the_output() -> None:
    event = _sentinels()
    for fmt in FORMATS:
        out = render_text(fmt, event)
        for name in formats.COLUMNS[fmt]:
            assert _shows(out, name, event[name]), f"{fmt} lost column {name}"


def _json_ready(value: Any, where: str = "$") -> None:
    if value is None or isinstance(value, str | bool | int | float):
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            _json_ready(v, f"{where}[{i}]")
        return
    assert isinstance(value, dict), f"{where}: {type(value).__name__}"
    for k, v in value.items():
        assert isinstance(k, str), f"{where}: key {k!r}"
        _json_ready(v, f"{where}.{k}")


@pytest.mark.parametrize("fmt", ["native", "ocsf", "ecs"])
def test_render_json_is_json_ready(fmt: str) -> None:
    events = [
        sample(),
        sample(
            tenant_id=None,
            actor_id=None,
            actor_name=None,
            actor_role=None,
            ip=None,
            user_agent=None,
            method=None,
            path=None,
            status_code=None,
            latency_ms=None,
            description=None,
            target_id=None,
            target_type=None,
            request_id=None,
            client_request_id=None,
            metadata={},
            actor_type="system",
            outcome="error",
        ),
        sample(metadata={"when": datetime(2020, 1, 1, tzinfo=UTC), "id": uuid.uuid4()}),
        sample(latency_ms=float("nan"), metadata={"inf": float("inf")}),
    ]
    for event in events:
        doc = render_json(fmt, event)
        _json_ready(doc)
        assert render_text(fmt, event) == json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        assert str(event["event_id"]) in render_text(fmt, event)


def test_unknown_formats_are_refused() -> None:
    for bad in ("xml", "", "NATIVE", "cef"):
        with pytest.raises(UnknownFormat) as caught:
            render_json(bad, sample())
        assert isinstance(caught.value, ValueError)
        assert "native" in str(caught.value)
    with pytest.raises(UnknownFormat, match="cef"):
        render_text("leef", sample())
    assert render_text("cef", sample()) == render_cef(sample())


def test_native_has_the_api_field_names_and_rfc3339_times() -> None:
    doc = render_json("native", sample())
    assert list(doc) == list(EventOut.model_fields)
    assert doc["event_id"] == "0b7e6f4e-4d2a-4c35-9f0e-3c1d2b8a9e10"
    assert doc["occurred_at"] == "2026-12-02T23:27:10.123456Z"
    assert doc["recorded_at"] == "2026-12-02T23:27:10.234567Z"
    assert doc["metadata"] == {"mfa": False, "n": 1}
    assert "ip_bytes" not in doc


def test_ecs_fields() -> None:
    doc = render_json("ecs", sample(outcome="denied", latency_ms=12.5))
    assert doc["@timestamp"] == "2026-12-02T23:27:10.123456Z"
    assert doc["event"]["id"] == "0b7e6f4e-4d2a-4c35-9f0e-3c1d2b8a9e10"
    assert doc["event"]["action"] == "auth.login"
    assert doc["event"]["category"] == ["authentication", "session"]
    assert doc["event"]["type"] == ["start"]
    assert doc["event"]["outcome"] == "failure"
    assert doc["event"]["kind"] == "event"
    assert doc["event"]["created"] == "2026-12-02T23:27:10.234567Z"
    assert doc["event"]["duration"] == 12_500_000  # ns
    assert doc["user"] == {"id": "7", "name": "alice", "roles": ["admin"]}
    assert doc["source"] == {"ip": "203.0.113.7"}
    assert doc["user_agent"] == {"original": "pytest-client/1.0"}
    assert doc["url"] == {"path": "/login"}
    assert doc["http"]["request"]["method"] == "POST"
    assert doc["http"]["response"]["status_code"] == 200
    assert doc["labels"] == {"source": "audit-service", "tenant_id": "tenant-a"}
    assert doc["audit_service"]["outcome"] == "denied"
    # ECS 8 allowed values only.
    categories = {
        "api", "authentication", "configuration", "database", "driver", "email", "file",
        "host", "iam", "intrusion_detection", "library", "malware", "network", "package",
        "process", "registry", "session", "threat", "vulnerability", "web",
    }  # fmt: skip
    types = {
        "access", "admin", "allowed", "change", "connection", "creation", "deletion", "denied",
        "device", "end", "error", "group", "indicator", "info", "installation", "protocol",
        "start", "user",
    }  # fmt: skip
    from audit_service.forwarding.formats import ecs

    for action in [p for p, _c, _t in ecs.MAPPING] + ["http.request", "report.sent"]:
        category, kind = ecs.classify(action.replace("*", "x"))
        assert set(category) <= categories and set(kind) <= types, action


async def test_events_read_from_the_log_render_in_every_format(h: Harness) -> None:
    """Real events (login, a failed login, an API request), written by the app and read back
    with log.follow on both databases, render in every format; native equals the API's item."""
    await h.client.post("/login", json={"username": "admin", "password": "wrong-password"})
    headers = await h.auth()
    r = await h.client.get("/admin/activity", headers=headers, params={"page_size": 100})
    assert r.status_code == 200, r.text
    await make_sequencer().catch_up(h.app.state.sessionmaker, no_fence)
    async with h.app.state.sessionmaker() as s:
        followed = await log.follow(s, after=-1, limit=1000)
    events = [f.event for f in followed if f.event is not None]
    assert {"auth.login", "auth.login_failed"} <= {e["action"] for e in events}
    r = await h.client.get("/admin/activity", headers=headers, params={"page_size": 100})
    api = {item["event_id"]: item for item in r.json()["items"]}
    compared = 0
    for event in events:
        for fmt in FORMATS:
            out = render_text(fmt, event)
            if fmt != "cef":
                _json_ready(json.loads(out))
        assert validate(render_json("ocsf", event)) == [], event["action"]
        native = render_json("native", event)
        if native["event_id"] in api:
            item = api[native["event_id"]]
            for key in ("occurred_at", "recorded_at"):
                assert datetime.fromisoformat(native[key]) == datetime.fromisoformat(item[key])
                native[key] = item[key] = None
            assert native == item
            compared += 1
    assert compared >= 2
