from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from audit_service.audit_log.models import AuditEvent
from audit_service.audit_log.repository import EventFilters
from audit_service.kit.net import parse_ip_or_network

Outcome = Literal["success", "failure", "denied", "error"]
PAGE_SIZES = (10, 20, 50, 100)


class ActivityQuery(BaseModel):
    """Filters for the activity history; unknown parameters are refused (typos must not
    silently widen a search)."""

    model_config = ConfigDict(extra="forbid")

    actor: str | None = Field(default=None, max_length=200, description="Actor id or name, exact")
    action: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Repeatable: action=auth.login&action=auth.logout",
    )
    module: str | None = Field(default=None, max_length=50)
    outcome: Outcome | None = None
    source: str | None = Field(default=None, max_length=100)
    tenant_id: str | None = Field(default=None, max_length=100)
    since: AwareDatetime | None = Field(default=None, description="Inclusive, ISO 8601 with offset")
    until: AwareDatetime | None = Field(default=None, description="Exclusive, ISO 8601 with offset")
    ip: str | None = Field(default=None, max_length=64, description="An address or a CIDR network")
    q: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Case-insensitive text in the description (literal)",
    )
    target_type: str | None = Field(default=None, max_length=100)
    target_id: str | None = Field(default=None, max_length=200)
    page: int = Field(default=1, ge=1, le=100_000)
    page_size: int = Field(
        default=20,
        json_schema_extra={"enum": list(PAGE_SIZES)},
        description="One of 10, 20, 50, 100",
    )

    @field_validator("page_size")
    @classmethod
    def _page_size(cls, value: int) -> int:
        if value not in PAGE_SIZES:
            raise ValueError(f"page_size must be one of {', '.join(map(str, PAGE_SIZES))}")
        return value

    @field_validator("action")
    @classmethod
    def _actions(cls, value: list[str]) -> list[str]:
        for a in value:
            if not 1 <= len(a) <= 100:
                raise ValueError("each action is 1 to 100 characters")
        return value

    @field_validator("ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_ip_or_network(value)
            except ValueError:
                raise ValueError("not an IP address or CIDR network (e.g. 10.0.0.0/8)") from None
        return value

    @model_validator(mode="after")
    def _range(self) -> ActivityQuery:
        if self.since and self.until and self.since > self.until:
            raise ValueError("since must not be after until")
        return self

    def to_filters(self) -> EventFilters:
        return EventFilters(
            actor=self.actor,
            actions=tuple(self.action),
            module=self.module,
            outcome=self.outcome,
            source=self.source,
            tenant_id=self.tenant_id,
            since=self.since,
            until=self.until,
            ip=parse_ip_or_network(self.ip) if self.ip else None,
            q=self.q,
            target_type=self.target_type,
            target_id=self.target_id,
        )

    def applied(self) -> dict[str, Any]:
        """The filters actually given, for the `activity.viewed` event."""
        return self.model_dump(mode="json", exclude_defaults=True, exclude={"page", "page_size"})


class EventOut(BaseModel):
    id: int
    event_id: uuid.UUID
    occurred_at: datetime
    recorded_at: datetime
    source: str
    tenant_id: str | None
    actor_type: str
    actor_id: str | None
    actor_name: str | None
    actor_role: str | None
    action: str
    module: str
    outcome: Outcome
    description: str | None
    target_type: str | None
    target_id: str | None
    ip: str | None
    user_agent: str | None
    request_id: str | None
    method: str | None
    path: str | None
    status_code: int | None
    latency_ms: float | None
    metadata: dict[str, Any]
    idempotency_key: str | None

    @classmethod
    def of(cls, e: AuditEvent) -> EventOut:
        return cls(
            id=e.id,
            event_id=e.event_id,
            occurred_at=e.occurred_at,
            recorded_at=e.recorded_at,
            source=e.source,
            tenant_id=e.tenant_id,
            actor_type=e.actor_type,
            actor_id=e.actor_id,
            actor_name=e.actor_name,
            actor_role=e.actor_role,
            action=e.action,
            module=e.module,
            outcome=e.outcome,
            description=e.description,
            target_type=e.target_type,
            target_id=e.target_id,
            ip=e.ip,
            user_agent=e.user_agent,
            request_id=e.request_id,
            method=e.method,
            path=e.path,
            status_code=e.status_code,
            latency_ms=e.latency_ms,
            metadata=e.event_metadata or {},
            idempotency_key=e.idempotency_key,
        )


class EventPage(BaseModel):
    items: list[EventOut]
    page: int
    page_size: int
    total: int
    total_is_estimate: bool = False
