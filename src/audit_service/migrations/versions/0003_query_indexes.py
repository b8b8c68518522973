"""Indexes for every activity filter at scale

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

Each filter gets an index that leads with its column and continues with occurred_at (pages
are newest first); chosen with EXPLAIN on 10M events, see docs/performance.md. The plain
ip_bytes index becomes (ip_bytes, occurred_at) so one busy address pages without a sort.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PARTIAL = {"tenant_id": "tenant_id IS NOT NULL", "target_id": "target_id IS NOT NULL"}
_NEW = {
    "ix_audit_event_module_outcome_occurred_at": ["module", "outcome", "occurred_at"],
    "ix_audit_event_outcome_occurred_at": ["outcome", "occurred_at"],
    "ix_audit_event_source_occurred_at": ["source", "occurred_at"],
    "ix_audit_event_tenant_id_occurred_at": ["tenant_id", "occurred_at"],
    "ix_audit_event_target_id_occurred_at": ["target_id", "occurred_at"],
    "ix_audit_event_ip_bytes_occurred_at": ["ip_bytes", "occurred_at"],
}


# Plain CREATE/DROP INDEX on both dialects (no batch mode: rebuilding the SQLite table would
# drop its append-only triggers).
def upgrade() -> None:
    op.drop_index("ix_audit_event_ip_bytes", table_name="audit_event")
    for name, columns in _NEW.items():
        where = _PARTIAL.get(columns[0])
        op.create_index(
            name,
            "audit_event",
            columns,
            postgresql_where=sa.text(where) if where else None,
            sqlite_where=sa.text(where) if where else None,
        )


def downgrade() -> None:
    for name in _NEW:
        op.drop_index(name, table_name="audit_event")
    op.create_index("ix_audit_event_ip_bytes", "audit_event", ["ip_bytes"])
