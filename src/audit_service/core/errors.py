"""One error base class with its status; one RFC 9457 problem+json shape; one set of handlers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://audit-service.dev/problems/"


class FieldError(BaseModel):
    loc: list[str | int] = Field(
        description="Where the bad value is, e.g. ['body', 'events', 3, 'ip']"
    )
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(examples=[PROBLEM_BASE + "validation-error"])
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[FieldError] | None = None


class AppError(Exception):
    status_code: int = 500
    slug: str = "internal-error"
    title: str = "Internal Server Error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        errors: Sequence[FieldError] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = dict(headers or {})
        self.errors = list(errors) if errors is not None else None


class BadRequest(AppError):
    status_code, slug, title = 400, "bad-request", "Bad Request"


class Unauthorized(AppError):
    status_code, slug, title = 401, "unauthorized", "Unauthorized"

    def __init__(self, detail: str = "Not authenticated") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(AppError):
    status_code, slug, title = 403, "forbidden", "Forbidden"


class NotFound(AppError):
    status_code, slug, title = 404, "not-found", "Not Found"


class Conflict(AppError):
    status_code, slug, title = 409, "conflict", "Conflict"


class PayloadTooLarge(AppError):
    status_code, slug, title = 413, "payload-too-large", "Payload Too Large"


class ValidationFailed(AppError):
    status_code, slug, title = 422, "validation-error", "Validation Error"


class RateLimited(AppError):
    status_code, slug, title = 429, "rate-limited", "Too Many Requests"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})


class ServiceUnavailable(AppError):
    status_code, slug, title = 503, "service-unavailable", "Service Unavailable"


def problem_response(
    status: int,
    *,
    slug: str | None = None,
    title: str | None = None,
    detail: str | None = None,
    request_id: str | None = None,
    instance: str | None = None,
    errors: Sequence[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    body = Problem(
        type=PROBLEM_BASE + (slug or phrase.lower().replace(" ", "-")),
        title=title or phrase,
        status=status,
        detail=detail,
        instance=instance,
        request_id=request_id,
        errors=list(errors) if errors is not None else None,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        headers=dict(headers or {}),
        media_type=PROBLEM_CONTENT_TYPE,
    )


def _request_id(request: Request) -> str | None:
    context = getattr(request.state, "audit", None)
    return getattr(context, "request_id", None)


def field_errors(raw: Sequence[Any]) -> list[FieldError]:
    """pydantic/FastAPI error dicts → our FieldError list (never echoes the rejected input)."""
    return [
        FieldError(
            loc=[p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
            msg=str(e.get("msg", "invalid")),
            type=str(e.get("type", "value_error")),
        )
        for e in raw
    ]


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return problem_response(
        exc.status_code,
        slug=exc.slug,
        title=exc.title,
        detail=exc.detail,
        request_id=_request_id(request),
        instance=request.url.path,
        errors=exc.errors,
        headers=exc.headers,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = field_errors(exc.errors())
    return problem_response(
        422,
        slug=ValidationFailed.slug,
        title=ValidationFailed.title,
        detail=f"{len(errors)} invalid field(s)",
        request_id=_request_id(request),
        instance=request.url.path,
        errors=errors,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    return problem_response(
        exc.status_code,
        detail=detail,
        request_id=_request_id(request),
        instance=request.url.path,
        headers=exc.headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


PROBLEM_REF = "#/components/schemas/Problem"
# Every recorded request answers with the id its audit event carries (the recorder adds it).
REQUEST_ID_HEADER: dict[str, Any] = {
    "description": "The id of this request's audit event: quote it when reporting a problem",
    "schema": {"type": "string"},
    "required": True,
}
RETRY_AFTER_HEADER: dict[str, Any] = {
    "description": "Seconds to wait before trying again",
    "schema": {"type": "integer", "minimum": 1},
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting problem+json for the given statuses.

    Only `application/problem+json` with a `$ref` to Problem: FastAPI's `model` key would add
    an `application/json` twin (the route's media type) that the service never sends, and
    generated clients then type every error as `unknown`. The Problem schema itself is put
    into the components by `core.openapi.install_contract`.
    """
    responses: dict[int | str, dict[str, Any]] = {}
    for s in statuses:
        response: dict[str, Any] = {
            "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": PROBLEM_REF}}},
            "description": HTTPStatus(s).phrase,
        }
        if s == 429:
            response["headers"] = {"Retry-After": {**RETRY_AFTER_HEADER, "required": True}}
        elif s == 503:
            response["headers"] = {"Retry-After": RETRY_AFTER_HEADER}
        responses[s] = response
    return responses
