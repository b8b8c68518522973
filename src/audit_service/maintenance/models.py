"""Runtime settings: small JSON values changed while the service runs, shared by replicas."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from audit_service.kit.models import Base, UTCDateTime, utcnow


class RuntimeSetting(Base):
    __tablename__ = "runtime_setting"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # A snapshot of who changed it (a user name or the CLI): not a key, it survives deletions.
    updated_by: Mapped[str | None] = mapped_column(String(255))
