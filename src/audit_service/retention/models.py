"""Retention: ordered policies, legal holds, and the archive segments written so far.

Plain mutable bookkeeping beside the record (no append-only triggers): a policy is a rule
over event fields; a hold is an `/admin/activity` filter that blocks deletion and
anonymisation while it is active; an archive row says which events of one policy and one
UTC day (of `recorded_at`) were written to which signed segment file.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    Identity,
    Integer,
    String,
    Table,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from audit_service.audit_log.models import AuditEvent, BigIntId
from audit_service.kit.models import Base, UTCDateTime

NAME_LENGTH = 200
REASON_LENGTH = 500
PATH_LENGTH = 1000
HASH_LENGTH = 64  # hex SHA-256
ERROR_LENGTH = 500


class RetentionPolicy(Base):
    """One rule: events matching `match` (all given keys; none = every event) are archived
    `archive_after_days` after they were recorded and deleted `delete_after_days` after
    (NULL: kept forever). Rules are evaluated by `position`; an event belongs to the first
    rule it matches (retention/policy.py)."""

    __tablename__ = "retention_policy"

    id: Mapped[int] = mapped_column(Integer, Identity(always=False), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, unique=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    # {action_prefix?, module?, outcome?, source?, tenant_id?}
    match: Mapped[dict[str, Any]] = mapped_column(JSON)
    archive_after_days: Mapped[int | None] = mapped_column(Integer)
    delete_after_days: Mapped[int | None] = mapped_column(Integer)
    critical: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str | None] = mapped_column(String(255))


class RetentionHold(Base):
    """A legal hold: events matching `filter` (the `/admin/activity` filter names) are never
    deleted or anonymised until `released_at` is set."""

    __tablename__ = "retention_hold"

    id: Mapped[int] = mapped_column(Integer, Identity(always=False), primary_key=True)
    reason: Mapped[str] = mapped_column(String(REASON_LENGTH))
    filter: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str | None] = mapped_column(String(255))
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    released_by: Mapped[str | None] = mapped_column(String(255))


class RetentionArchive(Base):
    """One written segment: the events of policy `policy_id` recorded on UTC `day`, ids
    `first_id`..`last_id` (not contiguous: other policies' events lie between), log
    positions `first_position`..`last_position`, in the file `path` (relative to
    AUDIT_ARCHIVE_DIR) with SHA-256 `sha256`, and its signed manifest, chained to the
    previous segment's. Unique per (policy, day): a rerun never writes a day twice."""

    __tablename__ = "retention_archive"
    __table_args__ = (UniqueConstraint("policy_id", "day"),)

    id: Mapped[int] = mapped_column(BigIntId, Identity(always=False), primary_key=True)
    # Not a foreign key: a segment outlives the rule that wrote it.
    policy_id: Mapped[int] = mapped_column(Integer)
    policy_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    day: Mapped[date] = mapped_column(Date)
    # The day as the recorded_at range [recorded_from, recorded_until) it covers.
    recorded_from: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_until: Mapped[datetime] = mapped_column(UTCDateTime())
    first_id: Mapped[int] = mapped_column(BigInteger)
    last_id: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(BigInteger)
    first_position: Mapped[int] = mapped_column(BigInteger)
    last_position: Mapped[int] = mapped_column(BigInteger)
    checkpoint_size: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(String(PATH_LENGTH))
    sha256: Mapped[str] = mapped_column(String(HASH_LENGTH))
    manifest_hash: Mapped[str] = mapped_column(String(HASH_LENGTH), unique=True)
    # Unique: two segments never follow the same one (the chain cannot fork).
    previous_manifest_hash: Mapped[str | None] = mapped_column(String(HASH_LENGTH), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The copy in AUDIT_ARCHIVE_S3_BUCKET (retention/upload.py): the segment's object key and
    # when both objects (segment, manifest) were confirmed there; NULL: not uploaded (yet).
    # `s3_error`: the last failed attempt, for people (never a secret).
    s3_key: Mapped[str | None] = mapped_column(String(PATH_LENGTH))
    uploaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    s3_error: Mapped[str | None] = mapped_column(String(ERROR_LENGTH))


def _restore_table() -> Table:
    # The columns of audit_event, as they are (restored rows equal the originals), plus
    # which segment they came from. No identity: ids are the originals'.
    columns: list[Column[Any]] = []
    for column in AuditEvent.__table__.columns:
        copy = Column(column.name, column.type, key=column.key, nullable=column.nullable)
        if column.name == "id":
            copy = Column("id", BigInteger, primary_key=True, autoincrement=False)
        columns.append(copy)
    return Table(
        "retention_restore",
        Base.metadata,
        *columns,
        Column("restored_from", String(HASH_LENGTH), nullable=False),
        Column("restored_at", UTCDateTime(), nullable=False),
    )


# `audit-service archive restore` writes here: a table for investigation, outside the log
# (no leaves, no triggers, not read by any feature).
retention_restore = _restore_table()
