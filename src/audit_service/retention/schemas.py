from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, Field, field_validator, model_validator

from audit_service.kit.net import parse_ip_or_network
from audit_service.kit.schemas import InputModel, check_actions, iso_8601_only
from audit_service.retention.models import NAME_LENGTH, REASON_LENGTH

Outcome = Literal["success", "failure", "denied", "error"]
MAX_DAYS = 36_500  # a hundred years
Days = Field(default=None, ge=0, le=MAX_DAYS, description="Whole days (an integer)")


class RetentionMatch(InputModel):
    """Which events a rule takes (all given keys; none: every event)."""

    action_prefix: str | None = Field(
        default=None, min_length=1, max_length=100, examples=["auth."]
    )
    module: str | None = Field(default=None, min_length=1, max_length=50)
    outcome: Outcome | None = None
    source: str | None = Field(default=None, min_length=1, max_length=100)
    tenant_id: str | None = Field(default=None, min_length=1, max_length=100)

    def stored(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


def _check_days(archive: int | None, delete: int | None) -> None:
    if delete is not None and archive is None:
        raise ValueError(
            "delete_after_days needs archive_after_days: events are deleted only once archived"
        )
    if delete is not None and archive is not None and delete < archive:
        raise ValueError("delete_after_days must not be before archive_after_days")


class PolicyIn(InputModel):
    name: str = Field(min_length=1, max_length=NAME_LENGTH, examples=["Everything else"])
    position: int = Field(ge=0, le=1_000_000, description="Order of evaluation (ascending)")
    match: RetentionMatch = Field(default_factory=RetentionMatch)
    archive_after_days: int | None = Days
    delete_after_days: int | None = Field(
        default=None, ge=0, le=MAX_DAYS, description="Whole days; null: keep forever"
    )
    critical: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name must not be blank")
        return value.strip()

    @model_validator(mode="after")
    def _days(self) -> PolicyIn:
        _check_days(self.archive_after_days, self.delete_after_days)
        return self


class PolicyUpdate(InputModel):
    """Only the fields given change (null clears archive/delete days)."""

    name: str | None = Field(default=None, min_length=1, max_length=NAME_LENGTH)
    position: int | None = Field(default=None, ge=0, le=1_000_000)
    match: RetentionMatch | None = None
    archive_after_days: int | None = Days
    delete_after_days: int | None = Days
    critical: bool | None = None


class PolicyOut(BaseModel):
    id: int
    position: int
    name: str
    match: dict[str, str]
    archive_after_days: int | None
    delete_after_days: int | None
    critical: bool
    created_at: datetime | None
    created_by: str | None
    updated_at: datetime | None
    updated_by: str | None

    def public(self) -> dict[str, Any]:
        return self.model_dump(
            mode="json", exclude={"created_at", "created_by", "updated_at", "updated_by"}
        )


class PolicyList(BaseModel):
    items: list[PolicyOut]


class RetentionPreviewItem(BaseModel):
    policy_id: int
    name: str
    critical: bool
    archive: int = Field(description="Events the next run would archive")
    archive_before: datetime | None = Field(description="Events recorded before this are due")
    delete: int = Field(
        description="Archived events past delete_after_days and under no hold: what the next "
        "run would delete"
    )
    delete_before: datetime | None
    held: int = Field(description="Events past delete_after_days that a legal hold keeps")


class RetentionPreview(BaseModel):
    as_of: datetime
    checkpoint_size: int | None
    items: list[RetentionPreviewItem]


class HoldFilter(InputModel):
    """The `/admin/activity` filter names: a hold covers the events this filter selects."""

    actor: str | None = Field(default=None, max_length=200, description="Actor id or name")
    actor_id: str | None = Field(default=None, max_length=200)
    action: list[str] = Field(default_factory=list, max_length=50)
    module: str | None = Field(default=None, max_length=50)
    outcome: Outcome | None = None
    source: str | None = Field(default=None, max_length=100)
    tenant_id: str | None = Field(default=None, max_length=100)
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    ip: str | None = Field(default=None, max_length=64, description="An address or CIDR")
    target_type: str | None = Field(default=None, max_length=100)
    target_id: str | None = Field(default=None, max_length=200)

    @field_validator("action")
    @classmethod
    def _actions(cls, value: list[str]) -> list[str]:
        return check_actions(value)

    @field_validator("since", "until", mode="before")
    @classmethod
    def _iso(cls, value: Any) -> Any:
        return iso_8601_only(value)

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None:
            try:
                return value.astimezone(UTC)
            except OverflowError:
                raise ValueError("out of range once converted to UTC") from None
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

    def stored(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=True)


class HoldIn(InputModel):
    reason: str = Field(min_length=1, max_length=REASON_LENGTH)
    filter: HoldFilter

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("reason must not be blank")
        return value.strip()

    @field_validator("filter")
    @classmethod
    def _not_empty(cls, value: HoldFilter) -> HoldFilter:
        if not value.stored():
            raise ValueError(
                "a hold needs at least one filter (actor, action, tenant_id, since, …): an "
                "empty filter would hold every event"
            )
        return value


class HoldOut(BaseModel):
    id: int
    reason: str
    filter: dict[str, Any]
    active: bool
    created_at: datetime
    created_by: str | None
    released_at: datetime | None
    released_by: str | None

    def public(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class HoldList(BaseModel):
    items: list[HoldOut]


class ArchiveOut(BaseModel):
    id: int
    policy_id: int
    policy: str
    day: date
    count: int
    first_id: int
    last_id: int
    first_position: int
    last_position: int
    checkpoint_size: int
    path: str
    sha256: str
    manifest_hash: str
    previous_manifest_hash: str | None
    created_at: datetime
    s3_key: str | None = Field(
        default=None,
        description="The segment's object key in AUDIT_ARCHIVE_S3_BUCKET (its manifest: the "
        "same key ending in .manifest); null until both are confirmed there",
    )
    uploaded_at: datetime | None = Field(
        default=None, description="When both objects were confirmed in the bucket"
    )
    s3_error: str | None = Field(
        default=None, description="The last failed upload attempt, if the segment is not there"
    )


class ArchiveList(BaseModel):
    items: list[ArchiveOut]
    next_before_id: int | None = Field(description="Pass as before_id for the next page")
