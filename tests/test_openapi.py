"""The OpenAPI document is part of the contract: frontends are generated from it."""

from __future__ import annotations

from pathlib import Path

from audit_service.openapi import render, spec

SNAPSHOT = Path(__file__).resolve().parents[1] / "openapi.json"
PUBLIC = {"login", "login_form", "healthz", "readyz"}


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
