"""The event log spine and its tamper evidence

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

- Postgres: `audit_event.txid xid8 DEFAULT pg_current_xact_id()`, the commit-order key. Added
  nullable first and the default set afterwards, so a 10M-row table is not rewritten: the
  rows written before have no txid and are sequenced once, by id. Indexed with id (the
  sequencer reads `(txid, id) > cursor` below the snapshot's xmin).
- `audit_leaf`: the log position of every sequenced event and its leaf hash; `log_cursor`:
  the sequencer's state. `integrity_tile`, `integrity_checkpoint`, `integrity_key`,
  `integrity_log`: the Merkle tiles, the signed checkpoints, the commitment keys and the
  log's origin.
- The database refuses rewrites of them, like audit_event: leaves, checkpoints and the log
  identity are append-only; a tile may only grow (a full tile never changes); a key is
  never updated (erasing one is the retention issue's anonymisation). Postgres refuses
  TRUNCATE of each by a statement trigger.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from audit_service.kit.models import UTCDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table → verbs refused outright (TRUNCATE too on Postgres).
_APPEND_ONLY = {
    "audit_leaf": ("UPDATE", "DELETE"),
    "integrity_checkpoint": ("UPDATE", "DELETE"),
    "integrity_log": ("UPDATE", "DELETE"),
    "integrity_tile": ("DELETE",),
    "integrity_key": ("UPDATE",),
}
_FULL_TILE = 256 * 32

_PG_REFUSE = """
CREATE FUNCTION log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""
_TILE_GROWS = (
    "NEW.level = OLD.level AND NEW.idx = OLD.idx "
    f"AND length(OLD.data) < {_FULL_TILE} AND length(NEW.data) > length(OLD.data) "
    f"AND length(NEW.data) <= {_FULL_TILE} "
    "AND {substr}(NEW.data, 1, length(OLD.data)) = OLD.data"
)
_PG_TILE = f"""
CREATE FUNCTION integrity_tile_grows_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF {_TILE_GROWS.format(substr="substr")} THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'integrity_tile may only grow: UPDATE refused'
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""


def _tables() -> None:
    op.create_table(
        "audit_leaf",
        sa.Column("position", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("event_pk", sa.BigInteger(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("position", name=op.f("pk_audit_leaf")),
        sa.UniqueConstraint("event_pk", name=op.f("uq_audit_leaf_event_pk")),
    )
    op.create_table(
        "log_cursor",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("next_position", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("cursor_txid", sa.BigInteger(), nullable=True),
        sa.Column("cursor_id", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log_cursor")),
    )
    op.execute("INSERT INTO log_cursor (id, next_position, cursor_id) VALUES (1, 0, 0)")
    op.create_table(
        "integrity_tile",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name=op.f("pk_integrity_tile")),
    )
    op.create_table(
        "integrity_checkpoint",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.Identity(always=False),
            nullable=False,
        ),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("signed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integrity_checkpoint")),
    )
    op.create_index(
        op.f("ix_integrity_checkpoint_tree_size"), "integrity_checkpoint", ["tree_size"]
    )
    op.create_table(
        "integrity_key",
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("key", sa.LargeBinary(32), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "name", name=op.f("pk_integrity_key")),
    )
    op.create_table(
        "integrity_log",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("origin", sa.String(300), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integrity_log")),
    )


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        # Two steps: ADD COLUMN with a volatile default would rewrite every row.
        op.execute("ALTER TABLE audit_event ADD COLUMN txid xid8")
        op.execute("ALTER TABLE audit_event ALTER COLUMN txid SET DEFAULT pg_current_xact_id()")
        op.execute("CREATE INDEX ix_audit_event_txid_id ON audit_event (txid, id)")
    _tables()
    if postgres:
        op.execute(_PG_REFUSE)
        op.execute(_PG_TILE)
        for table, verbs in _APPEND_ONLY.items():
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE {' OR '.join(verbs)} ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION log_append_only()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION log_append_only()"
            )
        op.execute(
            "CREATE TRIGGER integrity_tile_grows_only BEFORE UPDATE ON integrity_tile "
            "FOR EACH ROW EXECUTE FUNCTION integrity_tile_grows_only()"
        )
        return
    for table, verbs in _APPEND_ONLY.items():
        for verb in verbs:
            op.execute(
                f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {verb} refused'); END"
            )
    op.execute(
        "CREATE TRIGGER integrity_tile_grows_only BEFORE UPDATE ON integrity_tile "
        f"WHEN NOT ({_TILE_GROWS.format(substr='substr')}) "
        "BEGIN SELECT RAISE(ABORT, 'integrity_tile may only grow: UPDATE refused'); END"
    )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in ("integrity_log", "integrity_key", "integrity_checkpoint", "integrity_tile"):
        if table == "integrity_checkpoint":
            op.drop_index(op.f("ix_integrity_checkpoint_tree_size"), table_name=table)
        op.drop_table(table)
    op.drop_table("log_cursor")
    op.drop_table("audit_leaf")
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS integrity_tile_grows_only()")
        op.execute("DROP FUNCTION IF EXISTS log_append_only()")
        op.execute("DROP INDEX IF EXISTS ix_audit_event_txid_id")
        op.execute("ALTER TABLE audit_event DROP COLUMN txid")
