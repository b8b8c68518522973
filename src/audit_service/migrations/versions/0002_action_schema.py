"""action schemas

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

JSON Schemas that the `metadata` of ingested events must match, one per action.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from audit_service.kit.models import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "action_schema",
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("schema", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["updated_by"],
            ["user.id"],
            name=op.f("fk_action_schema_updated_by_user"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("action", name=op.f("pk_action_schema")),
    )


def downgrade() -> None:
    op.drop_table("action_schema")
