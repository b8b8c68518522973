"""Retention test helpers: the default rules, a seeded two-year log with a fixed clock."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert

from audit_service.audit_log.context import system_event
from audit_service.audit_log.models import AuditEvent
from audit_service.core.config import Settings
from audit_service.integrity.jobs import log_signer
from audit_service.kit.net import ip_key, parse_ip
from audit_service.retention.models import RetentionPolicy
from tests.conftest import Harness, make_settings

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # the tests' clock (real events are later)
_MIGRATION = importlib.import_module("audit_service.migrations.versions.0022_retention")
# (action, outcome) mix: the catch-all, and each kind of critical class
KINDS = (
    ("item.viewed", "success"),
    ("item.viewed", "success"),
    ("item.updated", "success"),
    ("auth.login", "success"),
    ("auth.login_failed", "failure"),
    ("config.changed", "success"),
    ("item.deleted", "denied"),
    ("user.created", "success"),
)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(db_url, archive_dir=tmp_path / "archive")


async def reset_policies(h: Harness) -> None:
    """The migration's default rules (PostgreSQL tests truncate them)."""
    async with h.app.state.sessionmaker() as session:
        await session.execute(delete(RetentionPolicy))
        await session.execute(insert(RetentionPolicy), _MIGRATION._policies())
        await session.commit()


async def seed(
    h: Harness, n: int = 1200, days: int = 730, now: datetime = NOW, bursts: int = 24
) -> None:
    """`n` events recorded over the `days` before `now`, on `bursts` days spread evenly
    (few days keep the number of segments, and the tests, small), of every kind in KINDS,
    with IPs, user agents and user actors on some (their commitments in the leaves)."""
    gap = timedelta(days=days) / bursts
    rows: list[dict[str, Any]] = []
    for i in range(n):
        action, outcome = KINDS[i % len(KINDS)]
        at = now - timedelta(days=days) + gap * (i * bursts // n) + timedelta(seconds=7 * i)
        row = system_event(action, action.split(".")[0], f"seeded {i}", outcome=outcome)
        row.update(occurred_at=at, recorded_at=at, tenant_id=f"t{i % 3}")
        if i % 2:
            ip = f"198.51.100.{i % 250}" if i % 4 == 1 else f"2001:db8::{i:x}"
            row.update(
                actor_type="user",
                actor_id=str(100 + i % 5),
                actor_name=f"user-{i % 5}",
                ip=ip,
                ip_bytes=ip_key(parse_ip(ip)),
                user_agent=f"agent/{i % 7}",
                metadata={"n": i, "nested": {"x": [1, "ü"]}},
            )
        rows.append(row)
    async with h.app.state.sessionmaker() as session:
        await session.execute(insert(AuditEvent.__table__), rows)
        await session.commit()


def vkey(settings: Settings) -> str:
    return log_signer(settings).verifier.vkey
