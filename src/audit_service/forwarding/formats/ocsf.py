"""`ocsf`: Open Cybersecurity Schema Framework 1.3.0.

One table (`MAPPING`) picks the class and activity from the action: the first row whose
pattern equals the action, or is a `prefix.*` of it, wins. A `None` activity is taken from
the HTTP method (API Activity: POST create, GET/HEAD read, PUT/PATCH update, DELETE delete).
`user.updated` that changed the role is User Access Management (privileges assigned).

Common to every class: `time` = occurred_at (ms), `metadata.logged_time` = recorded_at,
`metadata.uid` = event_id (the dedup key), `metadata.version` = 1.3.0, status_id 1 success /
2 failure (failure, denied, error; the outcome itself in `status_detail`), severity_id
1 Informational (success), 2 Low (failure), 3 Medium (denied), 4 High (error). What OCSF has no
attribute for is under `unmapped` (our column names).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from audit_service.forwarding.formats._values import (
    PRODUCT,
    VENDOR,
    VERSION,
    epoch_ms,
    finite,
    jsonable,
    metadata,
    text,
)
from audit_service.forwarding.formats.native import COLUMNS as _ALL

OCSF_VERSION = "1.3.0"
COLUMNS = _ALL

AUTHENTICATION = 3002
ACCOUNT_CHANGE = 3001
ENTITY_MANAGEMENT = 3004
USER_ACCESS = 3005
API_ACTIVITY = 6003

CLASSES: dict[int, tuple[str, int, str]] = {
    # class_uid: (class_name, category_uid, category_name)
    AUTHENTICATION: ("Authentication", 3, "Identity & Access Management"),
    ACCOUNT_CHANGE: ("Account Change", 3, "Identity & Access Management"),
    ENTITY_MANAGEMENT: ("Entity Management", 3, "Identity & Access Management"),
    USER_ACCESS: ("User Access Management", 3, "Identity & Access Management"),
    API_ACTIVITY: ("API Activity", 6, "Application Activity"),
}
ACTIVITIES: dict[int, dict[int, str]] = {
    AUTHENTICATION: {1: "Logon", 2: "Logoff", 99: "Other"},
    ACCOUNT_CHANGE: {
        1: "Create",
        2: "Enable",
        3: "Password Change",
        4: "Password Reset",
        5: "Disable",
        6: "Delete",
        9: "Lock",
        99: "Other",
    },
    ENTITY_MANAGEMENT: {
        1: "Create",
        2: "Read",
        3: "Update",
        4: "Delete",
        9: "Disable",
        99: "Other",
    },
    USER_ACCESS: {1: "Assign Privileges", 2: "Revoke Privileges", 99: "Other"},
    API_ACTIVITY: {0: "Unknown", 1: "Create", 2: "Read", 3: "Update", 4: "Delete", 99: "Other"},
}

# (action or "prefix.*", class_uid, activity_id or None: from the HTTP method). First match.
MAPPING: tuple[tuple[str, int, int | None], ...] = (
    ("auth.login", AUTHENTICATION, 1),
    ("auth.login_failed", AUTHENTICATION, 1),
    ("auth.logout", AUTHENTICATION, 2),
    ("auth.token_refreshed", AUTHENTICATION, 99),
    ("auth.refresh", AUTHENTICATION, 99),
    ("auth.password_changed", ACCOUNT_CHANGE, 3),
    ("auth.profile_viewed", API_ACTIVITY, 2),
    ("auth.revocations_pruned", API_ACTIVITY, 4),
    ("user.created", ACCOUNT_CHANGE, 1),
    ("user.activated", ACCOUNT_CHANGE, 2),
    ("user.enabled", ACCOUNT_CHANGE, 2),
    ("user.password_changed", ACCOUNT_CHANGE, 3),
    ("user.password_reset", ACCOUNT_CHANGE, 4),
    ("user.deactivated", ACCOUNT_CHANGE, 5),
    ("user.disabled", ACCOUNT_CHANGE, 5),
    ("user.deleted", ACCOUNT_CHANGE, 6),
    ("user.locked", ACCOUNT_CHANGE, 9),
    ("user.viewed", API_ACTIVITY, 2),
    ("user.listed", API_ACTIVITY, 2),
    ("user.role_assigned", USER_ACCESS, 1),
    ("user.role_revoked", USER_ACCESS, 2),
    ("user.*", ACCOUNT_CHANGE, 99),  # user.updated (role changes: see _role_change)
    ("role.assigned", USER_ACCESS, 1),
    ("role.revoked", USER_ACCESS, 2),
    ("role.*", USER_ACCESS, 99),
    ("api_key.created", ENTITY_MANAGEMENT, 1),
    ("api_key.listed", ENTITY_MANAGEMENT, 2),
    ("api_key.revoked", ENTITY_MANAGEMENT, 9),
    ("api_key.deleted", ENTITY_MANAGEMENT, 4),
    ("api_key.*", ENTITY_MANAGEMENT, 99),
    ("config.changed", ENTITY_MANAGEMENT, 3),
    ("export_recipient.created", ENTITY_MANAGEMENT, 1),
    ("export_recipient.listed", ENTITY_MANAGEMENT, 2),
    ("export_recipient.deleted", ENTITY_MANAGEMENT, 4),
    ("export_recipient.*", ENTITY_MANAGEMENT, 99),
    ("*", API_ACTIVITY, None),  # everything else: http.request, reports, integrity, …
)

_BY_METHOD = {"POST": 1, "GET": 2, "HEAD": 2, "PUT": 3, "PATCH": 3, "DELETE": 4}
# OCSF 1.3.0 http_request.http_method enum (PATCH is not in it: kept under unmapped).
_HTTP_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT", "TRACE"})
SEVERITY = {"success": (1, "Informational"), "failure": (2, "Low"), "denied": (3, "Medium")}
SEVERITY_ERROR = (4, "High")
# user.type_id: 1 User, 2 Admin, 3 System, 99 Other, 0 Unknown.
_USER_TYPES = {"user": (1, "User"), "system": (3, "System"), "service": (99, "Service")}


def classify(action: str, method: str | None = None) -> tuple[int, int]:
    """(class_uid, activity_id) of an action, by MAPPING."""
    for pattern, class_uid, activity in MAPPING:
        if (
            pattern == action
            or pattern == "*"
            or (pattern.endswith(".*") and action.startswith(pattern[:-1]))
        ):
            if activity is None:
                activity = _BY_METHOD.get((method or "").upper(), 99 if method else 0)
            return class_uid, activity
    raise AssertionError("MAPPING ends with '*'")  # pragma: no cover


def _role_change(event: Mapping[str, Any], meta: Mapping[str, Any]) -> str | None:
    """The new role when a user.updated event changed it."""
    if event.get("action") != "user.updated":
        return None
    changed = meta.get("changed")
    after = meta.get("after")
    if isinstance(changed, list) and "role" in changed and isinstance(after, dict):
        role = after.get("role")
        return None if role is None else str(role)
    return None


def _drop_none(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if v is not None}


def _actor_user(event: Mapping[str, Any]) -> dict[str, Any]:
    actor_type = str(event.get("actor_type") or "")
    type_id, type_name = _USER_TYPES.get(actor_type, (0, "Unknown"))
    if actor_type == "user" and event.get("actor_role") == "admin":
        type_id, type_name = 2, "Admin"
    user = _drop_none(
        {
            "uid": text(event.get("actor_id")),
            "name": text(event.get("actor_name")),
            "type_id": type_id,
            "type": type_name,
        }
    )
    if "uid" not in user and "name" not in user:
        user["name"] = actor_type or "unknown"  # at_least_one of account, name, uid
    return user


def _target_user(event: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The account an Account Change / User Access event is about: the target, else the
    actor (auth.password_changed: one's own)."""
    if event.get("target_id") is None:
        return _actor_user(event)
    name = meta.get("username")
    return _drop_none(
        {"uid": text(event.get("target_id")), "name": None if name is None else str(name)}
    )


