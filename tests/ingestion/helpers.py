"""Helpers for ingestion tests: service keys made through the admin API, and sample events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from audit_service.audit_log.models import AuditEvent
from tests.conftest import Harness


async def make_key(h: Harness, name: str = "exam-platform") -> str:
    """A fresh `events:write` key for `name`, made by the admin; returns the secret."""
    admin = await h.auth()
    r = await h.client.post(
        "/admin/api-keys", headers=admin, json={"name": name, "scopes": ["events:write"]}
    )
    assert r.status_code == 201, r.text
    key: str = r.json()["key"]
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def event(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "action": "exam.submitted",
        "occurred_at": (datetime.now(UTC) - timedelta(seconds=5)).isoformat(),
        "actor_id": "student-1042",
        "actor_name": "Ada L.",
        "actor_role": "student",
        "target_type": "exam",
        "target_id": "algebra-2",
        "ip": "198.51.100.23",
        "metadata": {"answers": 40},
        "idempotency_key": uuid.uuid4().hex,
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}


async def ingested(h: Harness, source: str = "exam-platform") -> list[AuditEvent]:
    return await h.events(source=source)
