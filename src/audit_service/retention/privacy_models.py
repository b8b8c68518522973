"""Retention, forgetting half: the purges under way and the data-subject erasures done.

Bookkeeping beside the record. What the log itself says about each is its event
(`retention.purged` tombstone, `retention.erased`); these rows only let a rerun find an
unfinished purge and `GET /admin/retention/erasures` list erasures without reading events.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, Date, Identity, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from audit_service.audit_log.models import BigIntId
from audit_service.kit.models import Base, UTCDateTime

PSEUDONYM_LENGTH = 80
REASON_LENGTH = 500


class RetentionPurge(Base):
    """One tombstone (`retention.purged` event `event_pk`) and how far its deletion got:
    `finished_at` is set once the restricted path has nothing left to delete in its ranges.
    Written in the tombstone's own transaction, so a tombstone without its row cannot exist."""

    __tablename__ = "retention_purge"

    event_pk: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    policy_id: Mapped[int] = mapped_column(Integer)
    archive_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    day: Mapped[date] = mapped_column(Date)
    planned: Mapped[int] = mapped_column(BigInteger)
    deleted: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class RetentionErasure(Base):
    """A data-subject erasure: the subject only as its pseudonym (no personal data), what
    narrowed it (source, tenant), why, who asked, how many events were pseudonymised and
    whether the subject's commitment key could be destroyed (not while other events of the
    same subject, outside the source/tenant asked for, still name it)."""

    __tablename__ = "retention_erasure"

    id: Mapped[int] = mapped_column(BigIntId, Identity(always=False), primary_key=True)
    pseudonym: Mapped[str] = mapped_column(String(PSEUDONYM_LENGTH))
    source: Mapped[str | None] = mapped_column(String(100))
    tenant_id: Mapped[str | None] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(String(REASON_LENGTH))
    requested_by: Mapped[str | None] = mapped_column(String(255))
    event_pk: Mapped[int | None] = mapped_column(BigInteger)
    events: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    key_destroyed: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RetentionDoor(Base):
    """SQLite only in use: while a row is here (inserted and removed inside the retention
    path's own transaction), the append-only triggers of audit_event let DELETE / UPDATE
    through. PostgreSQL has roles and SECURITY DEFINER functions instead; there the table
    exists (one schema for both) and nothing reads it."""

    __tablename__ = "retention_door"

    opened: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
