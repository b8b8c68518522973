"""The parts of the OpenAPI contract every operation shares: typed problems, common headers.

Generated clients (openapi-typescript, openapi-python-client) type a response only from what
the document declares, so the document must say exactly what the service sends: every error
is `application/problem+json` with the Problem schema (never FastAPI's default
`HTTPValidationError`, which this service never returns), any operation can end in a 500 (an
unexpected error) or a 503 (the audit record or the database could not be reached), and
recorded requests always carry `X-Request-ID`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from audit_service.core.errors import (
    PROBLEM_CONTENT_TYPE,
    PROBLEM_REF,
    REQUEST_ID_HEADER,
    Problem,
    problem_responses,
)

# Statuses the service itself can produce on any operation, whatever the route declares.
ALWAYS_POSSIBLE = (500, 503)
_FASTAPI_DEFAULTS = ("HTTPValidationError", "ValidationError")
_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def _problem_components() -> dict[str, Any]:
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components: dict[str, Any] = schema.pop("$defs", {})
    components["Problem"] = schema
    return components


def finish(document: dict[str, Any]) -> dict[str, Any]:
    """Apply the shared contract to a generated document (in place; also returned)."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.update(_problem_components())
    components.setdefault("headers", {})["X-Request-ID"] = REQUEST_ID_HEADER
    request_id_ref = {"$ref": "#/components/headers/X-Request-ID"}
    for item in document.get("paths", {}).values():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            possible: tuple[int, ...] = ALWAYS_POSSIBLE
            if "requestBody" in operation:
                # A body that is not UTF-8 never reaches validation: Starlette answers 400
                # "There was an error parsing the body" (found by schemathesis).
                possible = (400, *possible)
            for status, extra in problem_responses(*possible).items():
                responses.setdefault(str(status), extra)
            recorded = "x-audit-action" in operation
            for status, response in responses.items():
                if status[0] in "45":
                    # Replaces FastAPI's automatic 422 body and any application/json twin.
                    response["content"] = {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": PROBLEM_REF}}}
                    for extra in problem_responses(int(status)).values():
                        for name, header in extra.get("headers", {}).items():
                            response.setdefault("headers", {}).setdefault(name, header)
                if recorded:
                    response.setdefault("headers", {})["X-Request-ID"] = request_id_ref
    # Drop FastAPI's validation-error schemas once nothing refers to them.
    text = json.dumps(document["paths"])
    for name in _FASTAPI_DEFAULTS:
        if f'"#/components/schemas/{name}"' not in text:
            schemas.pop(name, None)
    return document


def install_contract(app: FastAPI) -> None:
    """Make `app.openapi()` (and so /openapi.json and /docs) return the finished document."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = finish(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
