"""Where a service says what it did: the event sink.

Services take an `Actor` (who acts) and an `EventSink` (where the event about it goes), never
the HTTP-shaped request audit, so the CLI and background jobs run the very same rules:

- in a request, the sink is the request's `RequestAudit`: the recorder middleware stores the
  event with the request's facts (IP, status, latency) before the response starts;
- elsewhere, `SessionEventSink` stores it as a system event in the caller's session, so it
  commits atomically with the change it describes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.audit_log import repository
from audit_service.audit_log.context import Actor, apply_description, system_event


class EventSink(Protocol):
    """What a service may say about the event its work becomes."""

    # Who the event names. Services that establish the principal (login, token checks) set it.
    actor: Actor

    def describe(
        self,
        *,
        action: str | None = None,
        module: str | None = None,
        outcome: str | None = None,
        description: str | None = None,
        target_type: str | None = None,
        target_id: str | None = None,
        **metadata: Any,
    ) -> None: ...


@dataclass(slots=True)
class SessionEventSink:
    """Collects one event like `RequestAudit` does, and `write()` inserts it into `session`.

    `action` and `module` are the defaults (what a route's `audited()` is to a request); the
    service may override them, as `update_user` does with `user.deactivated`.
    """

    session: AsyncSession
    actor: Actor
    action: str
    module: str
    outcome: str | None = None
    description: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def describe(
        self,
        *,
        action: str | None = None,
        module: str | None = None,
        outcome: str | None = None,
        description: str | None = None,
        target_type: str | None = None,
        target_id: str | None = None,
        **metadata: Any,
    ) -> None:
        apply_description(
            self,
            action=action,
            module=module,
            outcome=outcome,
            description=description,
            target_type=target_type,
            target_id=target_id,
            metadata=metadata,
        )

    async def write(self, *, outcome: str | None = None) -> None:
        """Insert the event (flushes, never commits: the caller's commit makes it durable)."""
        await repository.insert_events(
            self.session,
            [
                system_event(
                    self.action,
                    self.module,
                    self.description or self.action,
                    actor=self.actor,
                    outcome=outcome or self.outcome or "success",
                    target_type=self.target_type,
                    target_id=self.target_id,
                    **self.metadata,
                )
            ],
        )
