"""`job_lease`: one row per background job — who runs it now, until when, and how it went."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from audit_service.kit.models import Base, UTCDateTime

JOB_NAME_LENGTH = 100
HOLDER_LENGTH = 200
ERROR_LENGTH = 500


class JobLease(Base):
    __tablename__ = "job_lease"

    name: Mapped[str] = mapped_column(String(JOB_NAME_LENGTH), primary_key=True)
    # The process running the job now, or the last one that did (then lease_until is past).
    holder: Mapped[str | None] = mapped_column(String(HOLDER_LENGTH))
    # Bumped by every claim: a fencing token, so a holder that lost its lease (paused past
    # expiry) can tell and its late writes are refused.
    generation: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Shared by every process, so the schedule (and the backoff after errors) holds for the
    # job as a whole, not once per process.
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    interval_seconds: Mapped[float] = mapped_column(Float)
    last_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(ERROR_LENGTH))
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    runs: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    failures: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    consecutive_failures: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # What the job last reported about how far behind it is (e.g. age of unprocessed events).
    lag_seconds: Mapped[float | None] = mapped_column(Float)
