"""Report schedules and their runs (one per schedule and period)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from audit_service.audit_log.models import BigIntId
from audit_service.kit.models import Base, UTCDateTime

NAME_LENGTH = 200
ERROR_LENGTH = 500


class ReportSchedule(Base):
    """A report to send every local day, week (Mondays) or month (the 1st) at `send_at`
    in `tz`, covering the period that just ended, to `recipients`, optionally narrowed to
    one tenant, source or module."""

    __tablename__ = "report_schedule"

    id: Mapped[int] = mapped_column(Integer, Identity(always=False), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    kind: Mapped[str] = mapped_column(String(10))  # daily / weekly / monthly
    send_at: Mapped[str] = mapped_column(String(5))  # HH:MM, local
    tz: Mapped[str] = mapped_column(String(64))
    recipients: Mapped[list[str]] = mapped_column(JSON)
    tenant_id: Mapped[str | None] = mapped_column(String(100))
    source: Mapped[str | None] = mapped_column(String(100))
    module: Mapped[str | None] = mapped_column(String(50))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    # Periods are owed from here: set at creation and again when kind, send_at or tz
    # change (the old timing's periods are not sent twice under the new one).
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str | None] = mapped_column(String(255))


class ReportRun(Base):
    """One period of one schedule: created when due, claimed by one sender at a time
    (status `sending` until `claimed_until`), then `sent` or `failed`; a failed attempt
    goes back to `pending` until `next_attempt_at`. Unique per schedule and period, so a
    period is sent once however many schedulers race for it."""

    __tablename__ = "report_run"
    __table_args__ = (
        UniqueConstraint("schedule_id", "period_start"),
        Index("ix_report_run_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, Identity(always=False), primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("report_schedule.id", ondelete="CASCADE"))
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(10))  # pending / sending / sent / failed
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The statistics' log position the report was built from, and what it said.
    watermark: Mapped[int | None] = mapped_column(BigInteger)
    events: Mapped[int | None] = mapped_column(BigInteger)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    size: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(ERROR_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
