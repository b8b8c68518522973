"""The rollup tables: counts per 15-minute UTC bucket, kept by the `stats.rollup` job.

Why 15 minutes and not hours: every statistic takes the caller's `tz`, and zones with :30
and :45 offsets (Asia/Kolkata, Asia/Kathmandu, Australia/Adelaide) cut local days and hours
in the middle of a UTC hour. Hourly buckets plus a local-day table would be exact only for
zones known when the rollup is written, not for any `tz` a caller names. Every offset in
use today is a multiple of 15 minutes, so 15-minute buckets are exact for all of them.
Measured cost (a synthetic day, skewed action mix, 5 tenants, 500-2,500 users): the
tenant x module x action table has 2.5x (1 event/s) to 4x (100 events/s) the rows of an
hourly one; the per-actor table 1.1x-2x, since an actor is rarely active in every quarter
of an hour. A 30-day query reads at most 2,880 buckets per combination.

`bucket` is the bucket's start in seconds since the Unix epoch (UTC): plain integers
compare and sort the same on both dialects and map to any zone in Python. NULL tenant and
actor ids are stored as '' (primary-key columns cannot be NULL).

Outcomes are four count columns rather than a key column: one row instead of up to four,
and a summary needs all four anyway (success, failure, denied, error are exhaustive:
audit_event's CHECK constraint).

Plain mutable bookkeeping, not part of the record: no append-only triggers; rebuilt from
the log by resetting the watermark and emptying the tables.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from audit_service.core.db import code_point_string
from audit_service.kit.models import Base, UTCDateTime

BUCKET_SECONDS = 900


def _count() -> Mapped[int]:
    return mapped_column(BigInteger, server_default=text("0"))


def _key(length: int) -> Mapped[str]:
    return mapped_column(String(length), primary_key=True)


class _Outcomes:
    n_success: Mapped[int] = _count()
    n_failure: Mapped[int] = _count()
    n_denied: Mapped[int] = _count()
    n_error: Mapped[int] = _count()


class StatsBucket(_Outcomes, Base):
    """Events per bucket x tenant x source x module x action x actor type."""

    __tablename__ = "stats_bucket"

    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    tenant_id: Mapped[str] = _key(100)
    source: Mapped[str] = _key(100)
    module: Mapped[str] = _key(50)
    action: Mapped[str] = _key(100)
    actor_type: Mapped[str] = _key(20)


class StatsActorBucket(_Outcomes, Base):
    """The same per actor: top users, exact distinct users, and every filter with `actor`."""

    __tablename__ = "stats_actor_bucket"
    # Every statistic filtered by `actor` reads one actor's rows: without it, the whole
    # period of every actor (measured at 10M events, 30 days: top actions 133 -> 36 ms).
    __table_args__ = (Index("ix_stats_actor_bucket_actor_id_bucket", "actor_id", "bucket"),)

    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    tenant_id: Mapped[str] = _key(100)
    source: Mapped[str] = _key(100)
    module: Mapped[str] = _key(50)
    action: Mapped[str] = _key(100)
    actor_type: Mapped[str] = _key(20)
    actor_id: Mapped[str] = _key(200)


class StatsIpBucket(_Outcomes, Base):
    """Events and logins per IP address and actor (exact distinct users per IP; the
    detections reuse it). `actor_key` is the actor's id, or `name:` + the attempted user
    name for anonymous events (a failed login has no actor id)."""

    __tablename__ = "stats_ip_bucket"
    __table_args__ = (Index("ix_stats_ip_bucket_actor_key_bucket", "actor_key", "bucket"),)

    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    tenant_id: Mapped[str] = _key(100)
    ip: Mapped[str] = _key(45)
    actor_type: Mapped[str] = _key(20)
    actor_key: Mapped[str] = _key(205)
    logins_ok: Mapped[int] = _count()
    logins_failed: Mapped[int] = _count()


# The fields of the facets (the activity filters with a value list), as the API names them.
FACET_FIELDS = ("action", "module", "source", "actor", "tenant_id")


class StatsFacet(Base):
    """All-time event counts per value of a filter field, for filter dropdowns: one row per
    (field, value); for `actor` per actor id and type (`actor_type` is '' otherwise). Kept
    by the same job and transaction as the buckets, under the `facets` watermark.

    `value` compares by code point on both dialects, so a typeahead prefix is a range of the
    primary key; `ix_stats_facet_rank` answers "the most frequent values" without a sort
    over all of them (millions of actors)."""

    __tablename__ = "stats_facet"
    __table_args__ = (Index("ix_stats_facet_rank", "field", "events", "value"),)

    field: Mapped[str] = _key(20)
    value: Mapped[str] = mapped_column(code_point_string(200), primary_key=True)
    actor_type: Mapped[str] = _key(20)
    events: Mapped[int] = _count()
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime())


class StatsWatermark(Base):
    """How far a rollup has read the log: the last log position it has counted (-1: none).
    Moved in the same transaction as the counts, so a crash can never count twice."""

    __tablename__ = "stats_watermark"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
