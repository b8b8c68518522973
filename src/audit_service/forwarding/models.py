"""Forwarding destinations, their dead letters and their replays: mutable bookkeeping beside
the log (not part of the record: no append-only triggers)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from audit_service.audit_log.models import BigIntId
from audit_service.kit.models import Base, UTCDateTime

NAME_LENGTH = 200
ERROR_LENGTH = 500
HOLDER_LENGTH = 100


class ForwardDestination(Base):
    """Where events go (webhook, syslog, Splunk HEC), in which format, which ones (filter),
    and how far delivery got: `cursor` is the last log position handled (delivered, filtered
    out or dead-lettered); -1 before the first. `inflight_last` pins the last position of a
    batch that failed, so its retry sends the same batch (same `webhook-id`)."""

    __tablename__ = "forward_destination"

    id: Mapped[int] = mapped_column(Integer, Identity(always=False), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    kind: Mapped[str] = mapped_column(String(20))  # webhook / syslog / splunk_hec
    format: Mapped[str] = mapped_column(String(10))  # native / ocsf / ecs / cef
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Write-only: {"webhook_secrets": [...], "hec_token": "..."}; never returned or recorded.
    secrets: Mapped[dict[str, Any]] = mapped_column(JSON)
    filter: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(10))  # active / paused / failing / disabled
    cursor: Mapped[int] = mapped_column(BigInteger)
    inflight_last: Mapped[int | None] = mapped_column(BigInteger)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_holder: Mapped[str | None] = mapped_column(String(HOLDER_LENGTH))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    delivered: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    failed: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(ERROR_LENGTH))
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str | None] = mapped_column(String(255))


class ForwardDeadLetter(Base):
    """An event a destination rejected for good (400/413/422, HEC 6/7, over-size syslog):
    kept for retry or discard; delivery moved on past it."""

    __tablename__ = "forward_dead_letter"
    __table_args__ = (Index("ix_forward_dead_letter_destination", "destination_id", "position"),)

    id: Mapped[int] = mapped_column(BigIntId, Identity(always=False), primary_key=True)
    destination_id: Mapped[int] = mapped_column(
        ForeignKey("forward_destination.id", ondelete="CASCADE")
    )
    position: Mapped[int] = mapped_column(BigInteger)
    event_pk: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(ERROR_LENGTH))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ForwardReplay(Base):
    """Positions [from_position, to_position] sent again to a destination, beside its live
    delivery: `cursor` is the last position of the range handled (from_position - 1 first)."""

    __tablename__ = "forward_replay"
    __table_args__ = (Index("ix_forward_replay_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, Identity(always=False), primary_key=True)
    destination_id: Mapped[int] = mapped_column(
        ForeignKey("forward_destination.id", ondelete="CASCADE")
    )
    from_position: Mapped[int] = mapped_column(BigInteger)
    to_position: Mapped[int] = mapped_column(BigInteger)
    cursor: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(10))  # running / done / failed
    delivered: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    inflight_last: Mapped[int | None] = mapped_column(BigInteger)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_holder: Mapped[str | None] = mapped_column(String(HOLDER_LENGTH))
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(ERROR_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
