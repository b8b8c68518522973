"""Export recipients

Revision ID: 0011
Revises: 0009 (for now: 0010 is another branch's; set this to "0010" when both are merged)
Create Date: 2026-12-10

The age X25519 public keys an admin registers so that exports can be encrypted to them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from audit_service.kit.models import UTCDateTime

revision: str = "0011"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "export_recipient",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("public_key", sa.String(100), nullable=False),
        sa.Column("fingerprint", sa.String(71), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_export_recipient")),
        sa.UniqueConstraint("public_key", name=op.f("uq_export_recipient_public_key")),
    )


def downgrade() -> None:
    op.drop_table("export_recipient")
