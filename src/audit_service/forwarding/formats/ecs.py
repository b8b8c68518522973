"""`ecs`: Elastic Common Schema 8.x (ecs.version 8.11.0).

`@timestamp` = occurred_at, `event.created` = recorded_at, `event.id` = event_id (the dedup
key), `event.kind` = event, `event.outcome` success / failure (failure, denied, error; the
outcome itself in `audit_service.outcome`), `event.duration` = latency in nanoseconds,
`event.category`/`event.type` from the action (ECS's allowed values). Columns ECS has no
field for are under `audit_service.*` (our column names); `labels` holds the source and the
tenant as keyword labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from audit_service.forwarding.formats._values import (
    PRODUCT,
    VENDOR,
    VERSION,
    finite,
    jsonable,
    metadata,
    rfc3339,
    text,
)
from audit_service.forwarding.formats.native import COLUMNS as _ALL

ECS_VERSION = "8.11.0"
COLUMNS = _ALL

# (action or "prefix.*", event.category, event.type): first match (ECS 8 allowed values).
MAPPING: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("auth.login", ("authentication", "session"), ("start",)),
    ("auth.login_failed", ("authentication",), ("start",)),
    ("auth.logout", ("authentication", "session"), ("end",)),
    ("auth.password_changed", ("iam",), ("user", "change")),
    ("auth.*", ("authentication",), ("info",)),
    ("user.created", ("iam",), ("user", "creation")),
    ("user.deleted", ("iam",), ("user", "deletion")),
    ("user.viewed", ("iam",), ("user", "access")),
    ("user.listed", ("iam",), ("user", "access")),
    ("user.*", ("iam",), ("user", "change")),
    ("role.*", ("iam",), ("group", "change")),
    ("api_key.created", ("iam",), ("creation",)),
    ("api_key.revoked", ("iam",), ("deletion",)),
    ("api_key.*", ("iam",), ("info",)),
    ("config.changed", ("configuration",), ("change",)),
    ("integrity.*", ("configuration",), ("info",)),
    ("http.*", ("web",), ("access",)),
    ("*", ("web",), ("info",)),
)


def classify(action: str) -> tuple[list[str], list[str]]:
    for pattern, category, kind in MAPPING:
        if pattern in (action, "*") or (pattern.endswith(".*") and action.startswith(pattern[:-1])):
            return list(category), list(kind)
    raise AssertionError("MAPPING ends with '*'")  # pragma: no cover


def _drop_none(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if v is not None}


def render(event: Mapping[str, Any]) -> dict[str, Any]:
    action = str(event.get("action") or "")
    category, types = classify(action)
    outcome = str(event.get("outcome") or "")
    latency = event.get("latency_ms")
    duration = finite(latency)
    out: dict[str, Any] = {
        "@timestamp": rfc3339(event.get("occurred_at")),
        "ecs": {"version": ECS_VERSION},
        "message": text(event.get("description")),
        "event": _drop_none(
            {
                "id": text(event.get("event_id")),
                "action": action,
                "category": category,
                "type": types,
                "kind": "event",
                "outcome": "success" if outcome == "success" else "failure",
                "created": rfc3339(event.get("recorded_at")),
                "duration": None if duration is None else round(duration * 1_000_000),
                "module": text(event.get("module")),
                "dataset": "audit_service.audit",
                "provider": text(event.get("source")),
            }
        ),
        "observer": {"product": PRODUCT, "vendor": VENDOR, "version": VERSION, "type": "audit"},
        "labels": _drop_none(
            {"source": text(event.get("source")), "tenant_id": text(event.get("tenant_id"))}
        ),
    }
    user = _drop_none(
        {
            "id": text(event.get("actor_id")),
            "name": text(event.get("actor_name")),
            "roles": None if event.get("actor_role") is None else [str(event["actor_role"])],
        }
    )
    if user:
        out["user"] = user
    if event.get("ip") is not None:
        out["source"] = {"ip": text(event.get("ip"))}
    if event.get("user_agent") is not None:
        out["user_agent"] = {"original": text(event.get("user_agent"))}
    if event.get("path") is not None:
        out["url"] = {"path": text(event.get("path"))}
    http: dict[str, Any] = {}
    if event.get("method") is not None:
        http["request"] = {"method": text(event.get("method"))}
    if event.get("request_id") is not None:
        http.setdefault("request", {})["id"] = text(event.get("request_id"))
    if event.get("status_code") is not None:
        http["response"] = {"status_code": jsonable(event.get("status_code"))}
    if http:
        out["http"] = http
    if event.get("tenant_id") is not None:
        out["organization"] = {"id": text(event.get("tenant_id"))}
    out["audit_service"] = {
        "id": jsonable(event.get("id")),
        "outcome": outcome,
        "actor_type": text(event.get("actor_type")),
        "target_type": text(event.get("target_type")),
        "target_id": text(event.get("target_id")),
        "client_request_id": text(event.get("client_request_id")),
        "idempotency_key": text(event.get("idempotency_key")),
        "latency_ms": jsonable(latency),
        "metadata": metadata(event),
    }
    return out
