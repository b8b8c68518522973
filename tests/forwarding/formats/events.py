"""Sample events shaped like `log.follow` returns them (a dict of audit_event columns)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any


def sample(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": 41,
        "event_id": uuid.UUID("0b7e6f4e-4d2a-4c35-9f0e-3c1d2b8a9e10"),
        "occurred_at": datetime(2026, 12, 2, 23, 27, 10, 123456, tzinfo=UTC),
        "recorded_at": datetime(2026, 12, 2, 23, 27, 10, 234567, tzinfo=UTC),
        "source": "audit-service",
        "tenant_id": "tenant-a",
        "actor_type": "user",
        "actor_id": "7",
        "actor_name": "alice",
        "actor_role": "admin",
        "action": "auth.login",
        "module": "auth",
        "outcome": "success",
        "description": "Logged in",
        "target_type": "user",
        "target_id": "7",
        "ip": "203.0.113.7",
        "ip_bytes": bytes(10) + b"\xff\xff" + bytes([203, 0, 113, 7]),
        "user_agent": "pytest-client/1.0",
        "request_id": "req-1",
        "client_request_id": "client-req-1",
        "method": "POST",
        "path": "/login",
        "status_code": 200,
        "latency_ms": 12.5,
        "metadata": {"mfa": False, "n": 1},
        "idempotency_key": None,
    }
    event.update(overrides)
    return event
