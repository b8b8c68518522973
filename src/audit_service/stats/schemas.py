from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, Field, ValidationInfo, field_validator

from audit_service.kit.schemas import InputModel, check_actions, check_time_zone, iso_8601_only
from audit_service.stats.buckets import aligned

Outcome = Literal["success", "failure", "denied", "error"]
Compare = Literal["previous_period", "previous_week", "previous_month"]
IntervalName = Literal["hour", "day", "week", "month"]
GroupBy = Literal["action", "module", "outcome", "source"]
Dimension = Literal["actor", "action", "module", "ip", "source", "tenant"]
FacetField = Literal["action", "module", "source", "actor", "tenant_id"]
MAX_TOP = 100
MAX_FACETS = 100
MAX_PREFIX = 200
_EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 1, 1, tzinfo=UTC)


class StatsFilters(InputModel):
    """The activity filters that make sense for aggregates, a period and a time zone.
    Unknown parameters are refused."""

    tenant_id: str | None = Field(default=None, min_length=1, max_length=100)
    source: str | None = Field(default=None, min_length=1, max_length=100)
    module: str | None = Field(default=None, min_length=1, max_length=50)
    action: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Repeatable: action=auth.login&action=auth.logout",
    )
    outcome: Outcome | None = None
    actor: str | None = Field(
        default=None, min_length=1, max_length=200, description="Actor id, exact"
    )
    since: AwareDatetime | None = Field(
        default=None,
        description="Inclusive, ISO 8601 with offset, on a quarter hour (the rollups' "
        "resolution); default: 7 days before `until`",
        examples=["2026-11-02T00:00:00+01:00"],
    )
    until: AwareDatetime | None = Field(
        default=None,
        description="Exclusive, ISO 8601 with offset, on a quarter hour; default: the "
        "quarter hour after now",
        examples=["2026-11-09T00:00:00+01:00"],
    )
    tz: str | None = Field(
        default=None,
        max_length=64,
        description="IANA time zone of days, weeks, months and hours "
        "(default: AUDIT_STATS_DEFAULT_TZ, UTC unless set)",
        examples=["Europe/Berlin", "Asia/Kolkata"],
    )

    @field_validator("action")
    @classmethod
    def _actions(cls, value: list[str]) -> list[str]:
        return check_actions(value)

    @field_validator("since", "until", mode="before")
    @classmethod
    def _iso_8601_only(cls, value: Any) -> Any:
        return iso_8601_only(value)

    @field_validator("since", "until")
    @classmethod
    def _quarter_hour(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return value
        try:
            value = value.astimezone(UTC)
        except OverflowError:
            raise ValueError("out of range once converted to UTC") from None
        if not _EARLIEST <= value < _LATEST:
            # Intervals and labels reach a few days past `until`: keep them inside datetime.
            raise ValueError("must be between 1900-01-01 and 9999-01-01")
        if not aligned(value):
            raise ValueError(
                "must fall on a quarter hour (:00, :15, :30, :45 in UTC): statistics are "
                "kept per 15 minutes"
            )
        return value

    @field_validator("until")
    @classmethod
    def _range(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        since = info.data.get("since")
        if since is not None and value is not None and since > value:
            raise ValueError("until must not be before since")
        return value

    @field_validator("tz")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return check_time_zone(value)

    def applied(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=True)


class SummaryQuery(StatsFilters):
    compare: Compare | None = Field(
        default=None,
        description="Also the same figures for the span of equal length before "
        "(previous_period), a week before, or a calendar month before (in `tz`), with deltas",
    )


class TimeseriesQuery(StatsFilters):
    interval: IntervalName = "day"
    group_by: GroupBy | None = None


class TopQuery(StatsFilters):
    dimension: Dimension
    limit: int = Field(default=10, ge=1, le=MAX_TOP)


class FacetsQuery(InputModel):
    """Filter-dropdown values. All-time counts (since the log began): no period or other
    filters; `GET /admin/stats/top` counts a dimension over a period with filters."""

    field: FacetField
    prefix: str | None = Field(
        default=None,
        max_length=MAX_PREFIX,
        description="Only values starting with this text (case-sensitive, literal: % and _ "
        "are plain characters); empty: all values",
    )
    limit: int = Field(default=20, ge=1, le=MAX_FACETS)


class Period(BaseModel):
    since: datetime
    until: datetime
    tz: str


class Figures(BaseModel):
    events: int
    distinct_actors: int = Field(description="Actors with an id (users, services, system)")
    distinct_users: int = Field(description="Of which actor_type user")
    logins_ok: int = Field(description="auth.login events that succeeded")
    logins_failed: int = Field(description="auth.login / auth.login_failed: failure or denied")
    login_failure_rate: float | None = Field(
        description="logins_failed / (logins_ok + logins_failed); null without logins"
    )
    failures: int
    denied: int
    errors: int


class Delta(BaseModel):
    abs: float
    pct: float | None = Field(description="Percent of the comparison value; null when it is 0")


class Comparison(BaseModel):
    compare: Compare
    period: Period
    figures: Figures
    delta: dict[str, Delta]


class Summary(BaseModel):
    period: Period
    filters: dict[str, Any]
    figures: Figures
    comparison: Comparison | None = None


class SeriesBucket(BaseModel):
    start: datetime = Field(description="Local start of the interval, with its UTC offset")
    end: datetime
    count: int
    groups: dict[str, int] | None = Field(
        default=None, description="With group_by: the count per value (non-zero only)"
    )


class Timeseries(BaseModel):
    period: Period
    interval: IntervalName
    group_by: GroupBy | None
    buckets: list[SeriesBucket]


class TopItem(BaseModel):
    key: str | None = Field(description="The value (null: events without a tenant)")
    actor_type: str | None = Field(default=None, description="dimension=actor only")
    count: int
    share: float = Field(description="count / total, 0 to 1")
    previous: int = Field(description="Count in the previous period of equal length")
    change_abs: int
    change_pct: float | None


class TopList(BaseModel):
    period: Period
    dimension: Dimension
    total: int
    items: list[TopItem]


class PeakCell(BaseModel):
    weekday: int = Field(description="0 = Monday … 6 = Sunday")
    hour: int
    count: int


class PeakHours(BaseModel):
    period: Period
    heatmap: list[list[int]] = Field(description="7 rows (Monday first) x 24 local hours")
    busiest: list[PeakCell] = Field(description="The 5 busiest cells, largest first")


class Freshness(BaseModel):
    watermark: int = Field(description="The last log position the statistics count (-1: none)")
    tree_size: int = Field(description="Positions the log has now")
    pending: int = Field(description="Positions not counted yet")
    lag_seconds: float | None = Field(
        description="Age of the oldest committed event not reflected yet (null: none)"
    )
    updated_at: datetime | None


class FacetValue(BaseModel):
    value: str
    actor_type: str | None = Field(
        default=None, description="field=actor only (an id may appear with several types)"
    )
    events: int = Field(description="Events with this value, all time")
    last_seen: datetime = Field(description="The latest occurred_at among them")


class Facets(BaseModel):
    field: FacetField
    prefix: str | None
    watermark: int = Field(description="The last log position the counts reflect (-1: none)")
    items: list[FacetValue] = Field(description="Most events first, ties by value")


HistogramStep = Literal["minute", "15 minutes", "hour", "day", "week", "month"]


class HistogramBar(BaseModel):
    start: datetime = Field(description="Inclusive; the first bar starts at the period's start")
    end: datetime = Field(description="Exclusive; the last bar ends at the period's end")
    count: int


class Histogram(BaseModel):
    """Event counts over time for a set of activity filters (the console's volume bars)."""

    available: bool = Field(description="False: counting would have taken too long")
    message: str | None = None
    source: Literal["rollups", "events"] | None = Field(
        default=None,
        description="rollups: the statistics (as of `watermark`, seconds behind the log); "
        "events: counted over the matching events",
    )
    step: HistogramStep | None = None
    tz: str
    since: datetime
    until: datetime
    total: int = 0
    watermark: int | None = None
    bars: list[HistogramBar] = Field(default_factory=list)
