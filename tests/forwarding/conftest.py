"""Forwarding test setup: an app that may send to loopback, real receivers, and helpers to
record events through the API, sequence the log and run delivery rounds."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from audit_service.audit_log.models import AuditEvent, AuditLeaf
from audit_service.audit_log.sequencer import no_fence
from audit_service.core.config import Settings
from audit_service.forwarding.delivery import Deliverer
from audit_service.integrity.jobs import make_sequencer
from audit_service.kit.webhooks import new_secret
from tests.conftest import Harness, make_settings, start_harness
from tests.forwarding.receivers import HecEmulator, WebhookReceiver
from tests.stats.helpers import post_events

FORWARD = {
    "forward_allow_private": "127.0.0.0/8",
    "forward_timeout": 1.0,
    "forward_backoff_base": 0.001,
    "forward_backoff_max": 0.01,
    # Off: most tests count requests of one round; test_batch_window.py has it on.
    "forward_batch_window_ms": 0,
}


@pytest.fixture
def settings(db_url: str) -> Settings:
    return make_settings(db_url, **FORWARD)


@contextlib.asynccontextmanager
async def harness_with(db_url: str, **overrides: Any) -> AsyncIterator[Harness]:
    async for harness in start_harness(make_settings(db_url, **{**FORWARD, **overrides})):
        yield harness


@pytest.fixture
async def h(settings: Settings) -> AsyncIterator[Harness]:
    async for harness in start_harness(settings):
        yield harness


@pytest.fixture
def secret() -> str:
    return new_secret()


@pytest.fixture
async def receiver(secret: str) -> AsyncIterator[WebhookReceiver]:
    r = WebhookReceiver(secret)
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
async def hec() -> AsyncIterator[HecEmulator]:
    r = HecEmulator("hec-token-" + uuid.uuid4().hex)
    await r.start()
    yield r
    await r.stop()


async def admin(h: Harness) -> dict[str, str]:
    cached: dict[str, str] | None = h.app.state.__dict__.get("_admin_headers")
    if cached is None:
        cached = await h.auth()
        h.app.state._admin_headers = cached
    return cached


async def create(h: Harness, **body: Any) -> dict[str, Any]:
    r = await h.client.post("/admin/forwarding/destinations", headers=await admin(h), json=body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


async def webhook(
    h: Harness, receiver: WebhookReceiver, *, sources: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    config = {"url": receiver.url + "/hook", **extra.pop("config", {})}
    return await create(
        h,
        name=extra.pop("name", "hook-" + uuid.uuid4().hex[:6]),
        kind="webhook",
        config=config,
        secrets={"webhook_secrets": [receiver.secret]},
        filter={"sources": sources if sources is not None else ["lms"]},
        **extra,
    )


def lms_event(i: int, **fields: Any) -> dict[str, Any]:
    return {
        "action": "exam.submitted",
        "actor_id": f"u{i}",
        "description": f"event {i}",
        "occurred_at": datetime.now(UTC).isoformat(),
        **fields,
    }


async def record(h: Harness, n: int, source: str = "lms", **fields: Any) -> None:
    await post_events(h, source, [lms_event(i, **fields) for i in range(n)])


async def sequence(h: Harness) -> None:
    await make_sequencer().catch_up(h.app.state.sessionmaker, no_fence)


def deliverer(h: Harness, **kw: Any) -> Deliverer:
    return Deliverer(h.app.state.sessionmaker, h.app.state.settings, **kw)


async def deliver(h: Harness, d: Deliverer | None = None, rounds: int = 1) -> int:
    d = d or deliverer(h)
    total = 0
    for _ in range(rounds):
        await sequence(h)
        total += await d.run_once()
    return total


async def until(h: Harness, check: Any, seconds: float = 10.0, d: Deliverer | None = None) -> None:
    """Delivery rounds until `check()` holds."""
    d = d or deliverer(h)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        assert loop.time() < deadline, "delivery did not get there in time"
        await deliver(h, d)
        await asyncio.sleep(0.01)


async def event_ids(h: Harness, source: str = "lms") -> list[str]:
    """event_ids of the source's events, in log order."""
    async with h.app.state.sessionmaker() as session:
        rows = await session.execute(
            select(AuditEvent.event_id)
            .join(AuditLeaf, AuditLeaf.event_pk == AuditEvent.id)
            .where(AuditEvent.source == source)
            .order_by(AuditLeaf.position)
        )
        return [str(r[0]) for r in rows]


async def destination_row(h: Harness, destination_id: int) -> dict[str, Any]:
    r = await h.client.get(
        f"/admin/forwarding/destinations/{destination_id}/status", headers=await admin(h)
    )
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out
