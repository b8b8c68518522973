"""What the activity room stores of its own: the recipients exports can be encrypted to."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from audit_service.kit.models import Base, UTCDateTime, utcnow


class ExportRecipient(Base):
    """An age X25519 public key registered by an admin; `?recipient=<id>` encrypts an
    export to it. Only the public key is known here: nobody at the service can decrypt."""

    __tablename__ = "export_recipient"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    public_key: Mapped[str] = mapped_column(String(100), unique=True)
    fingerprint: Mapped[str] = mapped_column(String(71))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # A snapshot of who registered it (not a key: it survives the user's deletion).
    created_by: Mapped[str | None] = mapped_column(String(255))
