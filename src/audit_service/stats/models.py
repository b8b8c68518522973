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


def _count(order: int = 0) -> Mapped[int]:
    return mapped_column(BigInteger, server_default=text("0"), sort_order=order)


def _key(length: int, order: int = 0) -> Mapped[str]:
    # sort_order: the key columns in this order in every table (and so in its primary key,
    # bucket first) whichever mixin declares them; the rollup's key tuples follow it.
    return mapped_column(String(length), primary_key=True, sort_order=order)


def _bucket() -> Mapped[int]:
    return mapped_column(BigInteger, primary_key=True, autoincrement=False, sort_order=-100)


class _Outcomes:
    n_success: Mapped[int] = _count(1)
    n_failure: Mapped[int] = _count(2)
    n_denied: Mapped[int] = _count(3)
    n_error: Mapped[int] = _count(4)


class _BucketKeys(_Outcomes):
    bucket: Mapped[int] = _bucket()
    tenant_id: Mapped[str] = _key(100, -90)
    source: Mapped[str] = _key(100, -80)
    module: Mapped[str] = _key(50, -70)
    action: Mapped[str] = _key(100, -60)
    actor_type: Mapped[str] = _key(20, -50)


class _ActorKeys(_BucketKeys):
    actor_id: Mapped[str] = _key(200, -40)


class _IpKeys(_Outcomes):
    bucket: Mapped[int] = _bucket()
    tenant_id: Mapped[str] = _key(100, -90)
    ip: Mapped[str] = _key(45, -80)
    actor_type: Mapped[str] = _key(20, -50)
    actor_key: Mapped[str] = _key(205, -40)
    logins_ok: Mapped[int] = _count(10)
    logins_failed: Mapped[int] = _count(11)


class StatsBucket(_BucketKeys, Base):
    """Events per bucket x tenant x source x module x action x actor type."""

    __tablename__ = "stats_bucket"


class StatsActorBucket(_ActorKeys, Base):
    """The same per actor: top users, exact distinct users, and every filter with `actor`."""

    __tablename__ = "stats_actor_bucket"
    # Every statistic filtered by `actor` reads one actor's rows: without it, the whole
    # period of every actor (measured at 10M events, 30 days: top actions 133 -> 36 ms).
    __table_args__ = (Index("ix_stats_actor_bucket_actor_id_bucket", "actor_id", "bucket"),)


class StatsIpBucket(_IpKeys, Base):
    """Events and logins per IP address and actor (exact distinct users per IP; the
    detections reuse it). `actor_key` is the actor's id, or `name:` + the attempted user
    name for anonymous events (a failed login has no actor id)."""

    __tablename__ = "stats_ip_bucket"
    __table_args__ = (Index("ix_stats_ip_bucket_actor_key_bucket", "actor_key", "bucket"),)


# --- coarser levels (migration 0021) ---------------------------------------------------------
# The same counts per UTC hour and per UTC day (`bucket` = the hour's or day's start), added
# by the same rollup round and transaction as the 15-minute rows. A period reads day rows for
# the whole UTC days inside it, hour rows for whole UTC hours beside them, and 15-minute rows
# only at its ragged edges (repository.pieces): exact for any zone, since the split is made
# per local interval. A 30-day period at 10M events: 95k 15-minute rows of `stats_bucket`,
# 8k day rows. The per-actor and per-IP tables have a day level only: an actor rarely
# repeats a key within an hour (1.2 events per 15-minute row), so hour rows would hardly be
# fewer than 15-minute ones.
HOUR_SECONDS = 3600
DAY_SECONDS = 86400


class StatsBucketHour(_BucketKeys, Base):
    __tablename__ = "stats_bucket_hour"


class StatsBucketDay(_BucketKeys, Base):
    __tablename__ = "stats_bucket_day"


class StatsActorBucketDay(_ActorKeys, Base):
    __tablename__ = "stats_actor_bucket_day"
    __table_args__ = (Index("ix_stats_actor_bucket_day_actor_id_bucket", "actor_id", "bucket"),)


class StatsActorTenantDay(_Outcomes, Base):
    """Per UTC day x tenant x actor only (no source, module, action): what distinct actors
    and top actors read when no such filter is given. The full per-actor key has ~3.5 rows
    per actor and day at 10M events, this one ~1."""

    __tablename__ = "stats_actor_tenant_day"

    bucket: Mapped[int] = _bucket()
    tenant_id: Mapped[str] = _key(100, -90)
    actor_type: Mapped[str] = _key(20, -50)
    actor_id: Mapped[str] = _key(200, -40)


class StatsIpBucketDay(_IpKeys, Base):
    __tablename__ = "stats_ip_bucket_day"
    __table_args__ = (Index("ix_stats_ip_bucket_day_actor_key_bucket", "actor_key", "bucket"),)


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
