"""Jinja2 for the console: autoescape always on, undefined names fail loudly.

Every value from an event is rendered through `{{ … }}` (escaped text), never `|safe`: audit
UIs have a history of stored XSS through logged fields (a user agent that takes over the
admin's session)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import Request
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.responses import HTMLResponse

from audit_service.console import auth

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
NAV = (
    ("activity", "Activity", "/console/activity"),
    ("dashboard", "Dashboard", "/console/dashboard"),
    ("alerts", "Alerts", "/console/alerts"),
    ("integrity", "Integrity", "/console/integrity"),
    ("admin", "Administration", "/console/admin"),
)


def _pretty_json(value: Any) -> str:
    # Text, escaped by autoescape like any other value.
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template, whatever its name
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["csrf_token"] = auth.csrf_token
    env.globals["nav"] = NAV
    env.filters["pretty_json"] = _pretty_json
    return env


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    page = environment().get_template(template)
    values = {
        "request": request,
        "principal": auth.current(request),
        "active": "",
        **(context or {}),
    }
    return HTMLResponse(
        page.render(values),
        status_code=status_code,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )
