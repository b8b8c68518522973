from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    Field,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from audit_service.audit_log.models import AuditEvent
from audit_service.audit_log.repository import EventFilters
from audit_service.kit import age
from audit_service.kit.net import parse_ip_or_network
from audit_service.kit.schemas import InputModel, check_actions, iso_8601_only

Outcome = Literal["success", "failure", "denied", "error"]
PAGE_SIZES = (10, 20, 50, 100)
# OFFSET pagination reads and discards every skipped row; past this, keyset cursors.
MAX_OFFSET_ROWS = 10_000


MAX_ID = 2**63 - 1


def _event_ref(value: Any) -> int | uuid.UUID:
    # One error naming the path parameter, instead of one per branch of an int | UUID union.
    text = str(value).strip()
    if text.isascii() and text.isdigit():
        number = int(text)
        if 1 <= number <= MAX_ID:
            return number
    else:
        try:
            return uuid.UUID(text)
        except ValueError:
            pass
    raise ValueError(f"must be an event_id (UUID) or an id from 1 to {MAX_ID}")


EventRef = Annotated[
    int | uuid.UUID,
    PlainValidator(_event_ref),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "uuid"},
                {"type": "integer", "minimum": 1, "maximum": MAX_ID},
            ]
        }
    ),
]


class ActivityFilters(InputModel):
    """Filters for the activity history; unknown parameters are refused (typos must not
    silently widen a search)."""

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
    request_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Exact: every event one request recorded (the X-Request-ID it answered)",
    )
    exclude_actor: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list,
        max_length=50,
        description="Repeatable: leave out events whose actor id or name is one of these",
    )
    exclude_action: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Repeatable: leave out these actions",
    )
    exclude_ip: str | None = Field(
        default=None,
        max_length=64,
        description="Leave out this address or CIDR network (events with no IP stay)",
    )

    @field_validator("action", "exclude_action")
    @classmethod
    def _actions(cls, value: list[str]) -> list[str]:
        return check_actions(value)

    @field_validator("since", "until", mode="before")
    @classmethod
    def _iso_8601_only(cls, value: Any) -> Any:
        return iso_8601_only(value)

    @field_validator("since", "until")
    @classmethod
    def _utc_representable(cls, value: datetime | None) -> datetime | None:
        # 9999-12-31T23:59:59-05:00 parses but has no UTC equivalent to compare with (500).
        if value is not None:
            try:
                value.astimezone(UTC)
            except OverflowError:
                raise ValueError("out of range once converted to UTC") from None
        return value

    @field_validator("ip", "exclude_ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_ip_or_network(value)
            except ValueError:
                raise ValueError("not an IP address or CIDR network (e.g. 10.0.0.0/8)") from None
        return value

    @field_validator("until")
    @classmethod
    def _range(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        # A field validator (not a model one) so the 422 names the field: ["query", "until"].
        since = info.data.get("since")
        if since is not None and value is not None and since > value:
            raise ValueError("until must not be before since")
        return value

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
            request_id=self.request_id,
            exclude_actors=tuple(self.exclude_actor),
            exclude_actions=tuple(self.exclude_action),
            exclude_ip=parse_ip_or_network(self.exclude_ip) if self.exclude_ip else None,
        )

    def applied(self) -> dict[str, Any]:
        """The filters actually given (for events, export metadata and cursor binding)."""
        return self.model_dump(
            mode="json", exclude_defaults=True, include=set(ActivityFilters.model_fields)
        )


class ActivityQuery(ActivityFilters):
    page: int = Field(
        default=1, ge=1, description=f"Shallow pages only: page * page_size ≤ {MAX_OFFSET_ROWS}"
    )
    page_size: int = Field(
        default=20,
        json_schema_extra={"enum": list(PAGE_SIZES)},
        description="One of 10, 20, 50, 100",
        validate_default=True,  # the page-depth check needs to run with the default too
    )
    cursor: str | None = Field(
        default=None,
        max_length=512,
        description="`next_cursor` or `prev_cursor` of a previous page: any depth, no OFFSET",
    )
    last: bool = Field(default=False, description="The last page (the oldest events)")

    @field_validator("page_size")
    @classmethod
    def _page_size(cls, value: int, info: ValidationInfo) -> int:
        if value not in PAGE_SIZES:
            raise ValueError(f"page_size must be one of {', '.join(map(str, PAGE_SIZES))}")
        if info.data.get("page", 1) * value > MAX_OFFSET_ROWS:
            raise ValueError(
                f"page * page_size may not pass {MAX_OFFSET_ROWS}: follow next_cursor "
                "(or use last=true) for deeper pages"
            )
        return value

    @field_validator("cursor", "last")
    @classmethod
    def _one_way_to_navigate(cls, value: Any, info: ValidationInfo) -> Any:
        others = (info.data.get("page", 1) > 1, info.data.get("cursor") is not None)
        if value and any(others):
            raise ValueError("use only one of page, cursor and last")
        return value


ExportFormat = Literal["csv", "xlsx", "json", "ndjson", "bundle"]
MAX_RECIPIENT_ID = 2**31 - 1


class ExportQuery(ActivityFilters):
    format: ExportFormat = Field(
        default="csv",
        description="`bundle`: a signed tar of the events' leaf entries with range proofs "
        "against the newest signed checkpoint, checkable offline with `audit-service "
        "verify-bundle` (events not yet covered by a checkpoint are left out)",
    )
    gzip: bool = Field(default=False, description="Compress the file (.gz)")
    bom: bool = Field(default=False, description="CSV: start with a UTF-8 BOM (for Excel)")
    comments: bool = Field(
        default=False, description="CSV: begin with '#' lines describing the export"
    )
    rows: bool = Field(
        default=True,
        description="bundle: include the readable rows, personal values in clear with the "
        "salts that prove them; false: leaf entries only (personal values stay committed)",
    )
    recipient: int | None = Field(
        default=None,
        ge=1,
        le=MAX_RECIPIENT_ID,
        description="Encrypt the file (age) to this registered export recipient "
        "(GET /admin/export-recipients); the file then ends in .age",
    )


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
    client_request_id: str | None = Field(
        default=None, description="The caller's own X-Request-ID, when it sent a valid one"
    )
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
            client_request_id=e.client_request_id,
            method=e.method,
            path=e.path,
            status_code=e.status_code,
            latency_ms=e.latency_ms,
            metadata=e.event_metadata or {},
            idempotency_key=e.idempotency_key,
        )


