"""The OpenAPI document is part of the contract: frontends are generated from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from audit_service.activity.schemas import EventOut
from audit_service.audit_log.repository import EXPORT_COLUMNS
from audit_service.openapi import render, spec

SNAPSHOT = Path(__file__).resolve().parents[1] / "openapi.json"
PUBLIC = {"login", "login_form", "healthz", "readyz", "metrics"}  # metrics: optional token
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def test_spec_matches_the_committed_snapshot() -> None:
    assert SNAPSHOT.read_text() == render(), (
        "the API changed: review the diff and run `make openapi` to update openapi.json"
    )


def test_every_operation_is_complete() -> None:
    document = spec()
    seen: set[str] = set()
    for path, item in document["paths"].items():
        for method, op in item.items():
            op_id = op["operationId"]
            assert op_id.isidentifier() and op_id not in seen, (path, method)
            seen.add(op_id)
            assert op.get("description") or op.get("summary"), op_id
            success = [s for s in op["responses"] if s.startswith("2")]
            assert success, op_id
            if op_id in PUBLIC:
                continue
            expected = "OAuth2PasswordBearer" if not path.startswith("/events") else "ServiceKey"
            assert any(expected in scheme for s in op["security"] for scheme in s), op_id
            assert "x-audit-action" in op, op_id
            for status in ("401", "429"):
                assert status in op["responses"], (op_id, status)
            for status, response in op["responses"].items():
                if status >= "400":
                    assert "application/problem+json" in response["content"], (op_id, status)
    assert "OAuth2PasswordBearer" in document["components"]["securitySchemes"]


PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def _operations(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(op["operationId"], op) for item in document["paths"].values() for op in item.values()]


def test_every_error_is_a_typed_problem_and_nothing_else() -> None:
    """Generated clients type an error from its schema: an empty problem+json entry next to
    an application/json twin made every error `unknown` (openapi-typescript) or `None`."""
    document = spec()
    for op_id, op in _operations(document):
        for status in ("500", "503") + (("400",) if "requestBody" in op else ()):
            assert status in op["responses"], (op_id, status)
        for status, response in op["responses"].items():
            if status[0] in "45":
                assert response["content"] == PROBLEM, (op_id, status)
            if status in ("429", "503"):
                assert "Retry-After" in response["headers"], (op_id, status)
            if status == "429":
                assert response["headers"]["Retry-After"]["required"] is True
            if "x-audit-action" in op:  # recorded: the recorder always adds the header
                assert response["headers"]["X-Request-ID"] == {
                    "$ref": "#/components/headers/X-Request-ID"
                }, (op_id, status)
    schemas = document["components"]["schemas"]
    assert {"Problem", "FieldError"} <= set(schemas)
    assert not {"HTTPValidationError", "ValidationError"} & set(schemas)
    assert document["components"]["headers"]["X-Request-ID"]["required"] is True


def test_exports_are_typed() -> None:
    document = spec()
    ok = document["paths"]["/admin/activity/export"]["get"]["responses"]["200"]
    content = ok["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/ActivityExport"}
    for binary in ("application/gzip", XLSX):
        assert content[binary]["schema"]["format"] == "binary", binary
        assert content[binary]["schema"]["contentMediaType"] == binary
    for name in ("X-Export-Row-Count", "X-Export-Filters", "X-Export-Exported-At"):
        assert ok["headers"][name]["required"] is True
    events = document["components"]["schemas"]["ActivityExport"]["properties"]["events"]
    assert events["items"] == {"$ref": "#/components/schemas/EventOut"}
    # Each exported event has exactly the export's columns: the schema must say so.
    assert set(EventOut.model_fields) == set(EXPORT_COLUMNS)


def test_event_id_path_takes_the_uuid_or_the_integer() -> None:
    op = spec()["paths"]["/admin/activity/{event_id}"]["get"]
    (param,) = op["parameters"]
    kinds = {s.get("format", s["type"]) for s in param["schema"]["anyOf"]}
    assert kinds == {"uuid", "integer"}
