"""What the tamper-evident log stores beside the leaves: tiles, checkpoints, keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Identity,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from audit_service.audit_log.models import BigIntId
from audit_service.kit.models import Base, UTCDateTime

KEY_KIND_LENGTH = 10
KEY_NAME_LENGTH = 300


class IntegrityTile(Base):
    """A C2SP tlog-tiles tile: `data` is its hashes, 32 bytes each. A partial tile grows in
    place (a trigger lets an UPDATE only extend it) until it is full (256 hashes), then it
    never changes; a partial tile at width W is the first W hashes of its row."""

    __tablename__ = "integrity_tile"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class IntegrityCheckpoint(Base):
    """Every signed checkpoint, newest last (append-only): a C2SP signed note. Re-issues of
    the same tree size (idle co-signatures with a fresh timestamp) are rows of their own."""

    __tablename__ = "integrity_checkpoint"

    id: Mapped[int] = mapped_column(BigIntId, Identity(always=False), primary_key=True)
    tree_size: Mapped[int] = mapped_column(BigInteger, index=True)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class IntegrityKey(Base):
    """Commitment keys (leaf entry v1): kind `day` (name YYYY-MM-DD, for IP and user agent)
    or `subject` (name = the data subject, for actor fields). Erasing a key anonymises what
    it committed to without changing a leaf; it is never updated."""

    __tablename__ = "integrity_key"

    kind: Mapped[str] = mapped_column(String(KEY_KIND_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(KEY_NAME_LENGTH), primary_key=True)
    key: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class IntegrityLog(Base):
    """The log's identity (one row, written once): its checkpoint origin."""

    __tablename__ = "integrity_log"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    origin: Mapped[str] = mapped_column(String(KEY_NAME_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


VERIFY_STATUS_LENGTH = 20
VERIFY_REQUESTER_LENGTH = 200
VERIFY_ERROR_LENGTH = 500


class IntegrityVerifyRun(Base):
    """One verification of the whole log (asked for at POST /admin/integrity/verify, or the
    daily one): queued, then running (with progress), then finished with its outcome. The
    `integrity.verify` job takes the oldest unfinished run; a run cut short (the process
    stopped) keeps its finished tasks and the next holder of the job resumes it."""

    __tablename__ = "integrity_verify_run"

    id: Mapped[int] = mapped_column(BigIntId, Identity(always=False), primary_key=True)
    status: Mapped[str] = mapped_column(String(VERIFY_STATUS_LENGTH))  # queued/running/finished
    trigger: Mapped[str] = mapped_column(String(VERIFY_STATUS_LENGTH))  # api / schedule
    requested_by: Mapped[str] = mapped_column(String(VERIFY_REQUESTER_LENGTH))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # What the run checks, fixed when it starts (verify.Plan), so a resumed run checks the
    # same tree against the same checkpoints.
    plan: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    tree_size: Mapped[int | None] = mapped_column(BigInteger)
    tasks_total: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    tasks_done: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    positions_done: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    outcome: Mapped[str | None] = mapped_column(String(VERIFY_STATUS_LENGTH))
    problem_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # The report (verify.Report.to_json) with its first problems; the full list is in the
    # CLI's output (`audit-service verify --json`).
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(String(VERIFY_ERROR_LENGTH))


class IntegrityVerifyTask(Base):
    """A finished task of a running verification (verify.TaskResult as JSON), kept until the
    run finishes so that a resumed run does not redo it."""

    __tablename__ = "integrity_verify_task"

    run_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    task_index: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)


class IntegrityCommitment(Base):
    """The commitments of an event's personal fields, kept when the key they were made with
    is destroyed or the clear value replaced (retention: anonymisation, erasure): `verify`
    then rebuilds the event's entry from the row and these, and the leaf still matches.
    Written only by the retention path (PostgreSQL: its SECURITY DEFINER functions); a
    field's commitment, once kept, never changes."""

    __tablename__ = "integrity_commitment"

    event_pk: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    ip: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    user_agent: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    actor_id: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    actor_name: Mapped[bytes | None] = mapped_column(LargeBinary(32))