def _privileges(meta: Mapping[str, Any], role: str | None) -> list[str]:
    if role is not None:
        return [role]
    for key in ("role", "privileges", "roles"):
        value = meta.get(key)
        if isinstance(value, list):
            return [str(v) for v in value]
        if value is not None:
            return [str(value)]
    after = meta.get("after")
    if isinstance(after, dict) and after.get("role") is not None:
        return [str(after["role"])]
    return []


def render(event: Mapping[str, Any]) -> dict[str, Any]:
    action = str(event.get("action") or "")
    method = text(event.get("method"))
    meta = metadata(event)
    role = _role_change(event, meta)
    if role is not None:
        class_uid, activity_id = USER_ACCESS, 1
    else:
        class_uid, activity_id = classify(action, method)
    class_name, category_uid, category_name = CLASSES[class_uid]
    outcome = str(event.get("outcome") or "")
    severity_id, severity = SEVERITY.get(outcome, SEVERITY_ERROR)
    status_code = event.get("status_code")
    latency = event.get("latency_ms")
    duration = finite(latency)
    ip = text(event.get("ip"))
    actor = {"user": _actor_user(event), "app_name": text(event.get("source"))}
    out: dict[str, Any] = {
        "activity_id": activity_id,
        "activity_name": ACTIVITIES[class_uid].get(activity_id, "Other"),
        "category_uid": category_uid,
        "category_name": category_name,
        "class_uid": class_uid,
        "class_name": class_name,
        "type_uid": class_uid * 100 + activity_id,
        "type_name": f"{class_name}: {ACTIVITIES[class_uid].get(activity_id, 'Other')}",
        "severity_id": severity_id,
        "severity": severity,
        "status_id": 1 if outcome == "success" else 2,
        "status": "Success" if outcome == "success" else "Failure",
        "status_detail": outcome,
        "time": epoch_ms(event.get("occurred_at")),
        "message": text(event.get("description")),
        "metadata": _drop_none(
            {
                "version": OCSF_VERSION,
                "uid": text(event.get("event_id")),
                "product": {"name": PRODUCT, "vendor_name": VENDOR, "version": VERSION},
                "logged_time": epoch_ms(event.get("recorded_at")),
                "log_name": text(event.get("source")),
                "event_code": action,
                "correlation_uid": text(event.get("request_id")),
                "tenant_uid": text(event.get("tenant_id")),
            }
        ),
        "actor": actor,
    }
    if status_code is not None:
        out["status_code"] = str(status_code)
    if duration is not None:
        out["duration"] = round(duration)
    out["src_endpoint"] = {"ip": ip} if ip else {"svc_name": text(event.get("source")) or "-"}
    http = _drop_none(
        {
            "http_method": method.upper() if method and method.upper() in _HTTP_METHODS else None,
            "user_agent": text(event.get("user_agent")),
            "url": {"path": text(event.get("path"))} if event.get("path") is not None else None,
        }
    )
    if http:
        out["http_request"] = http
    if class_uid == AUTHENTICATION:
        out["user"] = _actor_user(event)
        out["service"] = {"name": PRODUCT}
    elif class_uid == ACCOUNT_CHANGE:
        out["user"] = _target_user(event, meta)
    elif class_uid == USER_ACCESS:
        out["user"] = _target_user(event, meta)
        out["privileges"] = _privileges(meta, role)
    elif class_uid == ENTITY_MANAGEMENT:
        entity = _drop_none(
            {"uid": text(event.get("target_id")), "type": text(event.get("target_type"))}
        )
        if "uid" not in entity:
            entity["name"] = text(event.get("target_type")) or action
        out["entity"] = entity
    else:
        api: dict[str, Any] = {"operation": action, "service": {"name": text(event.get("module"))}}
        if event.get("request_id") is not None:
            api["request"] = {"uid": text(event.get("request_id"))}
        if status_code is not None:
            api["response"] = {"code": jsonable(status_code)}
        out["api"] = api
        if event.get("target_id") is not None or event.get("target_type") is not None:
            out["resources"] = [
                _drop_none(
                    {
                        "uid": text(event.get("target_id")),
                        "type": text(event.get("target_type")),
                        "name": text(event.get("target_type")),
                    }
                )
            ]
    out["unmapped"] = {
        "id": jsonable(event.get("id")),
        "module": text(event.get("module")),
        "actor_type": text(event.get("actor_type")),
        "actor_role": text(event.get("actor_role")),
        "target_type": text(event.get("target_type")),
        "target_id": text(event.get("target_id")),
        "method": method,
        "client_request_id": text(event.get("client_request_id")),
        "idempotency_key": text(event.get("idempotency_key")),
        "latency_ms": jsonable(latency),
        "metadata": meta,
    }
    return out
