"""Alert notifications

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03

`alert_channel`: an e-mail or signed-webhook channel for alerts (write-only secrets, minimum
severity, rule and tenant filters) with its delivery status; `notification_group` and
`notification_subject`: the state-based outbox (per channel x group key and channel x alert:
latest version, pending, last sent, retries, a short claim). Plain mutable bookkeeping, not
part of the record: no triggers.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from audit_service.kit.models import UTCDateTime

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alert_channel",
        sa.Column("id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("secrets", sa.JSON(), nullable=False),
        sa.Column("min_severity", sa.String(10), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("tenants", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("last_success_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("last_error_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_channel")),
        sa.UniqueConstraint("name", name=op.f("uq_alert_channel_name")),
    )
    op.create_table(
        "notification_group",
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("group_key", sa.String(200), nullable=False),
        sa.Column("version", sa.BigInteger(), server_default=sa.text("1"), nullable=False),
        sa.Column("sent_version", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("sends", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("pending", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("pending_since", UTCDateTime(), nullable=True),
        sa.Column("repeat_at", UTCDateTime(), nullable=True),
        sa.Column("last_sent_at", UTCDateTime(), nullable=True),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("claim_until", UTCDateTime(), nullable=True),
        sa.Column("claim_holder", sa.String(100), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["alert_channel.id"],
            name=op.f("fk_notification_group_channel_id_alert_channel"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("channel_id", "group_key", name=op.f("pk_notification_group")),
    )
    op.create_index("ix_notification_group_due", "notification_group", ["pending", "pending_since"])
    op.create_table(
        "notification_subject",
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.BigInteger(), nullable=False),
        sa.Column("group_key", sa.String(200), nullable=False),
        sa.Column("status", sa.String(15), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("version", sa.BigInteger(), server_default=sa.text("1"), nullable=False),
        sa.Column("pending", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("pending_since", UTCDateTime(), nullable=True),
        sa.Column("notified_at", UTCDateTime(), nullable=True),
        sa.Column("notified_status", sa.String(15), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["alert_channel.id"],
            name=op.f("fk_notification_subject_channel_id_alert_channel"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("channel_id", "alert_id", name=op.f("pk_notification_subject")),
    )
    op.create_index(
        "ix_notification_subject_group", "notification_subject", ["channel_id", "group_key"]
    )


def downgrade() -> None:
    op.drop_index("ix_notification_subject_group", table_name="notification_subject")
    op.drop_table("notification_subject")
    op.drop_index("ix_notification_group_due", table_name="notification_group")
    op.drop_table("notification_group")
    op.drop_table("alert_channel")
