from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, Field, StrictInt

from audit_service.kit.schemas import InputModel

Severity = Literal["info", "low", "medium", "high", "critical"]
Status = Literal["open", "acknowledged", "resolved"]
Resolution = Literal["true_positive", "false_positive", "benign"]
PAGE_SIZES = (10, 25, 50, 100)


class AlertQuery(InputModel):
    status: Status | None = None
    severity: Severity | None = None
    rule: str | None = Field(default=None, max_length=64, description="A rule id")
    entity: str | None = Field(
        default=None, max_length=300, description="The entity, exact (an IP, a user name)"
    )
    since: AwareDatetime | None = Field(default=None, description="Opened at or after")
    until: AwareDatetime | None = Field(default=None, description="Opened before")
    page_size: int = Field(default=50, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=500, description="`next_cursor`")


class Entity(BaseModel):
    kind: str = Field(description="ip, user, or ip_user ('<ip> <user>')")
    value: str


class AlertOut(BaseModel):
    id: int
    rule_id: str
    rule_version: int
    severity: Severity
    status: Status
    resolution: Resolution | None
    note: str | None
    dedup_key: str
    count: int
    first_seen_at: datetime
    last_seen_at: datetime
    opened_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    tenant_id: str | None
    source: str
    entity: Entity
    title: str
    evidence: dict[str, Any]
    version: int
    inhibited_by: int | None = Field(
        default=None,
        description="The success_after_failures alert that explains this brute-force alert "
        "(backward inhibition): not notified again",
    )


class AlertPage(BaseModel):
    items: list[AlertOut]
    next_cursor: str | None


class ResolveIn(InputModel):
    resolution: Resolution
    note: str | None = Field(default=None, max_length=2000)


class ThresholdOut(BaseModel):
    name: str
    default: int
    minimum: int
    maximum: int
    description: str


class GuideOut(BaseModel):
    meaning: str
    false_positives: str
    response: str


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class EffectiveOut(BaseModel):
    enabled: bool
    severity: Severity
    thresholds: dict[str, int]
    suppress_minutes: int = 0
    time_zone: str | None = Field(default=None, description="null: AUDIT_DETECTIONS_TZ")
    business_days: list[Day] | None = Field(
        default=None, description="null: Monday to Friday (weekends_off 1) or every day"
    )


class SuppressionOut(BaseModel):
    entity: str
    until: datetime
    note: str | None
    created_at: datetime
    created_by: str | None


class OverrideOut(BaseModel):
    tenant_id: str | None = Field(description="null: every tenant")
    enabled: bool | None
    severity: Severity | None
    thresholds: dict[str, int]
    suppress_minutes: int | None = None
    time_zone: str | None = None
    business_days: list[Day] | None = None
    suppressions: list[SuppressionOut] = Field(default_factory=list)
    updated_at: datetime
    updated_by: str | None


class RuleOut(BaseModel):
    id: str
    version: int
    title: str
    default_severity: Severity
    entity: str
    thresholds: list[ThresholdOut]
    guide: GuideOut
    effective: EffectiveOut = Field(description="For every tenant without an override of its own")
    overrides: list[OverrideOut]


class RuleList(BaseModel):
    items: list[RuleOut]


class RuleUpdate(InputModel):
    """Only the fields given change; `tenant_id` names the tenant whose override it is
    (absent: the override for every tenant)."""

    enabled: bool | None = None
    severity: Severity | None = None
    thresholds: dict[str, StrictInt] | None = Field(
        default=None, description="Threshold name → integer, within the catalogue's bounds"
    )
    tenant_id: str | None = Field(default=None, min_length=1, max_length=100)
    suppress_minutes: StrictInt | None = Field(
        default=None,
        ge=0,
        le=43_200,
        description="After an alert is resolved, the same dedup key opens nothing for this "
        "many minutes (0: no window; null: inherit)",
    )
    time_zone: str | None = Field(
        default=None,
        max_length=64,
        description="off_hours_policy: the tenant's IANA zone (null: AUDIT_DETECTIONS_TZ)",
    )
    business_days: list[Day] | None = Field(
        default=None,
        max_length=7,
        description="off_hours_policy: the business days (null: Monday to Friday, or every "
        "day with weekends_off 0)",
    )
    suppress: SuppressIn | None = Field(
        default=None, description="Suppress one entity of the rule until a time (or lift it)"
    )


class SuppressIn(InputModel):
    entity: str = Field(
        min_length=1,
        max_length=300,
        description="An alert's entity value (an IP, a user), or one part of an 'ip user' pair",
    )
    until: AwareDatetime | None = Field(
        description="Findings about the entity arriving before this open nothing; null lifts "
        "the suppression"
    )
    note: str | None = Field(default=None, max_length=2000)


RuleUpdate.model_rebuild()
