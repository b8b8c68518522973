"""An index behind the activity history's `request_id` filter

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-03

`GET /admin/activity?request_id=…` is an exact match; without an index it scans the table
(10M rows). A request records a handful of events, so a B-tree on request_id alone finds
them and the page sorts those few; partial (WHERE request_id IS NOT NULL) because most
ingested events carry no request id, which keeps the index small.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WHERE = "request_id IS NOT NULL"


# Plain CREATE/DROP INDEX on both dialects, as 0003 does (no batch mode: rebuilding the
# SQLite table would drop its append-only triggers).
def upgrade() -> None:
    op.create_index(
        "ix_audit_event_request_id",
        "audit_event",
        ["request_id"],
        postgresql_where=sa.text(_WHERE),
        sqlite_where=sa.text(_WHERE),
    )


def downgrade() -> None:
    op.drop_index("ix_audit_event_request_id", table_name="audit_event")
