"""Forwarding formats: one audit event (a dict of `audit_event` columns, as
`audit_log.log.follow` returns it in `Followed.event`) → what a SIEM receives.

- `native`: our own event JSON (the API's `EventOut` shape).
- `ocsf`:   OCSF 1.3.0 (Authentication 3002, Account Change 3001, User Access Management
            3005, Entity Management 3004, API Activity 6003).
- `ecs`:    Elastic Common Schema 8.x.
- `cef`:    ArcSight CEF:0, one line.

Every format carries `event_id` (the dedup key of at-least-once delivery). Every audit_event
column is mapped by each format except those in `DROPPED` (tests/forwarding/formats guard it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from audit_service.forwarding.formats import cef, ecs, native, ocsf

FORMATS: tuple[str, ...] = ("native", "ocsf", "ecs", "cef")
JSON_FORMATS: tuple[str, ...] = ("native", "ocsf", "ecs")

# audit_event columns no format forwards, each with its reason.
DROPPED: tuple[tuple[str, str], ...] = (
    # The binary form of `ip` (16 bytes, for the index behind ip/CIDR filters): `ip` is sent.
    ("ip_bytes", "derived from ip, an index key"),
)

# The columns each format maps (all of audit_event minus DROPPED; the guard test checks).
COLUMNS: dict[str, frozenset[str]] = {
    "native": native.COLUMNS,
    "ocsf": ocsf.COLUMNS,
    "ecs": ecs.COLUMNS,
    "cef": cef.COLUMNS,
}

_JSON: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "native": native.render,
    "ocsf": ocsf.render,
    "ecs": ecs.render,
}


class UnknownFormat(ValueError):
    """A format name not in FORMATS (or `cef` asked of render_json)."""

    def __init__(self, fmt: str, allowed: tuple[str, ...] = FORMATS) -> None:
        super().__init__(f"unknown format {fmt!r}: expected one of {', '.join(allowed)}")
        self.format = fmt


def render_json(fmt: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """`event` as a JSON-ready dict (str/int/float/bool/None/list/dict only) in `fmt`
    (native, ocsf or ecs)."""
    try:
        render = _JSON[fmt]
    except (KeyError, TypeError):
        raise UnknownFormat(str(fmt), JSON_FORMATS) from None
    return render(event)


def render_cef(event: Mapping[str, Any]) -> str:
    """One `CEF:0|…` line (no newline)."""
    return cef.render(event)


_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def dumps(document: Any) -> str:
    """Compact JSON, keys in the order built, UTF-8 as is."""
    return _ENCODE(document)


def render_text(fmt: str, event: Mapping[str, Any]) -> str:
    """`event` as text: `cef` → the CEF line; the others → compact JSON of `render_json`."""
    if fmt == "cef":
        return cef.render(event)
    if fmt not in FORMATS:
        raise UnknownFormat(str(fmt))
    return dumps(render_json(fmt, event))


__all__ = [
    "COLUMNS",
    "DROPPED",
    "FORMATS",
    "JSON_FORMATS",
    "UnknownFormat",
    "dumps",
    "render_cef",
    "render_json",
    "render_text",
]
