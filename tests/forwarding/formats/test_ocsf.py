"""OCSF: every mapped event checked against the 1.3.0 schema facts in ocsf_schema.json
(required attributes, types, enums, at-least-one constraints, no attributes the class lacks)."""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path
from typing import Any

import pytest

from audit_service.forwarding.formats import ocsf, render_json
from tests.forwarding.formats.events import sample

SCHEMA = json.loads((Path(__file__).parent / "ocsf_schema.json").read_text())
_STRINGS = {"string_t", "ip_t", "username_t", "hostname_t", "email_t", "url_t", "mac_t", "uuid_t"}
_INTEGERS = {"integer_t", "long_t", "timestamp_t", "port_t"}


def _check_value(value: Any, spec: dict[str, Any], where: str, errors: list[str]) -> None:
    if spec.get("is_array"):
        if not isinstance(value, list):
            errors.append(f"{where}: expected an array")
            return
        for i, item in enumerate(value):
            _check_value(item, {**spec, "is_array": False}, f"{where}[{i}]", errors)
        return
    kind = spec.get("type")
    if kind in _INTEGERS:
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(f"{where}: expected {kind}, got {value!r}")
        elif "enum" in spec and str(value) not in spec["enum"]:
            errors.append(f"{where}: {value} is not in the enum {sorted(spec['enum'])}")
    elif kind in _STRINGS:
        if not isinstance(value, str):
            errors.append(f"{where}: expected {kind}, got {value!r}")
    elif kind == "boolean_t":
        if not isinstance(value, bool):
            errors.append(f"{where}: expected a boolean")
    elif kind == "float_t":
        if not isinstance(value, int | float) or isinstance(value, bool):
            errors.append(f"{where}: expected a float")
    elif kind == "json_t":
        pass
    else:  # an object
        if not isinstance(value, dict):
            errors.append(f"{where}: expected an object ({kind})")
        elif kind in SCHEMA["objects"]:
            _check_object(value, SCHEMA["objects"][kind], where, errors)
        elif kind != "object":
            errors.append(f"{where}: object type {kind} is not in the fixture")


def _check_object(doc: dict[str, Any], spec: dict[str, Any], where: str, errors: list[str]) -> None:
    attributes = spec["attributes"]
    for name, attr in attributes.items():
        if attr["requirement"] == "required" and doc.get(name) is None:
            errors.append(f"{where}.{name}: required")
    for name, value in doc.items():
        if name not in attributes:
            errors.append(f"{where}.{name}: not an attribute of this class/object")
        elif value is not None:
            _check_value(value, attributes[name], f"{where}.{name}", errors)
    wanted = spec.get("constraints", {}).get("at_least_one")
    if wanted and not any(doc.get(w) is not None for w in wanted):
        errors.append(f"{where}: needs at least one of {wanted}")


