"""Runtime settings (maintenance mode) shared by every replica

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

Small JSON values changed while the service runs (maintenance mode first), kept in the
database so that they survive restarts and every replica sees the same value.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from audit_service.kit.models import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "runtime_setting",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_runtime_setting")),
    )


def downgrade() -> None:
    op.drop_table("runtime_setting")
