"""Ingestion limits

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

`source_action`: the distinct actions each posting service has used, so the per-source cap
on new actions (AUDIT_MAX_ACTIONS_PER_SOURCE) is a primary-key lookup, not an event scan.
Filled from the events already stored.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from audit_service.kit.models import UTCDateTime

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "source_action",
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("first_seen", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("source", "action", name=op.f("pk_source_action")),
    )
    # Ingested events only: the service's own events ('audit-service') are not capped.
    op.execute(
        "INSERT INTO source_action (source, action, first_seen) "
        "SELECT source, action, min(recorded_at) FROM audit_event "
        "WHERE source <> 'audit-service' GROUP BY source, action"
    )


def downgrade() -> None:
    op.drop_table("source_action")
