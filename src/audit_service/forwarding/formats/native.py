"""`native`: our own event JSON, the public shape of `GET /admin/activity` and the JSON export
(`activity/schemas.py: EventOut`): same field names, `event_id` a string, times RFC 3339 UTC."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from audit_service.forwarding.formats._values import jsonable, metadata, rfc3339, text

# The audit_event columns this format carries (the guard test compares with the table).
COLUMNS = frozenset(
    {
        "id",
        "event_id",
        "occurred_at",
        "recorded_at",
        "source",
        "tenant_id",
        "actor_type",
        "actor_id",
        "actor_name",
        "actor_role",
        "action",
        "module",
        "outcome",
        "description",
        "target_type",
        "target_id",
        "ip",
        "user_agent",
        "request_id",
        "client_request_id",
        "method",
        "path",
        "status_code",
        "latency_ms",
        "metadata",
        "idempotency_key",
    }
)

_PLAIN = (
    "source",
    "tenant_id",
    "actor_type",
    "actor_id",
    "actor_name",
    "actor_role",
    "action",
    "module",
    "outcome",
    "description",
    "target_type",
    "target_id",
    "ip",
    "user_agent",
    "request_id",
    "client_request_id",
    "method",
    "path",
)


def render(event: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": jsonable(event.get("id")),
        "event_id": text(event.get("event_id")),
        "occurred_at": rfc3339(event.get("occurred_at")),
        "recorded_at": rfc3339(event.get("recorded_at")),
    }
    for name in _PLAIN:
        out[name] = text(event.get(name))
    out["status_code"] = jsonable(event.get("status_code"))
    out["latency_ms"] = jsonable(event.get("latency_ms"))
    out["metadata"] = metadata(event)
    out["idempotency_key"] = text(event.get("idempotency_key"))
    return out
