"""`cef`: ArcSight Common Event Format, one line:

    CEF:0|audit-service|audit-service|<version>|<action>|<name>|<severity>|<extension>

Header fields escape `\\` and `|` with a backslash; a CR or LF in a header field (the name is
the description's first line) becomes a space — the whole description is in `msg`.
Extension values escape `\\`, `=`, LF (`\\n`) and CR (`\\r`); keys follow in a fixed order and
a column without a value has no key. Severity: success 3, failure 5, denied 6, error 7.

Keys: rt = recorded_at (ms), start = occurred_at (ms), externalId = event_id (the dedup key),
act = action, cat = module, outcome, msg = description, src = ip, suid/suser/spriv = actor
id/name/role, request = path, requestMethod, requestClientApplication = user agent,
cn1 status_code, cn2 id, cfp1 latency_ms, cs1 tenant, cs2 source, cs3 actor_type,
cs4 target_type, cs5 target_id, cs6 metadata (compact JSON), flexString1 request_id,
flexString2 client_request_id, auditserviceIdempotencyKey (a vendor key; CEF has none for it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from audit_service.forwarding.formats._values import (
    PRODUCT,
    VENDOR,
    VERSION,
    epoch_ms,
    metadata,
    text,
)
from audit_service.forwarding.formats.native import COLUMNS as _ALL

COLUMNS = _ALL
SEVERITY = {"success": 3, "failure": 5, "denied": 6, "error": 7}
MAX_NAME = 512

# (CEF key, column or callable name, label for csN/cnN/cfpN/flexStringN)
_LABELS = {
    "cn1": "status_code",
    "cn2": "id",
    "cfp1": "latency_ms",
    "cs1": "tenant",
    "cs2": "source",
    "cs3": "actor_type",
    "cs4": "target_type",
    "cs5": "target_id",
    "cs6": "metadata",
    "flexString1": "request_id",
    "flexString2": "client_request_id",
}


def escape_header(value: str) -> str:
    value = value.replace("\\", "\\\\").replace("|", "\\|")
    return value.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")


def escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("=", "\\=").replace("\n", "\\n").replace("\r", "\\r")


def _name(event: Mapping[str, Any]) -> str:
    description = text(event.get("description"))
    name = description.splitlines()[0] if description else str(event.get("action") or "")
    return name[:MAX_NAME]


def _number(value: Any) -> str | None:
    if value is None:
        return None
    return str(value)


def extension(event: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """The (key, value) pairs in order, None where the event has no value."""
    meta = metadata(event)
    pairs: list[tuple[str, str | None]] = [
        ("rt", _number(epoch_ms(event.get("recorded_at")))),
        ("start", _number(epoch_ms(event.get("occurred_at")))),
        ("externalId", text(event.get("event_id"))),
        ("act", text(event.get("action"))),
        ("cat", text(event.get("module"))),
        ("outcome", text(event.get("outcome"))),
        ("msg", text(event.get("description"))),
        ("src", text(event.get("ip"))),
        ("suid", text(event.get("actor_id"))),
        ("suser", text(event.get("actor_name"))),
        ("spriv", text(event.get("actor_role"))),
        ("request", text(event.get("path"))),
        ("requestMethod", text(event.get("method"))),
        ("requestClientApplication", text(event.get("user_agent"))),
        ("cn1", _number(event.get("status_code"))),
        ("cn2", _number(event.get("id"))),
        ("cfp1", _number(event.get("latency_ms"))),
        ("cs1", text(event.get("tenant_id"))),
        ("cs2", text(event.get("source"))),
        ("cs3", text(event.get("actor_type"))),
        ("cs4", text(event.get("target_type"))),
        ("cs5", text(event.get("target_id"))),
        ("cs6", json.dumps(meta, separators=(",", ":"), ensure_ascii=False) if meta else None),
        ("flexString1", text(event.get("request_id"))),
        ("flexString2", text(event.get("client_request_id"))),
        ("auditserviceIdempotencyKey", text(event.get("idempotency_key"))),
    ]
    out: list[tuple[str, str | None]] = []
    for key, value in pairs:
        out.append((key, value))
        if key in _LABELS and value is not None:
            out.append((key + "Label", _LABELS[key]))
    return out


def render(event: Mapping[str, Any]) -> str:
    header = "|".join(
        escape_header(part)
        for part in (
            VENDOR,
            PRODUCT,
            VERSION,
            str(event.get("action") or ""),
            _name(event),
            str(SEVERITY.get(str(event.get("outcome")), 5)),
        )
    )
    ext = " ".join(f"{k}={escape_value(v)}" for k, v in extension(event) if v is not None)
    return f"CEF:0|{header}|{ext}"
