"""Request and response bodies of /admin/forwarding. Secrets are write-only: responses say
`secret_set`, never the value."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, Field, field_validator, model_validator

from audit_service.audit_log.models import OUTCOMES
from audit_service.forwarding.models import NAME_LENGTH
from audit_service.kit.schemas import InputModel, check_actions, check_http_url, iso_8601_only

Kind = Literal["webhook", "syslog", "splunk_hec"]
Format = Literal["native", "ocsf", "ecs", "cef"]
State = Literal["active", "paused", "failing", "disabled"]
ReplayState = Literal["running", "done", "failed"]
Outcome = Literal["success", "failure", "denied", "error"]
assert set(OUTCOMES) == {"success", "failure", "denied", "error"}
MAX_BATCH = 500
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}")
# Headers the sender sets itself: a custom header must not replace them.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "authorization",
    }
)


class FilterIn(InputModel):
    """Which events a destination gets, in the activity filter vocabulary (each list: any of
    its values; lists combine with AND; empty: everything). Unknown fields are refused."""

    actions: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Exact actions, or prefixes ending in '.*' (auth.*)",
    )
    modules: list[str] = Field(default_factory=list, max_length=50)
    outcomes: list[Outcome] = Field(default_factory=list, max_length=4)
    sources: list[str] = Field(default_factory=list, max_length=50)
    tenants: list[str] = Field(default_factory=list, max_length=50)

    @field_validator("actions")
    @classmethod
    def _actions(cls, value: list[str]) -> list[str]:
        return check_actions(value)

    @field_validator("modules", "sources", "tenants")
    @classmethod
    def _values(cls, value: list[str]) -> list[str]:
        for v in value:
            if not 1 <= len(v) <= 100:
                raise ValueError("each value is 1 to 100 characters")
        return value


class ConfigIn(InputModel):
    """Kind-specific settings (the fields of other kinds must be left out)."""

    url: str | None = Field(
        default=None,
        max_length=2000,
        description="webhook: the endpoint; splunk_hec: the base URL (…/services/collector/event "
        "is appended)",
        examples=["https://siem.example.com/hooks/audit"],
    )
    headers: dict[str, str] | None = Field(
        default=None, description="webhook: extra request headers (not secret: they are shown)"
    )
    batch_size: int | None = Field(default=None, ge=1, le=MAX_BATCH)
    batch: bool | None = Field(
        default=None,
        description="webhook: a JSON array per request (true, default) or one object each",
    )
    host: str | None = Field(default=None, min_length=1, max_length=253, description="syslog")
    port: int | None = Field(default=None, ge=1, le=65535, description="syslog")
    transport: Literal["tls", "tcp", "udp"] | None = Field(default=None, description="syslog")
    ca_file: str | None = Field(
        default=None, max_length=1000, description="syslog TLS: a PEM file of CAs to trust"
    )
    server_name: str | None = Field(default=None, max_length=253, description="syslog TLS")
    index: str | None = Field(default=None, max_length=100, description="splunk_hec")
    sourcetype: str | None = Field(default=None, max_length=100, description="splunk_hec")
    hec_host: str | None = Field(default=None, max_length=253, description="splunk_hec `host`")
    hec_ack: bool | None = Field(
        default=None,
        description="splunk_hec: indexer acknowledgement: the cursor moves only once HEC "
        "says the batch is indexed (polls /services/collector/ack; not acknowledged within "
        "AUDIT_FORWARD_HEC_ACK_TIMEOUT: sent again)",
    )
    hec_channel: str | None = Field(
        default=None,
        max_length=36,
        examples=["6f1c2a9e-2d3b-4f5a-8c7d-1e2f3a4b5c6d"],
        description="splunk_hec with hec_ack: the X-Splunk-Request-Channel GUID (default: "
        "one derived from the destination id)",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return (
            None
            if value is None
            else check_http_url(value, credentials=": use headers or the token")
        )

    @field_validator("hec_channel")
    @classmethod
    def _channel(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError("a HEC channel is a GUID") from None

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > 20:
            raise ValueError("at most 20 headers")
        for name, v in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError("a header name is 1 to 100 token characters")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"header {name} is set by the sender")
            if len(v) > 2000 or any(c in v for c in "\r\n\x00"):
                raise ValueError("a header value is at most 2000 characters, without CR/LF")
        return value


class SecretsIn(InputModel):
    """Write-only: stored, never shown, never recorded."""

    webhook_secrets: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=2,
        description="webhook: 1 or 2 (during a rotation) Standard Webhooks secrets whsec_…; "
        "left out at creation: one is generated and shown once in the response",
    )
    hec_token: str | None = Field(default=None, min_length=1, max_length=200)

    @field_validator("webhook_secrets")
    @classmethod
    def _secrets(cls, value: list[str] | None) -> list[str] | None:
        from audit_service.kit.webhooks import InvalidSecret, secret_key

        for s in value or []:
            try:
                secret_key(s)
            except InvalidSecret as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("hec_token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is not None and any(c in value for c in "\r\n\x00 "):
            raise ValueError("a HEC token has no spaces or line breaks")
        return value


class DestinationIn(InputModel):
    name: str = Field(min_length=1, max_length=NAME_LENGTH, examples=["Splunk prod"])
    kind: Kind
    format: Format = "native"
    config: ConfigIn
    secrets: SecretsIn = Field(default_factory=SecretsIn)
    filter: FilterIn = Field(default_factory=FilterIn)
    start: Literal["end", "beginning"] = Field(
        default="end",
        description="Deliver events from now on (end, default) or the whole retained log",
    )
    paused: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name must not be blank")
        return value.strip()


class DestinationUpdate(InputModel):
    """Only the fields given change; `config` and `secrets` fields are merged (a field set to
    null is cleared)."""

    name: str | None = Field(default=None, min_length=1, max_length=NAME_LENGTH)
    format: Format | None = None
    config: ConfigIn | None = None
    secrets: SecretsIn | None = None
    filter: FilterIn | None = None

    @field_validator("name", "format", "config", "secrets", "filter", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may be left out, not null")
        return value


class DestinationOut(BaseModel):
    id: int
    name: str
    kind: Kind
    format: Format
    config: dict[str, Any]
    secret_set: bool = Field(description="Whether a secret (webhook secrets, HEC token) is set")
    secrets_count: int = Field(description="How many webhook secrets are set (0 to 2)")
    filter: dict[str, Any]
    state: State
    cursor: int = Field(description="The last log position handled (-1: none yet)")
    created_at: datetime
    created_by: str | None
    updated_at: datetime
    updated_by: str | None

    def public(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class DestinationCreated(DestinationOut):
    generated_secret: str | None = Field(
        default=None,
        description="The webhook secret generated because none was given: shown this once",
    )


class DestinationList(BaseModel):
    items: list[DestinationOut]


class StatusOut(BaseModel):
    id: int
    state: State
    cursor: int
    log_size: int = Field(description="Positions in the log")
    backlog: int = Field(description="Log positions after the cursor (before filtering)")
    lag_seconds: float = Field(description="Age of the oldest event not yet handled (0: none)")
    delivered: int
    failed: int = Field(description="Failed attempts (retried) and dead-lettered events")
    dead_letters: int
    attempts: int = Field(description="Failed attempts in a row")
    last_success_at: datetime | None
    last_error: str | None
    failing_since: datetime | None
    next_attempt_at: datetime | None


class TestOut(BaseModel):
    delivered: bool
    status_code: int | None = Field(description="The receiver's HTTP status (null: none)")
    elapsed_ms: float
    error: str | None
    event_id: str


class DeadLetterOut(BaseModel):
    id: int
    destination_id: int
    position: int
    event_pk: int
    event_id: str | None
    action: str | None
    reason: str
    attempts: int
    created_at: datetime
    updated_at: datetime


class DeadLetterList(BaseModel):
    items: list[DeadLetterOut]


class RetryOut(BaseModel):
    delivered: bool
    status_code: int | None
    error: str | None


class ReplayIn(InputModel):
    """A range of the log, by position (inclusive) or by time (recorded_at, since inclusive,
    until exclusive): one of the two."""

    from_position: int | None = Field(default=None, ge=0, le=2**62)
    to_position: int | None = Field(default=None, ge=0, le=2**62)
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None

    @field_validator("since", "until", mode="before")
    @classmethod
    def _iso(cls, value: Any) -> Any:
        return iso_8601_only(value)

    @field_validator("since", "until")
    @classmethod
    def _utc_representable(cls, value: datetime | None) -> datetime | None:
        if value is not None:
            try:
                value.astimezone(UTC)
            except OverflowError:
                raise ValueError("out of range once converted to UTC") from None
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> ReplayIn:
        by_position = self.from_position is not None or self.to_position is not None
        by_time = self.since is not None or self.until is not None
        if by_position == by_time:
            raise ValueError("give from_position and to_position, or since and until")
        if by_position and (self.from_position is None or self.to_position is None):
            raise ValueError("give both from_position and to_position")
        if by_time and (self.since is None or self.until is None):
            raise ValueError("give both since and until")
        return self


class ReplayOut(BaseModel):
    id: int
    destination_id: int
    from_position: int
    to_position: int
    cursor: int
    state: ReplayState
    delivered: int
    progress: float = Field(description="Share of the range handled, 0 to 1")
    last_error: str | None
    created_at: datetime
    created_by: str | None
    finished_at: datetime | None


class ReplayList(BaseModel):
    items: list[ReplayOut]
