"""Alert notification test setup: an app that may send to loopback with short grouping
timers, a real SMTP server (aiosmtpd), a real webhook receiver that verifies signatures with
the `standardwebhooks` library, and helpers to raise alerts and run delivery rounds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import select

from audit_service.core.config import Settings
from audit_service.kit.webhooks import new_secret
from audit_service.notifications.delivery import Deliverer
from audit_service.notifications.models import NotificationGroup
from tests.conftest import Harness, make_settings, start_harness
from tests.detections.helpers import evaluate, failures, post
from tests.forwarding.receivers import WebhookReceiver
from tests.reports.smtp import SmtpServer, smtp

__all__ = ["smtp"]

FAST = {
    "forward_allow_private": "127.0.0.0/8",
    "forward_timeout": 2.0,
    "alert_group_wait": 0.0,
    "alert_group_interval": 0.0,
    "alert_repeat_interval": 3600.0,
    "alert_backoff_base": 0.001,
    "alert_backoff_max": 0.01,
    "alert_claim_seconds": 30.0,
    "smtp_timeout": 5.0,
}


def settings_for(db_url: str, smtp: SmtpServer | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {**FAST, **overrides}
    if smtp is not None:
        values.setdefault("smtp_url", smtp.url)
    return make_settings(db_url, **values)


@pytest.fixture
def settings(db_url: str, smtp: SmtpServer) -> Settings:
    return settings_for(db_url, smtp)


@pytest.fixture
async def h(settings: Settings) -> AsyncIterator[Harness]:
    async for harness in start_harness(settings):
        yield harness


@contextlib.asynccontextmanager
async def harness_with(db_url: str, smtp: SmtpServer, **overrides: Any) -> AsyncIterator[Harness]:
    async for harness in start_harness(settings_for(db_url, smtp, **overrides)):
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


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def admin(h: Harness) -> dict[str, str]:
    cached: dict[str, str] | None = h.app.state.__dict__.get("_admin_headers")
    if cached is None:
        cached = await h.auth()
        h.app.state._admin_headers = cached
    return cached


async def create(h: Harness, **body: Any) -> dict[str, Any]:
    r = await h.client.post("/admin/alerts/channels", headers=await admin(h), json=body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


async def webhook_channel(h: Harness, receiver: WebhookReceiver, **body: Any) -> dict[str, Any]:
    return await create(
        h,
        name=body.pop("name", "hook"),
        kind="webhook",
        url=body.pop("url", receiver.url + "/alerts"),
        secrets=[receiver.secret],
        **body,
    )


async def email_channel(h: Harness, **body: Any) -> dict[str, Any]:
    return await create(
        h,
        name=body.pop("name", "mail"),
        kind="email",
        recipients=body.pop("recipients", ["soc@example.com"]),
        **body,
    )


async def brute_force(h: Harness, ip: str, n: int = 10, user: str = "alice") -> None:
    """`n` failed logins from `ip` (≥ 10: a brute_force_ip alert, medium), evaluated."""
    await post(h, failures(ip, user, n))
    await evaluate(h)


def deliverer(h: Harness, **kw: Any) -> Deliverer:
    kw.setdefault("rng", lambda: 0.0)
    return Deliverer(h.app.state.sessionmaker, h.app.state.settings, **kw)


async def until(
    check: Callable[[], bool], h: Harness, seconds: float = 10.0, d: Deliverer | None = None
) -> None:
    d = d or deliverer(h)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        assert loop.time() < deadline, "the notification did not arrive in time"
        await d.run_once()
        await asyncio.sleep(0.02)


def bodies(receiver: WebhookReceiver) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in receiver.accepted]


async def groups(h: Harness) -> list[NotificationGroup]:
    async with h.app.state.sessionmaker() as session:
        return list((await session.scalars(select(NotificationGroup))).all())
