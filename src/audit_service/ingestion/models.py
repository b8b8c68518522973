"""Registered JSON Schemas for the `metadata` of ingested events, one per action."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, PrimaryKeyConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from audit_service.kit.models import Base, UTCDateTime, utcnow


class ActionSchema(Base):
    __tablename__ = "action_schema"

    action: Mapped[str] = mapped_column(String(100), primary_key=True)
    json_schema: Mapped[dict[str, Any]] = mapped_column("schema", JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))


class SourceAction(Base):
    """Each distinct action a posting service (`source`) has used: what its per-source cap
    (AUDIT_MAX_ACTIONS_PER_SOURCE) counts, without scanning the events."""

    __tablename__ = "source_action"

    source: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(100))
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (PrimaryKeyConstraint("source", "action"),)
