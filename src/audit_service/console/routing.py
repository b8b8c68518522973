"""The console's route class: every problem becomes a page, never JSON or a stack trace.

The API answers the same bad input with problem+json (core/errors.py); here the same
status, title, detail and field errors are rendered as a page a person can read (or, for
sign-in, a redirect to the sign-in form)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.responses import RedirectResponse

from audit_service.console import auth
from audit_service.console.templating import render
from audit_service.core.errors import (
    AppError,
    FieldError,
    ValidationFailed,
    field_errors,
    problem_response,
)
from audit_service.core.routing import SafeJSONRoute

LOGIN = "/console/login"


def safe_next(target: str | None) -> str:
    """Only a console path of ours may follow sign-in (no open redirect)."""
    if (
        target
        and target.startswith("/console")
        and not target.startswith(("//", "/console/login", "/console/logout"))
        and "\\" not in target
        and all(c >= " " for c in target)
    ):
        return target
    return "/console/activity"


def sign_in_redirect(request: Request, detail: str | None) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    location = f"{LOGIN}?next={quote(safe_next(target), safe='')}"
    policy = auth.cookie_policy(request, request.app.state.settings)
    response: Response
    if request.method == "GET" and "hx-request" not in request.headers:
        response = RedirectResponse(location, status_code=303)
    else:
        response = error_page(request, 401, "Sign-in required", detail, None)
        response.headers["HX-Redirect"] = location
    if policy.session in request.cookies:
        response.delete_cookie(policy.session, path="/", secure=policy.secure, httponly=True)
    return response


def error_page(
    request: Request,
    status: int,
    title: str,
    detail: str | None,
    errors: Sequence[FieldError] | None,
    headers: dict[str, str] | None = None,
) -> Response:
    audit = getattr(request.state, "audit", None)
    return render(
        request,
        "error.html",
        {
            "status": status,
            "title": title,
            "detail": detail,
            "errors": list(errors or []),
            "request_id": getattr(audit, "request_id", None),
        },
        status_code=status,
        headers=headers,
    )


def wants_json(request: Request) -> bool:
    """A script's fetch of console data (the histogram asks with Accept: application/json):
    its problems are the API's problem+json, not a page (nor a redirect to sign-in)."""
    accept = request.headers.get("accept", "")
    return accept.startswith(("application/json", "application/problem+json"))


def _problem(request: Request, exc: AppError) -> Response:
    audit = getattr(request.state, "audit", None)
    return problem_response(
        exc.status_code,
        slug=exc.slug,
        title=exc.title,
        detail=exc.detail,
        request_id=getattr(audit, "request_id", None),
        instance=request.url.path,
        errors=exc.errors,
        headers=exc.headers,
    )


class ConsoleRoute(SafeJSONRoute):
    """Use as `APIRouter(route_class=ConsoleRoute)` for every console page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except auth.SignInRequired as exc:
                if wants_json(request):
                    return _problem(request, exc)
                return sign_in_redirect(request, exc.detail)
            except AppError as exc:
                if wants_json(request):
                    return _problem(request, exc)
                return error_page(
                    request, exc.status_code, exc.title, exc.detail, exc.errors, exc.headers
                )
            except RequestValidationError as exc:
                errors = field_errors(exc.errors())
                if wants_json(request):
                    return _problem(
                        request, ValidationFailed(f"{len(errors)} invalid field(s)", errors=errors)
                    )
                detail = f"{len(errors)} invalid field(s): nothing was shown or changed."
                return error_page(request, 422, "Validation Error", detail, errors)

        return console_handler
