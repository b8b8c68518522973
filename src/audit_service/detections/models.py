"""Detections: alerts, rule settings, the evaluator's cursor and the sliding-window state.

Mutable bookkeeping, not the record (no append-only triggers): the record of what happened
to an alert is its `alert.*` events.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from audit_service.audit_log.models import BigIntId
from audit_service.kit.models import Base, UTCDateTime

NOTE_LENGTH = 2000
UNRESOLVED = text("status <> 'resolved'")


class Alert(Base):
    """One finding of one rule about one entity. `dedup_key` (rule + scope + entity, and the
    local day for daily rules) is unique among unresolved alerts: a repeat adds to `count`
    and moves `last_seen_at`; after a resolution the next finding opens a new alert."""

    __tablename__ = "alert"
    __table_args__ = (
        Index(
            "uq_alert_dedup_key_unresolved",
            "dedup_key",
            unique=True,
            postgresql_where=UNRESOLVED,
            sqlite_where=UNRESOLVED,
        ),
        Index("ix_alert_opened_at_id", "opened_at", "id"),
        Index("ix_alert_status_opened_at", "status", "opened_at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, Identity(always=False), primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(64))
    rule_version: Mapped[int] = mapped_column(Integer)
    severity: Mapped[str] = mapped_column(String(10))  # info / low / medium / high / critical
    status: Mapped[str] = mapped_column(String(15))  # open / acknowledged / resolved
    resolution: Mapped[str | None] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(Text)
    dedup_key: Mapped[str] = mapped_column(String(500))
    count: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    acknowledged_by: Mapped[str | None] = mapped_column(String(255))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_by: Mapped[str | None] = mapped_column(String(255))
    tenant_id: Mapped[str | None] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(100))
    entity_kind: Mapped[str] = mapped_column(String(10))  # ip / user / ip_user
    entity_value: Mapped[str] = mapped_column(String(300))
    title: Mapped[str] = mapped_column(String(300))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Optimistic changes: every update checks and bumps it.
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    # Backward inhibition: the success_after_failures alert that explains this one (a
    # brute_force_ip / account_guessing alert opened before the success); not re-notified.
    inhibited_by: Mapped[int | None] = mapped_column(BigInteger)


class DetectionRuleSetting(Base):
    """An override of a rule's catalogue defaults: for every tenant (`tenant_id` '') or for
    one. Unset fields (NULL, or thresholds not named) fall back to the next level."""

    __tablename__ = "detection_rule_setting"

    rule_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(100), primary_key=True, default="")
    enabled: Mapped[bool | None] = mapped_column(Boolean)
    severity: Mapped[str | None] = mapped_column(String(10))
    thresholds: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str | None] = mapped_column(String(255))
    # After an alert of a dedup key is resolved, findings of that key open nothing for
    # this many minutes (0 / NULL: no window).
    suppress_minutes: Mapped[int | None] = mapped_column(Integer)
    # off_hours_policy: the tenant's IANA zone and business days ("mon,tue,..."), NULL:
    # AUDIT_DETECTIONS_TZ and Monday to Friday (or every day with weekends_off 0).
    time_zone: Mapped[str | None] = mapped_column(String(64))
    business_days: Mapped[str | None] = mapped_column(String(40))


class DetectionState(Base):
    """How far an evaluator has read the log: the last position it evaluated (-1: none).
    Moved in the same transaction as the alerts it produced."""

    __tablename__ = "detection_state"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DetectionLogin(Base):
    """The sliding window: the login attempts of the last two days (by `recorded_at`), one
    row per event, pruned as the windows pass. `user_name` is the attempted or logged-in
    user name (or, without one, the actor id)."""

    __tablename__ = "detection_login"
    __table_args__ = (
        Index("ix_detection_login_ip_recorded_at", "ip", "recorded_at"),
        Index("ix_detection_login_user_name_recorded_at", "user_name", "recorded_at"),
        Index("ix_detection_login_recorded_at", "recorded_at"),
    )

    event_pk: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    position: Mapped[int] = mapped_column(BigInteger)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    source: Mapped[str] = mapped_column(String(100))
    tenant_id: Mapped[str] = mapped_column(String(100))  # '' for none
    ip: Mapped[str | None] = mapped_column(String(45))
    user_name: Mapped[str | None] = mapped_column(String(200))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    success: Mapped[bool] = mapped_column(Boolean)
    action: Mapped[str] = mapped_column(String(100))


class DetectionNetwork(Base):
    """The networks (/24 IPv4, /48 IPv6) each user has logged in from, per source and
    tenant, with how many logins and when last (for new_network)."""

    __tablename__ = "detection_network"

    source: Mapped[str] = mapped_column(String(100), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    user_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    network: Mapped[str] = mapped_column(String(50), primary_key=True)
    logins: Mapped[int] = mapped_column(Integer)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DetectionPrivilege(Base):
    """Per user (per source and tenant): when they last did something privileged, and, per
    action, when it was last denied to them (for first_privileged_action). `action` '' is
    the user's privileged-activity row."""

    __tablename__ = "detection_privilege"

    source: Mapped[str] = mapped_column(String(100), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    user_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    action: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_allowed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_denied_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class DetectionVolume(Base):
    """Hourly counts for the baselines: `kind` user (a user's events), login (a user's
    successful logins), tenant (every event of a source and tenant, `subject` ''), module
    (`subject` the module). `hour_start`: the start of the local hour (AUDIT_DETECTIONS_TZ)
    as a UTC instant, by arrival (`recorded_at`). Pruned after 9 weeks."""

    __tablename__ = "detection_volume"
    __table_args__ = (Index("ix_detection_volume_hour_start", "hour_start"),)

    # Key order: reads go by kind and subject (a batch's users), then the hours.
    kind: Mapped[str] = mapped_column(String(10), primary_key=True)
    subject: Mapped[str] = mapped_column(String(200), primary_key=True)
    source: Mapped[str] = mapped_column(String(100), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    hour_start: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    events: Mapped[int] = mapped_column(Integer)


class DetectionSubject(Base):
    """Since when a baseline's subject (a detection_volume key) has been counted: its
    history in weeks. Forgotten 9 weeks after it was last seen (a returning user starts
    over)."""

    __tablename__ = "detection_subject"
    __table_args__ = (Index("ix_detection_subject_last_seen_at", "last_seen_at"),)

    kind: Mapped[str] = mapped_column(String(10), primary_key=True)
    subject: Mapped[str] = mapped_column(String(200), primary_key=True)
    source: Mapped[str] = mapped_column(String(100), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DetectionSuppression(Base):
    """An entity (an alert's entity value, or one part of an `ip user` pair) whose findings
    of one rule open nothing until `until`; `tenant_id` '' for every tenant."""

    __tablename__ = "detection_suppression"
    __table_args__ = (UniqueConstraint("rule_id", "tenant_id", "entity"),)

    id: Mapped[int] = mapped_column(BigIntId, Identity(always=False), primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[str] = mapped_column(String(100))
    entity: Mapped[str] = mapped_column(String(300))
    until: Mapped[datetime] = mapped_column(UTCDateTime())
    note: Mapped[str | None] = mapped_column(String(2000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str | None] = mapped_column(String(255))