class EventDetail(EventOut):
    """One event, with where it stands in the tamper-evident log."""

    log_position: int | None = Field(
        description="The event's position in the signed log (its leaf index; "
        "GET /admin/integrity/events/{event_id}/proof proves it); null until the sequencer "
        "has appended it, within about a second of its commit"
    )


class EventPage(BaseModel):
    items: list[EventOut]
    page: int | None = Field(description="The page number; null when reached by cursor")
    page_size: int
    total: int
    total_is_estimate: bool = Field(
        description=f"true when more than {MAX_OFFSET_ROWS} events match: `total` is then "
        "the database's estimate rather than a count"
    )
    next_cursor: str | None = Field(description="Older events; null on the last page")
    prev_cursor: str | None = Field(description="Newer events; null on the first page")


class ExportInfo(BaseModel):
    """The `export` object at the head of a JSON export (the X-Export-* headers carry the same
    facts for the other formats)."""

    exported_by: str
    exported_at: datetime
    filters: dict[str, Any] = Field(description="The filters applied, as given")
    row_count: int = Field(description="Exactly the number of events that follow")
    service_version: str
    format: ExportFormat
    order: Literal["newest first"]


class ActivityExport(BaseModel):
    """A JSON export: `format=json`. Each event has exactly the export's columns."""

    export: ExportInfo
    events: list[EventOut]


class RecipientIn(InputModel):
    name: str = Field(
        min_length=1,
        max_length=200,
        description="Who holds the private key",
        examples=["External auditor (Example LLP)"],
    )
    public_key: str = Field(
        max_length=200,
        description="An age X25519 recipient, as `age-keygen` prints it (`age1…`)",
        examples=["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"],
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("name must not be blank")
        return value

    @field_validator("public_key")
    @classmethod
    def _public_key(cls, value: str) -> str:
        return age.parse_recipient(value)


class RecipientOut(BaseModel):
    id: int
    name: str
    public_key: str
    fingerprint: str = Field(
        description="`sha256:` + SHA-256 of `public_key`; export events record it"
    )
    created_at: datetime
    created_by: str | None

    def public(self) -> dict[str, Any]:
        """What a config.changed event shows as before/after."""
        return self.model_dump(mode="json")


class RecipientList(BaseModel):
    items: list[RecipientOut]
