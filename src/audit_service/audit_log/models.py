"""The record itself: one append-only row per event."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from audit_service.kit.ids import new_event_id
from audit_service.kit.models import DATABASE_ONLY, Base, UTCDateTime

ACTOR_TYPES = ("user", "service", "system", "anonymous")
OUTCOMES = ("success", "failure", "denied", "error")

# SQLite only auto-increments INTEGER PRIMARY KEY; Postgres gets a real bigint identity.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")
JSONDocument = JSON().with_variant(JSONB(), "postgresql")


class AuditEvent(Base):
    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(BigIntId, Identity(always=False), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid(), unique=True, default=new_event_id)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    source: Mapped[str] = mapped_column(String(100))
    tenant_id: Mapped[str | None] = mapped_column(String(100))
    actor_type: Mapped[str] = mapped_column(String(20))
    actor_id: Mapped[str | None] = mapped_column(String(200))
    actor_name: Mapped[str | None] = mapped_column(String(200))
    actor_role: Mapped[str | None] = mapped_column(String(50))
    action: Mapped[str] = mapped_column(String(100))
    module: Mapped[str] = mapped_column(String(50))
    outcome: Mapped[str] = mapped_column(String(10))
    description: Mapped[str | None] = mapped_column(Text)
    target_type: Mapped[str | None] = mapped_column(String(100))
    target_id: Mapped[str | None] = mapped_column(String(200))
    ip: Mapped[str | None] = mapped_column(String(45))
    ip_bytes: Mapped[bytes | None] = mapped_column(LargeBinary(16))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    request_id: Mapped[str | None] = mapped_column(String(128))
    client_request_id: Mapped[str | None] = mapped_column(String(128))
    method: Mapped[str | None] = mapped_column(String(10))
    path: Mapped[str | None] = mapped_column(String(512))
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column()
    event_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSONDocument, default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (
        CheckConstraint(f"actor_type IN {ACTOR_TYPES!r}", name="actor_type"),
        CheckConstraint(f"outcome IN {OUTCOMES!r}", name="outcome"),
        # Idempotency: one event per (source, key), forever; NULL keys never collide.
        Index("uq_audit_event_source_idempotency_key", "source", "idempotency_key", unique=True),
        # Every page is "newest first": each filter gets an index that leads with the filtered
        # column and continues with occurred_at, so a page is a short backward index walk
        # and the capped count an index-only scan. Chosen by EXPLAIN at 10M rows; see
        # docs/performance.md.
        Index("ix_audit_event_occurred_at_id", "occurred_at", "id"),
        # Retention ages events by the service's own clock (migration 0022): one UTC day of
        # recorded_at is one index range.
        Index("ix_audit_event_recorded_at_id", "recorded_at", "id"),
        Index("ix_audit_event_actor_id_occurred_at", "actor_id", "occurred_at"),
        Index("ix_audit_event_actor_name_occurred_at", "actor_name", "occurred_at"),
        Index("ix_audit_event_action_occurred_at", "action", "occurred_at"),
        Index("ix_audit_event_module_occurred_at", "module", "occurred_at"),
        Index("ix_audit_event_module_outcome_occurred_at", "module", "outcome", "occurred_at"),
        Index("ix_audit_event_outcome_occurred_at", "outcome", "occurred_at"),
        Index("ix_audit_event_source_occurred_at", "source", "occurred_at"),
        Index(
            "ix_audit_event_tenant_id_occurred_at",
            "tenant_id",
            "occurred_at",
            postgresql_where=text("tenant_id IS NOT NULL"),
            sqlite_where=text("tenant_id IS NOT NULL"),
        ),
        Index(
            "ix_audit_event_target_id_occurred_at",
            "target_id",
            "occurred_at",
            postgresql_where=text("target_id IS NOT NULL"),
            sqlite_where=text("target_id IS NOT NULL"),
        ),
        Index("ix_audit_event_ip_bytes_occurred_at", "ip_bytes", "occurred_at"),
        # `request_id` (exact): a request records a handful of events, so the id alone
        # finds them; most ingested events carry none, hence partial (migration 0024).
        Index(
            "ix_audit_event_request_id",
            "request_id",
            postgresql_where=text("request_id IS NOT NULL"),
            sqlite_where=text("request_id IS NOT NULL"),
        ),
        # Trigram index behind `q` (case-insensitive substring search); Postgres only.
        Index(
            "ix_audit_event_description_trgm",
            "description",
            postgresql_using="gin",
            postgresql_ops={"description": "gin_trgm_ops"},
            info={"postgresql_only": True},
        ).ddl_if(dialect="postgresql"),
    )


# audit_event.txid (Postgres: `xid8 DEFAULT pg_current_xact_id()`, indexed with id) is the
# commit-order key the sequencer reads; the ORM never touches it (migration 0009).
DATABASE_ONLY["audit_event"] = frozenset({"txid", "ix_audit_event_txid_id"})


class AuditLeaf(Base):
    """The log position: event `event_pk` is the `position`-th event of the log (gap-free,
    in commit order), with the leaf hash of its v1 entry. Append-only, like the events; a
    leaf outlives its row (retention deletes rows, never leaves)."""

    __tablename__ = "audit_leaf"

    position: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    event_pk: Mapped[int] = mapped_column(BigInteger, unique=True)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LogCursor(Base):
    """The sequencer's own state (one row): the next position and the (txid, id) of the
    last sequenced event. `cursor_txid` is NULL while the rows written before migration 0009
    (which have no txid) are being sequenced by id."""

    __tablename__ = "log_cursor"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    next_position: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    cursor_txid: Mapped[int | None] = mapped_column(BigInteger)
    cursor_id: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
