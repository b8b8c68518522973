"""What other services post, what they get back, and the action-schema admin shapes."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from audit_service.audit_log.context import NATIVE_SOURCE
from audit_service.kit.models import utcnow
from audit_service.kit.net import parse_ip
from audit_service.kit.schemas import InputModel, json_problem

ACTION_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
MODULE_PATTERN = r"^[a-z][a-z0-9_-]{0,49}$"
# Printable ASCII without spaces: UUIDs, hashes, "order-42:shipped" …
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,128}$"
MAX_BATCH = 1000
MAX_FUTURE = timedelta(minutes=5)
METADATA_MAX_BYTES = 16 * 1024
METADATA_MAX_DEPTH = 8
USER_AGENT_MAX = 512
IP_MAX = 45  # audit_event.ip
# Older than any real event, and far enough from datetime.min that no offset conversion or
# date arithmetic (a viewer's time zone, a `since` a day earlier) can overflow.
MIN_OCCURRED_AT = datetime(1900, 1, 1, tzinfo=UTC)
# The service's own identity: only the service itself records events under it.
SERVICE_IDENTITY = NATIVE_SOURCE
# Filled in by the service on receipt; a caller may not supply (or forge) them.
RECEIVED_FROM, API_KEY_PREFIX = "received_from", "api_key_prefix"
RESERVED_METADATA_KEYS = (RECEIVED_FROM, API_KEY_PREFIX)

ActorType = Literal["user", "service", "system", "anonymous"]
Outcome = Literal["success", "failure", "denied", "error"]


def _text_only(value: Any) -> Any:
    # Without this a bare number would be read as a Unix timestamp; ISO 8601 text says
    # its offset out loud, which is the point.
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 string with a UTC offset")
    return value


def json_depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value (a scalar is 0), counting no further than `limit` + 1."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        )
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


class EventIn(InputModel):
    """One event, as a posting service describes it. Unknown fields (and NUL characters,
    which PostgreSQL cannot store) are refused."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "action": "exam.submitted",
                    "occurred_at": "2026-03-01T09:30:00+01:00",
                    "actor_id": "student-1042",
                    "actor_name": "Ada L.",
                    "actor_role": "student",
                    "target_type": "exam",
                    "target_id": "algebra-2",
                    "ip": "198.51.100.23",
                    "metadata": {"answers": 40, "duration_s": 3120},
                    "idempotency_key": "exam-2291:submitted",
                }
            ]
        },
    )

    action: str = Field(
        max_length=100,
        pattern=ACTION_PATTERN,
        description="Dotted lowercase `module.verb`, e.g. `exam.submitted`",
    )
    occurred_at: Annotated[AwareDatetime, BeforeValidator(_text_only)] = Field(
        description="When it happened: ISO 8601 with an offset, at most 5 minutes ahead"
    )
    actor_id: str = Field(min_length=1, max_length=200, description="Who did it")
    actor_type: ActorType = "user"
    actor_name: str | None = Field(default=None, max_length=200)
    actor_role: str | None = Field(default=None, max_length=50)
    module: str | None = Field(
        default=None, pattern=MODULE_PATTERN, description="Defaults to the action's first part"
    )
    outcome: Outcome = "success"
    description: str | None = Field(default=None, max_length=10_000)
    target_type: str | None = Field(default=None, max_length=100)
    target_id: str | None = Field(default=None, max_length=200)
    ip: str | None = Field(
        default=None, max_length=64, description="The end user's IP address (IPv4 or IPv6)"
    )
    user_agent: str | None = Field(
        default=None, description="The end user's user agent; cut to 512 characters"
    )
    tenant_id: str | None = Field(default=None, max_length=100)
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            f"A JSON object, at most {METADATA_MAX_BYTES // 1024} KiB and {METADATA_MAX_DEPTH} "
            "levels deep; checked against the action's registered schema, if any"
        ),
    )
    idempotency_key: str | None = Field(
        default=None,
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Stored once per service, forever: a replay returns the original event",
    )

    @field_validator("occurred_at")
    @classmethod
    def _storable_time(cls, value: datetime) -> datetime:
        try:
            # 0001-01-01T00:00+14:00 is a valid ISO 8601 text whose UTC instant is before
            # year 1 (and 9999-12-31T23:59-14:00 after 9999): Python cannot represent it.
            utc = value.astimezone(UTC)
        except (OverflowError, ValueError):
            raise ValueError("out of range once converted to UTC") from None
        if utc < MIN_OCCURRED_AT:
            raise ValueError(f"must not be before {MIN_OCCURRED_AT.isoformat()}")
        if utc > utcnow() + MAX_FUTURE:
            raise ValueError("must not be more than 5 minutes in the future")
        return utc

    @field_validator("actor_id")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("ip")
    @classmethod
    def _canonical_ip(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            canonical = str(parse_ip(value))
        except ValueError:
            raise ValueError("not an IPv4 or IPv6 address") from None
        # A scoped IPv6 address (fe80::1%<zone>) can be valid and still too long to store.
        if len(canonical) > IP_MAX:
            raise ValueError(f"must be at most {IP_MAX} characters")
        return canonical

    @field_validator("actor_id", "actor_name")
    @classmethod
    def _not_the_service(cls, value: str | None) -> str | None:
        # Events the service records itself carry this identity; a posted event must not be
        # able to pass for one of them.
        if value is not None and value.strip().lower() == SERVICE_IDENTITY:
            raise ValueError(f"'{SERVICE_IDENTITY}' is the service's own identity")
        return value

    @field_validator("actor_type")
    @classmethod
    def _not_system(cls, value: str) -> str:
        if value == "system":
            raise ValueError("'system' events are recorded by the service itself")
        return value

    @field_validator("user_agent")
    @classmethod
    def _cap_user_agent(cls, value: str | None) -> str | None:
        return value[:USER_AGENT_MAX] if value is not None else None

    @field_validator("metadata")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            return value
        reserved = [key for key in RESERVED_METADATA_KEYS if key in value]
        if reserved:
            raise ValueError(f"{', '.join(reserved)} is set by the service, not the caller")
        problem = json_problem(value, METADATA_MAX_DEPTH)
        if problem is not None:
            raise ValueError(problem)
        if json_depth(value, METADATA_MAX_DEPTH) > METADATA_MAX_DEPTH:
            raise ValueError(f"must not be nested more than {METADATA_MAX_DEPTH} levels deep")
        if json_size(value) > METADATA_MAX_BYTES:
            raise ValueError(f"must be at most {METADATA_MAX_BYTES} bytes as JSON")
        return value

    @model_validator(mode="after")
    def _default_module(self) -> EventIn:
        if self.module is None:
            self.module = self.action.split(".", 1)[0][:50]
        return self


class EventBatch(InputModel):
    events: list[EventIn] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description=f"1 to {MAX_BATCH} events; all are stored, or (any invalid) none",
    )


