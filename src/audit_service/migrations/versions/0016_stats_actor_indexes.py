"""Statistics: indexes for the `actor` filter

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02

`stats_actor_bucket` and `stats_ip_bucket` are keyed by bucket first: a statistic filtered by
one actor read every actor's rows of the period. bench/stats.py at 10M events, 30 days:
top actions for one actor 133 -> 36 ms, a daily timeseries 54 -> 20 ms (p50).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_stats_actor_bucket_actor_id_bucket", "stats_actor_bucket", ["actor_id", "bucket"]
    )
    op.create_index(
        "ix_stats_ip_bucket_actor_key_bucket", "stats_ip_bucket", ["actor_key", "bucket"]
    )


def downgrade() -> None:
    op.drop_index("ix_stats_ip_bucket_actor_key_bucket", table_name="stats_ip_bucket")
    op.drop_index("ix_stats_actor_bucket_actor_id_bucket", table_name="stats_actor_bucket")
