"""Change notices for the per-process cache of users, keys, revocations and schemas

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-04

Each service process keeps the rows of these tables it has read (core/cache.py) and must drop
them the moment anything changes them — a request in another process, the CLI, an operator in
psql. A trigger on each table sends `NOTIFY audit_cache, '<table>'` from the writing
transaction: PostgreSQL delivers it at commit (never for a rollback) and folds repeats within
one transaction into one. Row-level, so a statement that changes nothing notifies nobody (plus one
for TRUNCATE, which fires no row trigger).
PostgreSQL only: on SQLite nothing is cached.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Must match core/cache.py's WATCHED_TABLES and CHANNEL (tests/core/test_cache.py checks).
TABLES = ("user", "api_key", "revoked_token", "action_schema", "source_action")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION audit_cache_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('audit_cache', TG_TABLE_NAME);
            RETURN NULL;
        END
        $$
        """
    )
    for table in TABLES:
        op.execute(
            f'CREATE TRIGGER audit_cache_notify AFTER INSERT OR UPDATE OR DELETE ON "{table}" '
            "FOR EACH ROW EXECUTE FUNCTION audit_cache_notify()"
        )
        # TRUNCATE fires no row trigger (an operator's reset, the test suite's).
        op.execute(
            f'CREATE TRIGGER audit_cache_notify_truncate AFTER TRUNCATE ON "{table}" '
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_cache_notify()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f'DROP TRIGGER audit_cache_notify ON "{table}"')
        op.execute(f'DROP TRIGGER audit_cache_notify_truncate ON "{table}"')
    op.execute("DROP FUNCTION audit_cache_notify()")
