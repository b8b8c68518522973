"""Alert channels and the notification outbox.

The outbox is state-based (as Alertmanager's notification log): per channel and alert the
latest state (`notification_subject`, pending until a send carried that version) and per
channel and group (rule + tenant) when it was last sent and when it may be sent next
(`notification_group`, with a short claim so one deliverer sends a group version). Plain
mutable bookkeeping, not the record: what was sent is in the `alert.notified` events.
"""

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
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from audit_service.kit.models import Base, UTCDateTime

NAME_LENGTH = 200
ERROR_LENGTH = 500
GROUP_KEY_LENGTH = 200


class AlertChannel(Base):
    """Where alert notifications go: an e-mail list or a signed webhook, for alerts of at
    least `min_severity`, optionally only some rules and tenants. `secrets` is write-only
    (`webhook_secrets`: one or two whsec_ secrets)."""

    __tablename__ = "alert_channel"

    id: Mapped[int] = mapped_column(Integer, Identity(always=False), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    kind: Mapped[str] = mapped_column(String(10))  # email / webhook
    config: Mapped[dict[str, Any]] = mapped_column(JSON)  # recipients | url
    secrets: Mapped[dict[str, Any]] = mapped_column(JSON)
    min_severity: Mapped[str] = mapped_column(String(10))
    rules: Mapped[list[str]] = mapped_column(JSON)  # empty: every rule
    tenants: Mapped[list[str]] = mapped_column(JSON)  # empty: every tenant
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(ERROR_LENGTH))
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str | None] = mapped_column(String(255))


class NotificationGroup(Base):
    """One channel x group key. `version` moves with every change of one of its alerts;
    `pending` (since `pending_since`) until a send carried the latest version; the deliverer
    sends pending changes group_wait after the first change of a group never sent, else
    group_interval after `last_sent_at`; `repeat_at`: when still-unresolved alerts are sent
    again. Failures: `attempts`, `last_error`,
    `next_attempt_at`. `claim_until`/`claim_holder`: the one deliverer sending it now.
    `sends` counts successful sends (part of the stable webhook-id)."""

    __tablename__ = "notification_group"
    __table_args__ = (Index("ix_notification_group_due", "pending", "pending_since"),)

    channel_id: Mapped[int] = mapped_column(
        ForeignKey("alert_channel.id", ondelete="CASCADE"), primary_key=True
    )
    group_key: Mapped[str] = mapped_column(String(GROUP_KEY_LENGTH), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, server_default=text("1"))
    sent_version: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    sends: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    pending: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    pending_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    repeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(String(ERROR_LENGTH))
    claim_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claim_holder: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class NotificationSubject(Base):
    """One channel x alert: the alert as last told (`state`, a snapshot: notifications never
    read the detections' tables), `version` moving with each change, `pending` until a send
    carried it, and what was last sent."""

    __tablename__ = "notification_subject"
    __table_args__ = (Index("ix_notification_subject_group", "channel_id", "group_key"),)

    channel_id: Mapped[int] = mapped_column(
        ForeignKey("alert_channel.id", ondelete="CASCADE"), primary_key=True
    )
    alert_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    group_key: Mapped[str] = mapped_column(String(GROUP_KEY_LENGTH))
    status: Mapped[str] = mapped_column(String(15))
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(BigInteger, server_default=text("1"))
    pending: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    pending_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    notified_status: Mapped[str | None] = mapped_column(String(15))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
