"""Recorder hardening: client_request_id, TRUNCATE refused, no delete door

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

- `client_request_id`: the caller's X-Request-ID, kept beside our own always-minted
  `request_id` (which the caller no longer chooses).
- Postgres: the append-only trigger function loses its `SET LOCAL audit.allow_delete = 'on'`
  door (any session of the service's role could open it); the retention issue brings a
  restricted path. A statement-level trigger refuses `TRUNCATE audit_event`, which row
  triggers never see. SQLite has no TRUNCATE and never had the door.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FUNCTION_WITHOUT_DOOR = """
CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_event is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""

# 0001's function, verbatim, for the downgrade.
_FUNCTION_WITH_DOOR = """
CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('audit.allow_delete', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_event is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""


def upgrade() -> None:
    # Plain ADD COLUMN on both dialects (batch mode would rebuild the SQLite table and drop
    # its append-only triggers).
    op.add_column("audit_event", sa.Column("client_request_id", sa.String(128), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_FUNCTION_WITHOUT_DOOR)
        op.execute(
            "CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_truncate ON audit_event")
        op.execute(_FUNCTION_WITH_DOOR)
    # SQLite >= 3.35 drops a column in place (no table rebuild, triggers kept).
    op.drop_column("audit_event", "client_request_id")