class EventAccepted(BaseModel):
    id: int = Field(description="The event's position in the record (`/admin/activity/{id}`)")
    event_id: uuid.UUID
    duplicate: bool = Field(
        description="True when the idempotency key was already stored: these are its ids"
    )


class BatchItemResult(EventAccepted):
    index: int = Field(description="The event's position in the posted batch")


class BatchAccepted(BaseModel):
    inserted: int
    duplicates: int
    results: list[BatchItemResult] = Field(description="One per posted event, in input order")


# --- action schemas (admin) ----------------------------------------------------------------

ACTION_SCHEMA_MAX_BYTES = 16 * 1024


class ActionSchemaOut(BaseModel):
    action: str
    json_schema: dict[str, Any] = Field(
        alias="schema", description="A JSON Schema the metadata of this action's events must match"
    )
    created_at: datetime
    updated_at: datetime
    updated_by: int | None

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class ActionOut(BaseModel):
    action: str
    module: str | None = Field(description="The module its latest event carries")
    event_count: int
    event_count_is_estimate: bool = Field(
        description="true past 10,000 events: the count is then PostgreSQL's estimate"
    )
    json_schema: dict[str, Any] | None = Field(alias="schema")
    schema_updated_at: datetime | None

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class ActionList(BaseModel):
    items: list[ActionOut]
