"""Request and response bodies of /admin/alerts/channels, and what detections hand to
`service.notify`. Secrets are write-only: responses say `secret_set`, never the value."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from audit_service.kit.schemas import InputModel, check_http_url
from audit_service.kit.smtp import valid_address
from audit_service.kit.webhooks import InvalidSecret, secret_key
from audit_service.notifications.models import NAME_LENGTH

Kind = Literal["email", "webhook"]
Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITIES: tuple[str, ...] = ("info", "low", "medium", "high", "critical")
MAX_RECIPIENTS = 50


@dataclass(frozen=True, slots=True)
class AlertNotice:
    """An alert as it is now, for the channels (detections builds it; notifications never
    read the detections' tables)."""

    alert_id: int
    rule_id: str
    severity: str
    status: str  # open / acknowledged / resolved
    title: str
    tenant_id: str | None
    source: str
    count: int
    first_seen_at: datetime
    last_seen_at: datetime
    activity_url: str | None = None
    entity: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    change: str = "updated"  # opened / reopened / updated / acknowledged / resolved


def _check_secrets(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    for secret in value:
        try:
            secret_key(secret)
        except InvalidSecret as exc:
            raise ValueError(str(exc)) from None
    return value


def _check_recipients(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    for address in value:
        if not valid_address(address):
            raise ValueError("each recipient is a plain e-mail address (name@example.com)")
    if len(set(value)) != len(value):
        raise ValueError("recipients must not repeat")
    return value


def _check_names(value: list[str] | None) -> list[str] | None:
    for v in value or []:
        if not 1 <= len(v) <= 100:
            raise ValueError("each value is 1 to 100 characters")
    return value


class _Checked(InputModel):
    @field_validator("url", check_fields=False)
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value)

    @field_validator("secrets", check_fields=False)
    @classmethod
    def _secrets(cls, value: list[str] | None) -> list[str] | None:
        return _check_secrets(value)

    @field_validator("recipients", check_fields=False)
    @classmethod
    def _recipients(cls, value: list[str] | None) -> list[str] | None:
        return _check_recipients(value)

    @field_validator("rules", "tenants", check_fields=False)
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        return _check_names(value)


class ChannelIn(_Checked):
    name: str = Field(min_length=1, max_length=NAME_LENGTH, examples=["SOC on-call"])
    kind: Kind
    recipients: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_RECIPIENTS,
        description="email: 1 to 50 addresses",
        examples=[["soc@example.com"]],
    )
    url: str | None = Field(
        default=None,
        max_length=2000,
        description="webhook: the endpoint (https://; http:// only to allow-listed private hosts)",
        examples=["https://hooks.example.com/alerts"],
    )
    secrets: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=2,
        description="webhook: 1 or 2 (rotation) Standard Webhooks secrets whsec_…; left out: "
        "one is generated and shown once in the response. Write-only.",
    )
    min_severity: Severity = "medium"
    rules: list[str] = Field(
        default_factory=list, max_length=50, description="Only these rules (empty: every rule)"
    )
    tenants: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Only alerts of these tenants (empty: every tenant)",
    )
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name must not be blank")
        return value.strip()


class ChannelUpdate(_Checked):
    """Only the fields given change (the kind cannot)."""

    name: str | None = Field(default=None, min_length=1, max_length=NAME_LENGTH)
    recipients: list[str] | None = Field(default=None, min_length=1, max_length=MAX_RECIPIENTS)
    url: str | None = Field(default=None, max_length=2000)
    secrets: list[str] | None = Field(default=None, min_length=1, max_length=2)
    min_severity: Severity | None = None
    rules: list[str] | None = Field(default=None, max_length=50)
    tenants: list[str] | None = Field(default=None, max_length=50)
    enabled: bool | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may be left out, not null")
        return value


class DeliveryStatus(BaseModel):
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    pending_groups: int = Field(description="Groups with changes not yet sent")
    failing_groups: int = Field(description="Groups whose last attempt failed (retried)")


class ChannelOut(BaseModel):
    id: int
    name: str
    kind: Kind
    recipients: list[str] | None
    url: str | None
    secret_set: bool = Field(description="Whether a webhook secret is set (never shown)")
    secrets_count: int = Field(description="How many webhook secrets are set (0 to 2)")
    min_severity: Severity
    rules: list[str]
    tenants: list[str]
    enabled: bool
    created_at: datetime
    created_by: str | None
    updated_at: datetime
    updated_by: str | None
    delivery: DeliveryStatus | None = Field(
        default=None, description="Delivery status (GET of one channel)"
    )

    def public(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"delivery"})


class ChannelCreated(ChannelOut):
    generated_secret: str | None = Field(
        default=None,
        description="The webhook secret generated because none was given: shown this once",
    )


class ChannelList(BaseModel):
    items: list[ChannelOut]


class ChannelTestOut(BaseModel):
    delivered: bool
    status_code: int | None = Field(description="The receiver's HTTP status (null: none)")
    elapsed_ms: float
    error: str | None
