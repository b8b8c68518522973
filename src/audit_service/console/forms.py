"""Reading a page's GET form into the API's own query model: a plain HTML form sends every
field, the empty ones as `name=`, where the API would be given no parameter at all; those are
dropped first, then the model checks the rest exactly as the API does (unknown parameters
refused). Errors become the console's 422 page (routing.ConsoleRoute)."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from audit_service.core.errors import ValidationFailed, field_errors

M = TypeVar("M", bound=BaseModel)


def form_values(request: Request) -> dict[str, str | list[str]]:
    values: dict[str, str | list[str]] = {}
    for name, value in request.query_params.multi_items():
        if value == "":
            continue
        if name in values:
            before = values[name]
            values[name] = [*before, value] if isinstance(before, list) else [before, value]
        else:
            values[name] = value
    return values


def parse_query(request: Request, model: type[M], lists: frozenset[str] = frozenset()) -> M:
    values = form_values(request)
    for name in lists:
        if name in values and not isinstance(values[name], list):
            values[name] = [values[name]]  # type: ignore[list-item]
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        errors = [{**e, "loc": ("query", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def validated_form(model: type[M], values: dict[str, Any]) -> M:
    """A POSTed form's fields through the API's own input model: the same rules; a refusal
    is the API's 422 (shown as a page, or at its form by the caller)."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        errors = field_errors(exc.errors(include_url=False))
        raise ValidationFailed(
            f"{len(errors)} invalid field(s): nothing was changed.", errors=errors
        ) from None
