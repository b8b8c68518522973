"""Helpers for the detection tests: login attempts in through the API, the log sequenced
and evaluated as the jobs would, and the alerts read back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from audit_service.audit_log.context import SYSTEM
from audit_service.audit_log.sequencer import no_fence
from audit_service.audit_log.sink import SessionEventSink
from audit_service.detections import service
from audit_service.detections.models import Alert
from audit_service.integrity.jobs import make_sequencer
from tests.conftest import Harness
from tests.stats.helpers import post_events

SOURCE = "lms"


def attempt(ip: str | None, user: str, *, ok: bool = False, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "action": "auth.login" if ok else "auth.login_failed",
        "outcome": "success" if ok else "failure",
        "actor_id": user,
        "actor_name": user,
        "actor_type": "user" if ok else "anonymous",
        "occurred_at": datetime.now(UTC).isoformat(),
        "user_agent": "curl/8.0",
        **fields,
    }
    if ip is not None:
        body["ip"] = ip
    return body


def failures(ip: str, user: str, n: int, **fields: Any) -> list[dict[str, Any]]:
    return [attempt(ip, user, **fields) for _ in range(n)]


async def post(h: Harness, events: list[dict[str, Any]], source: str = SOURCE) -> None:
    await post_events(h, source, events)


async def evaluate(h: Harness, batch: int = 2000, **fence: Any) -> service.Round:
    """Sequence everything committed, then evaluate it."""
    await make_sequencer().catch_up(h.app.state.sessionmaker, no_fence)
    config = service.Config.of(h.app.state.settings)
    return await service.catch_up(h.app.state.sessionmaker, config, no_fence, batch=batch)


async def alerts(h: Harness, rule: str | None = None) -> list[Alert]:
    async with h.app.state.sessionmaker() as session:
        stmt = select(Alert).order_by(Alert.id)
        if rule is not None:
            stmt = stmt.where(Alert.rule_id == rule)
        return list((await session.scalars(stmt)).all())


def entities(found: list[Alert]) -> set[str]:
    return {a.entity_value for a in found}


async def forwarding_event(h: Harness, action: str, dest: int, name: str) -> None:
    """What forwarding/ records when a destination starts failing or recovers."""
    async with h.app.state.sessionmaker() as session:
        sink = SessionEventSink(session, SYSTEM, action, "forwarding")
        sink.describe(
            target_type="forward_destination",
            target_id=str(dest),
            description=f"Destination {dest} '{name}' {action}",
            destination=name,
            kind="webhook",
            error="connection refused",
            cursor=5,
        )
        await sink.write(outcome="failure" if action.endswith("failing") else "success")
        await session.commit()
