"""Statistics: hour and UTC-day rollup levels

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-03

`stats_bucket_hour` and `stats_bucket_day` (the counts of `stats_bucket` per UTC hour and
day), `stats_actor_bucket_day` and `stats_ip_bucket_day` (per UTC day), and
`stats_actor_tenant_day` (per UTC day, tenant and actor only: distinct and top actors
without a source, module or action filter): a period reads day
rows for its whole UTC days, hour rows beside them and 15-minute rows only at its edges
(stats/models.py, buckets.pieces). Backfilled from the 15-minute rows, one INSERT … SELECT
… GROUP BY per level, in this migration's transaction: the rollup job cannot add to the
15-minute rows meanwhile (the migration runs before the service), and from here on every
round adds to all levels in its own transaction.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OUTCOMES = ("n_success", "n_failure", "n_denied", "n_error")
_BUCKET_KEYS = ("tenant_id", "source", "module", "action", "actor_type")
_KEY_TYPES = {
    "tenant_id": 100,
    "source": 100,
    "module": 50,
    "action": 100,
    "actor_type": 20,
    "actor_id": 200,
    "ip": 45,
    "actor_key": 205,
}
# new table -> (source table, key columns after bucket, count columns, seconds per row)
LEVELS = {
    "stats_bucket_hour": ("stats_bucket", _BUCKET_KEYS, _OUTCOMES, 3600),
    # From the hour rows just written: a quarter of the rows to read.
    "stats_bucket_day": ("stats_bucket_hour", _BUCKET_KEYS, _OUTCOMES, 86400),
    "stats_actor_bucket_day": (
        "stats_actor_bucket",
        (*_BUCKET_KEYS, "actor_id"),
        _OUTCOMES,
        86400,
    ),
    # Without source, module and action (models.StatsActorTenantDay): from the day rows.
    "stats_actor_tenant_day": (
        "stats_actor_bucket_day",
        ("tenant_id", "actor_type", "actor_id"),
        _OUTCOMES,
        86400,
    ),
    "stats_ip_bucket_day": (
        "stats_ip_bucket",
        ("tenant_id", "ip", "actor_type", "actor_key"),
        (*_OUTCOMES, "logins_ok", "logins_failed"),
        86400,
    ),
}
INDEXES = {
    "stats_actor_bucket_day": ("ix_stats_actor_bucket_day_actor_id_bucket", "actor_id"),
    "stats_ip_bucket_day": ("ix_stats_ip_bucket_day_actor_key_bucket", "actor_key"),
}


def backfill_sql(table: str) -> str:
    """The INSERT … SELECT that fills `table` from the next finer level (bench/stats.py
    uses the same statements)."""
    source, keys, counts, size = LEVELS[table]
    names = ", ".join(keys)
    sums = ", ".join(f"sum({c})" for c in counts)
    return (
        f"INSERT INTO {table} (bucket, {names}, {', '.join(counts)}) "
        f"SELECT bucket - bucket % {size}, {names}, {sums} FROM {source} "
        f"GROUP BY bucket - bucket % {size}, {names} ORDER BY 1"
    )


def upgrade() -> None:
    for table, (_, keys, counts, _size) in LEVELS.items():
        op.create_table(
            table,
            sa.Column("bucket", sa.BigInteger(), autoincrement=False, nullable=False),
            *[sa.Column(k, sa.String(_KEY_TYPES[k]), nullable=False) for k in keys],
            *[
                sa.Column(c, sa.BigInteger(), server_default=sa.text("0"), nullable=False)
                for c in counts
            ],
            sa.PrimaryKeyConstraint("bucket", *keys, name=op.f(f"pk_{table}")),
        )
        op.execute(backfill_sql(table))
        if table in INDEXES:
            name, column = INDEXES[table]
            op.create_index(name, table, [column, "bucket"])


def downgrade() -> None:
    for table in reversed(LEVELS):
        if table in INDEXES:
            op.drop_index(INDEXES[table][0], table_name=table)
        op.drop_table(table)