def validate(doc: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    cls = SCHEMA["classes"].get(str(doc.get("class_uid")))
    if cls is None:
        return [f"class_uid {doc.get('class_uid')} is not one of the five classes"]
    _check_object(doc, cls, "$", errors)
    if doc.get("category_uid") != cls["category_uid"]:
        errors.append("category_uid does not match the class")
    if doc.get("type_uid") != doc["class_uid"] * 100 + doc.get("activity_id", -1):
        errors.append("type_uid != class_uid * 100 + activity_id")
    if doc.get("metadata", {}).get("version") != SCHEMA["version"]:
        errors.append("metadata.version is not the fixture's version")
    return errors


ACTIONS = sorted(
    {p.replace("*", "anything") if p != "*" else "http.request" for p, _c, _a in ocsf.MAPPING}
    | {"report.sent", "integrity.checkpoint", "ingestion.batch_posted", "user.updated"}
)
OUTCOMES = ("success", "failure", "denied", "error")


def _variants(action: str, outcome: str) -> list[dict[str, Any]]:
    bare = {
        "tenant_id": None,
        "actor_id": None,
        "actor_name": None,
        "actor_role": None,
        "ip": None,
        "user_agent": None,
        "method": None,
        "path": None,
        "status_code": None,
        "latency_ms": None,
        "description": None,
        "target_id": None,
        "target_type": None,
        "request_id": None,
        "client_request_id": None,
        "metadata": {},
        "actor_type": "system",
    }
    return [
        sample(action=action, outcome=outcome),
        sample(action=action, outcome=outcome, method="PATCH", actor_type="service"),
        sample(action=action, outcome=outcome, **bare),
        sample(action=action, outcome=outcome, **{**bare, "actor_type": "anonymous"}),
    ]


@pytest.mark.parametrize(("action", "outcome"), list(product(ACTIONS, OUTCOMES)))
def test_every_mapped_event_is_valid_ocsf(action: str, outcome: str) -> None:
    for event in _variants(action, outcome):
        doc = render_json("ocsf", event)
        assert validate(doc) == [], (action, outcome, event)
        assert doc["metadata"]["uid"] == str(event["event_id"])
        assert doc["status_id"] == (1 if outcome == "success" else 2)


def test_the_validator_catches_mistakes() -> None:
    doc = render_json("ocsf", sample())
    assert validate(doc) == []
    assert validate({**doc, "type_uid": 1}) != []
    assert validate({**doc, "severity_id": 7}) != []
    assert validate({**doc, "made_up": 1}) != []
    assert validate({k: v for k, v in doc.items() if k != "user"}) != []
    assert validate({**doc, "user": {"type_id": 1}}) != []  # at_least_one of account/name/uid
    assert validate({**doc, "metadata": {"version": "1.3.0", "product": {}}}) != []


@pytest.mark.parametrize(
    ("event", "class_uid", "activity_id"),
    [
        (sample(action="auth.login"), 3002, 1),
        (sample(action="auth.login_failed", outcome="failure"), 3002, 1),
        (sample(action="auth.logout"), 3002, 2),
        (sample(action="auth.password_changed"), 3001, 3),
        (sample(action="user.created"), 3001, 1),
        (sample(action="user.deleted"), 3001, 6),
        (sample(action="user.deactivated"), 3001, 5),
        (sample(action="user.activated"), 3001, 2),
        (
            sample(
                action="user.updated",
                metadata={
                    "changed": ["role"],
                    "before": {"role": "user"},
                    "after": {"role": "admin"},
                },
            ),
            3005,
            1,
        ),
        (sample(action="user.updated", metadata={"changed": ["email"]}), 3001, 99),
        (sample(action="api_key.created"), 3004, 1),
        (sample(action="api_key.revoked"), 3004, 9),
        (sample(action="config.changed"), 3004, 3),
        (sample(action="http.request", method="GET"), 6003, 2),
        (sample(action="http.request", method="DELETE"), 6003, 4),
        (sample(action="report.sent", method=None), 6003, 0),
    ],
)
def test_class_and_activity(event: dict[str, Any], class_uid: int, activity_id: int) -> None:
    doc = render_json("ocsf", event)
    assert (doc["class_uid"], doc["activity_id"]) == (class_uid, activity_id)
    assert doc["type_uid"] == class_uid * 100 + activity_id
    assert validate(doc) == []


def test_common_fields() -> None:
    meta = {"changed": ["role"], "after": {"role": "auditor"}, "username": "bob"}
    event = sample(action="user.updated", outcome="denied", metadata=meta, target_id="9")
    doc = render_json("ocsf", event)
    assert doc["privileges"] == ["auditor"]
    assert doc["user"] == {"uid": "9", "name": "bob"}
    assert doc["time"] == 1_796_254_030_123  # occurred_at, ms
    assert doc["metadata"]["logged_time"] == 1_796_254_030_234
    assert doc["metadata"]["product"]["vendor_name"] == "audit-service"
    assert doc["severity_id"] == 3 and doc["status_detail"] == "denied"
    assert doc["src_endpoint"] == {"ip": "203.0.113.7"}
    assert doc["http_request"]["user_agent"] == "pytest-client/1.0"
    assert doc["actor"]["user"]["type_id"] == 2  # an admin
