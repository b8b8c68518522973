"""Forwarding to SIEMs

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02

`forward_destination`: a webhook, syslog or Splunk HEC destination, its format, filter,
write-only secrets, state and log-position cursor (with its own lease, so any number of
processes deliver each event once per destination); `forward_dead_letter`: events a
destination rejected for good; `forward_replay`: a range of positions sent again. Plain
mutable bookkeeping, not part of the record: no triggers.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from audit_service.kit.models import UTCDateTime

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "forward_destination",
        sa.Column("id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("format", sa.String(10), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("secrets", sa.JSON(), nullable=False),
        sa.Column("filter", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.Column("inflight_last", sa.BigInteger(), nullable=True),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("lease_holder", sa.String(100), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("delivered", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("failed", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_success_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("failing_since", UTCDateTime(), nullable=True),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_forward_destination")),
        sa.UniqueConstraint("name", name=op.f("uq_forward_destination_name")),
    )
    op.create_table(
        "forward_dead_letter",
        sa.Column("id", _BIGINT_ID, sa.Identity(always=False), nullable=False),
        sa.Column("destination_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("event_pk", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["destination_id"],
            ["forward_destination.id"],
            name=op.f("fk_forward_dead_letter_destination_id_forward_destination"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_forward_dead_letter")),
    )
    op.create_index(
        "ix_forward_dead_letter_destination",
        "forward_dead_letter",
        ["destination_id", "position"],
    )
    op.create_table(
        "forward_replay",
        sa.Column("id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("destination_id", sa.Integer(), nullable=False),
        sa.Column("from_position", sa.BigInteger(), nullable=False),
        sa.Column("to_position", sa.BigInteger(), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("delivered", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("inflight_last", sa.BigInteger(), nullable=True),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("lease_holder", sa.String(100), nullable=True),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["destination_id"],
            ["forward_destination.id"],
            name=op.f("fk_forward_replay_destination_id_forward_destination"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_forward_replay")),
    )
    op.create_index("ix_forward_replay_due", "forward_replay", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_forward_replay_due", table_name="forward_replay")
    op.drop_table("forward_replay")
    op.drop_index("ix_forward_dead_letter_destination", table_name="forward_dead_letter")
    op.drop_table("forward_dead_letter")
    op.drop_table("forward_destination")
