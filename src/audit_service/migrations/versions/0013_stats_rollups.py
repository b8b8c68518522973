"""Statistics rollups

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02

Counts per 15-minute UTC bucket (stats/models.py says why 15 minutes): `stats_bucket`
(tenant x source x module x action x actor type), `stats_actor_bucket` (the same per actor),
`stats_ip_bucket` (per IP address and actor, with logins), and `stats_watermark` (the last
log position each rollup has counted). Mutable bookkeeping kept by the `stats.rollup` job,
not part of the record: no append-only triggers.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from audit_service.kit.models import UTCDateTime

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _counts(*names: str) -> list[sa.Column[int]]:
    return [
        sa.Column(name, sa.BigInteger(), server_default=sa.text("0"), nullable=False)
        for name in ("n_success", "n_failure", "n_denied", "n_error", *names)
    ]


def upgrade() -> None:
    op.create_table(
        "stats_bucket",
        sa.Column("bucket", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("module", sa.String(50), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("actor_type", sa.String(20), nullable=False),
        *_counts(),
        sa.PrimaryKeyConstraint(
            "bucket",
            "tenant_id",
            "source",
            "module",
            "action",
            "actor_type",
            name=op.f("pk_stats_bucket"),
        ),
    )
    op.create_table(
        "stats_actor_bucket",
        sa.Column("bucket", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("module", sa.String(50), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("actor_type", sa.String(20), nullable=False),
        sa.Column("actor_id", sa.String(200), nullable=False),
        *_counts(),
        sa.PrimaryKeyConstraint(
            "bucket",
            "tenant_id",
            "source",
            "module",
            "action",
            "actor_type",
            "actor_id",
            name=op.f("pk_stats_actor_bucket"),
        ),
    )
    op.create_table(
        "stats_ip_bucket",
        sa.Column("bucket", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("ip", sa.String(45), nullable=False),
        sa.Column("actor_type", sa.String(20), nullable=False),
        sa.Column("actor_key", sa.String(205), nullable=False),
        *_counts("logins_ok", "logins_failed"),
        sa.PrimaryKeyConstraint(
            "bucket", "tenant_id", "ip", "actor_type", "actor_key", name=op.f("pk_stats_ip_bucket")
        ),
    )
    op.create_table(
        "stats_watermark",
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_stats_watermark")),
    )


def downgrade() -> None:
    op.drop_table("stats_watermark")
    op.drop_table("stats_ip_bucket")
    op.drop_table("stats_actor_bucket")
    op.drop_table("stats_bucket")
