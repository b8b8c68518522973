"""Per-user login failure counters (atomic lockout)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

`login_counter` holds the attempts per attempted username in the current lockout window,
reserved atomically (INSERT … ON CONFLICT DO UPDATE … RETURNING) before the password check.
It replaces counting `auth.*` events, which any API key could post.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from audit_service.kit.models import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_counter",
        sa.Column("username", sa.String(length=150), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("window_started_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("username", name=op.f("pk_login_counter")),
    )
    op.create_index(
        op.f("ix_login_counter_window_started_at"),
        "login_counter",
        ["window_started_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_login_counter_window_started_at"), table_name="login_counter")
    op.drop_table("login_counter")
