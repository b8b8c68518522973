from __future__ import annotations

import re
import zoneinfo
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from audit_service.kit.schemas import InputModel
from audit_service.kit.smtp import valid_address
from audit_service.reports.models import NAME_LENGTH

Kind = Literal["daily", "weekly", "monthly"]
RunStatus = Literal["pending", "sending", "sent", "failed"]
MAX_RECIPIENTS = 50
_TIME = re.compile(r"([01]\d|2[0-3]):[0-5]\d")


def _check_zone(value: str | None) -> str | None:
    if value is not None:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("not an IANA time zone name (e.g. Europe/Berlin)") from None
    return value


def _check_recipients(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    cleaned: list[str] = []
    for i, address in enumerate(value):
        address = address.strip()
        if not valid_address(address):
            raise ValueError(f"recipient {i + 1} is not an e-mail address (name@example.com)")
        if address.lower() not in {a.lower() for a in cleaned}:
            cleaned.append(address)
    return cleaned


class _ScheduleFields(InputModel):
    @field_validator("send_at", check_fields=False)
    @classmethod
    def _send_at(cls, value: str | None) -> str | None:
        if value is not None and not _TIME.fullmatch(value):
            raise ValueError("must be a local time HH:MM from 00:00 to 23:59")
        return value

    @field_validator("tz", check_fields=False)
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return _check_zone(value)

    @field_validator("recipients", check_fields=False)
    @classmethod
    def _recipients(cls, value: list[str] | None) -> list[str] | None:
        return _check_recipients(value)

    @field_validator("name", check_fields=False)
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("name must not be blank")
        return value.strip() if value is not None else None


class ScheduleIn(_ScheduleFields):
    name: str = Field(min_length=1, max_length=NAME_LENGTH, examples=["Daily summary"])
    kind: Kind
    send_at: str | None = Field(
        default=None,
        description="Local time HH:MM (default: daily 07:00, weekly and monthly 08:00). Daily "
        "reports cover the previous local day, weekly ones the previous ISO week (sent on "
        "Mondays), monthly ones the previous month (sent on the 1st)",
        examples=["07:00"],
    )
    tz: str = Field(default="UTC", max_length=64, examples=["Europe/Berlin"])
    recipients: list[str] = Field(
        min_length=1, max_length=MAX_RECIPIENTS, examples=[["secops@example.com"]]
    )
    tenant_id: str | None = Field(default=None, min_length=1, max_length=100)
    source: str | None = Field(default=None, min_length=1, max_length=100)
    module: str | None = Field(default=None, min_length=1, max_length=50)
    enabled: bool = True


class ScheduleUpdate(_ScheduleFields):
    """Only the fields given change; `null` clears tenant_id, source or module."""

    name: str | None = Field(default=None, min_length=1, max_length=NAME_LENGTH)
    kind: Kind | None = None
    send_at: str | None = None
    tz: str | None = Field(default=None, max_length=64)
    recipients: list[str] | None = Field(default=None, min_length=1, max_length=MAX_RECIPIENTS)
    tenant_id: str | None = Field(default=None, min_length=1, max_length=100)
    source: str | None = Field(default=None, min_length=1, max_length=100)
    module: str | None = Field(default=None, min_length=1, max_length=50)
    enabled: bool | None = None

    @field_validator("name", "kind", "send_at", "tz", "recipients", "enabled", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may be left out, not null")
        return value


class PeriodOut(BaseModel):
    start: datetime = Field(description="Local start, with its UTC offset")
    end: datetime = Field(description="Local end (exclusive)")
    tz: str
    send_at: datetime | None = Field(default=None, description="When it is (was) due to be sent")


class ScheduleOut(BaseModel):
    id: int
    name: str
    kind: Kind
    send_at: str
    tz: str
    recipients: list[str]
    tenant_id: str | None
    source: str | None
    module: str | None
    enabled: bool
    next_period: PeriodOut | None = Field(description="The next period it will send (if enabled)")
    created_at: datetime
    created_by: str | None
    updated_at: datetime
    updated_by: str | None

    def public(self) -> dict[str, Any]:
        """What a config.changed event shows as before/after."""
        return self.model_dump(mode="json", exclude={"next_period"})


class ScheduleList(BaseModel):
    items: list[ScheduleOut]


class RunOut(BaseModel):
    id: int
    schedule_id: int
    period: PeriodOut
    status: RunStatus
    attempts: int
    next_attempt_at: datetime | None = Field(description="While pending: the next try")
    watermark: int | None = Field(description="The statistics' log position it was built from")
    events: int | None = Field(description="The period's total events as reported")
    size: int | None = Field(description="Bytes of the message sent")
    error: str | None
    created_at: datetime
    sent_at: datetime | None


class RunList(BaseModel):
    items: list[RunOut]


class PreviewIn(InputModel):
    """A schedule's report (`schedule_id`), or one described here, for the period that
    contains local day `day` (default: the latest complete period)."""

    schedule_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    kind: Kind | None = None
    tz: str | None = Field(default=None, max_length=64)
    tenant_id: str | None = Field(default=None, min_length=1, max_length=100)
    source: str | None = Field(default=None, min_length=1, max_length=100)
    module: str | None = Field(default=None, min_length=1, max_length=50)
    day: date | None = Field(default=None, examples=["2026-12-01"])

    @field_validator("tz")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return _check_zone(value)

    @field_validator("day")
    @classmethod
    def _day(cls, value: date | None) -> date | None:
        if value is not None and not date(1900, 2, 1) <= value <= date(9998, 11, 30):
            raise ValueError("must be between 1900-02-01 and 9998-11-30")
        return value


class PreviewOut(BaseModel):
    period: PeriodOut
    subject: str
    html: str
    text: str
    report: dict[str, Any] = Field(description="The figures the report shows")


class SendOut(BaseModel):
    period: PeriodOut
    recipients: list[str]
    subject: str
    size: int
    refused: list[str] = Field(description="Recipients the SMTP server refused")
