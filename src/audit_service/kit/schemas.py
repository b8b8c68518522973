"""Base for request bodies: unknown fields refused, and nothing the database cannot store:
no NUL characters, no NaN/Infinity, no absurd nesting, anywhere in a value. Also the
validators that several query models share (the activity filters and the statistics)."""

from __future__ import annotations

import math
import re
import zoneinfo
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, field_validator

# What pydantic would also read as a Unix time ("1700000000", "1.7e9").
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
# Deeper than any real document; far below what exhausts Python's recursion limit in the
# validators, jsonschema or json.dumps that later walk the same value.
MAX_JSON_DEPTH = 32


def json_problem(value: Any, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Why `value` cannot be stored as JSON/text (None when it can).

    Iterative, and it stops at `max_depth` before looking further, so a body nested thousands
    deep costs a bounded walk instead of a RecursionError (and its traceback in the logs).
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "must not contain NUL characters"
        elif isinstance(item, float):
            # Python's json reads NaN/Infinity; PostgreSQL JSONB (and strict JSON) cannot
            # hold them.
            if not math.isfinite(item):
                return "must not contain NaN or Infinity"
        elif isinstance(item, dict | list | tuple):
            if depth >= max_depth:
                return f"must not be nested more than {max_depth} levels deep"
            if isinstance(item, dict):
                stack.extend((k, depth + 1) for k in item)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
    return None


# Names whose values are never written to an event, whatever setting they belong to.
_SECRET_NAME = re.compile(r"secret|password|passwd|token|api_?key|credential|private", re.I)
MASK = "********"


def mask_secrets(value: Any) -> Any:
    """A copy of a JSON value with every member whose name looks secret replaced by MASK."""
    if isinstance(value, dict):
        return {
            k: MASK if isinstance(k, str) and _SECRET_NAME.search(k) else mask_secrets(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    return value


def config_change(*, before: Any, after: Any) -> dict[str, Any]:
    """Metadata of a `config.changed` event: the values before and after, secrets masked.

    Every runtime configuration change made through the API records one (values already
    passed `json_problem`, so they are bounded in depth)."""
    return {"before": mask_secrets(before), "after": mask_secrets(after)}


class InputModel(BaseModel):
    # A typo in a field name must fail loudly, not be dropped.
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        # PostgreSQL text and JSONB cannot hold NUL or NaN: refuse them as bad input (422)
        # instead of letting them surface as a database error.
        problem = json_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


# --- validators shared by query models (activity filters, statistics) -----------------------


def check_actions(value: list[str]) -> list[str]:
    """A repeatable `action` filter: each value 1 to 100 characters (the column's size)."""
    for a in value:
        if not 1 <= len(a) <= 100:
            raise ValueError("each action is 1 to 100 characters")
    return value


def iso_8601_only(value: Any) -> Any:
    """For a `mode="before"` validator of a datetime: only ISO 8601 text. pydantic also reads
    "1700000000" as a Unix time; the contract is ISO 8601 with an offset, and a bare number
    is more likely a mistake (milliseconds?) than a date."""
    if value is not None and (
        not isinstance(value, str) or _NUMBER.fullmatch(value.strip()) is not None
    ):
        raise ValueError("must be ISO 8601 with an offset, e.g. 2026-01-31T23:00:00Z")
    return value


def check_time_zone(value: str | None) -> str | None:
    """An IANA time zone name (None passes): the zone statistics and reports count in."""
    if value is not None:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("not an IANA time zone name (e.g. Europe/Berlin)") from None
    return value


def check_http_url(value: str, *, credentials: str = "") -> str:
    """An admin-configured target URL: http(s), a host, a valid port, no credentials or
    fragment. (Where it may point is outbound safety's call, at send time.)"""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    if parts.username or parts.password:
        raise ValueError(f"credentials in the URL are not allowed{credentials}")
    if parts.fragment:
        raise ValueError("the URL must not have a fragment")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError("the URL's port is not a number from 0 to 65535") from None
    return value
