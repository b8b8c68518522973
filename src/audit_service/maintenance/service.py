"""Maintenance mode rules: who may change it, what each change records.

Callers pass the `Actor` making the change, so the API and the CLI share the same rules and
leave the same `system.maintenance_started` / `system.maintenance_ended` events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.audit_log import repository as events
from audit_service.audit_log.context import Actor, system_event
from audit_service.kit.models import utcnow
from audit_service.maintenance import repository

log = logging.getLogger(__name__)

KEY = "maintenance"
DEFAULT_MESSAGE = "The service is down for maintenance; please try again later."
RETRY_AFTER_SECONDS = 60
# How long a replica may answer from its cached state: another replica's change is seen
# within this time (plus one database read).
CACHE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class MaintenanceState:
    enabled: bool = False
    message: str | None = None
    changed_at: datetime | None = None
    changed_by: str | None = None

    @property
    def client_message(self) -> str:
        return self.message or DEFAULT_MESSAGE

    def public(self) -> dict[str, Any]:
        """The values a config.changed event shows as before/after."""
        return {"enabled": self.enabled, "message": self.message}


def _from_value(value: dict[str, Any] | None) -> MaintenanceState:
    if not value:
        return MaintenanceState()
    changed_at = value.get("changed_at")
    return MaintenanceState(
        enabled=bool(value.get("enabled")),
        message=value.get("message"),
        changed_at=datetime.fromisoformat(changed_at) if changed_at else None,
        changed_by=value.get("changed_by"),
    )


async def get_state(session: AsyncSession) -> MaintenanceState:
    return _from_value(await repository.get(session, KEY))


async def set_state(
    session: AsyncSession, actor: Actor, *, enabled: bool, message: str | None
) -> tuple[MaintenanceState, MaintenanceState]:
    """Store the new state (in the caller's transaction) and record its start or end.

    Returns (before, after); the caller records the change itself as `config.changed`.
    """
    row = await repository.get_for_update(session, KEY)
    before = _from_value(dict(row.value) if row is not None else None)
    message = (message or "").strip() or None
    if before.enabled == enabled and before.message == message:
        return before, before
    after = MaintenanceState(
        enabled=enabled,
        message=message,
        # The start of this maintenance window: a new message alone does not move it.
        changed_at=before.changed_at if before.enabled == enabled else utcnow(),
        changed_by=actor.name,
    )
    value = asdict(after)
    value["changed_at"] = after.changed_at.isoformat() if after.changed_at else None
    await repository.put(session, KEY, value, actor.name)
    if before.enabled != enabled:
        action = "system.maintenance_started" if enabled else "system.maintenance_ended"
        description = (
            f"Maintenance mode turned on: {after.client_message}"
            if enabled
            else "Maintenance mode turned off"
        )
        await events.insert_events(
            session,
            [
                system_event(
                    action,
                    "system",
                    description,
                    actor=actor,
                    target_type="setting",
                    target_id=KEY,
                    message=message,
                )
            ],
        )
    return before, after


class MaintenanceCache:
    """Per-process view of the state, read from the database at most every CACHE_SECONDS.

    One reader refreshes at a time; the others keep answering from the last value, so a
    burst of requests costs one query, not one each.
    """

    def __init__(self, session_factory: Callable[[], AsyncSession]) -> None:
        self._session_factory = session_factory
        self._state = MaintenanceState()
        self._fetched = float("-inf")
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        self._fetched = float("-inf")

    async def current(self) -> MaintenanceState:
        if time.monotonic() - self._fetched < CACHE_SECONDS:
            return self._state
        if self._lock.locked() and self._fetched != float("-inf"):
            return self._state
        async with self._lock:
            if time.monotonic() - self._fetched >= CACHE_SECONDS:
                try:
                    async with self._session_factory() as session:
                        self._state = await get_state(session)
                except Exception as exc:
                    # The gate must not turn a database hiccup into a 500 of its own: keep
                    # the last known state and try again after the next interval.
                    log.warning("maintenance state not refreshed: %s", type(exc).__name__)
                self._fetched = time.monotonic()
        return self._state
