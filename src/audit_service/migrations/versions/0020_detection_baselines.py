"""Detection baselines, suppression, inhibition, tenant business hours

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-03

`detection_volume` (hourly counts per user, user logins, tenant and module, cut at local
hours of AUDIT_DETECTIONS_TZ: the baselines of off_hours_learned, volume_spike_user and
volume_spike_tenant), `detection_subject` (since when each is counted),
`detection_suppression` (an entity suppressed for a rule until a
time), `alert.inhibited_by` (backward inhibition), and on `detection_rule_setting` the
suppression window and the tenant's time zone and business days.
Plain mutable bookkeeping, not part of the record: no triggers.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from audit_service.kit.models import UTCDateTime

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "detection_volume",
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("hour_start", UTCDateTime(), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "kind", "subject", "source", "tenant_id", "hour_start", name=op.f("pk_detection_volume")
        ),
    )
    op.create_index("ix_detection_volume_hour_start", "detection_volume", ["hour_start"])
    op.create_table(
        "detection_subject",
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "kind", "subject", "source", "tenant_id", name=op.f("pk_detection_subject")
        ),
    )
    op.create_index("ix_detection_subject_last_seen_at", "detection_subject", ["last_seen_at"])
    op.create_table(
        "detection_suppression",
        sa.Column("id", _BIGINT_ID, sa.Identity(always=False), nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("entity", sa.String(300), nullable=False),
        sa.Column("until", UTCDateTime(), nullable=False),
        sa.Column("note", sa.String(2000), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_detection_suppression")),
        sa.UniqueConstraint(
            "rule_id",
            "tenant_id",
            "entity",
            name=op.f("uq_detection_suppression_rule_id_tenant_id_entity"),
        ),
    )
    op.add_column("alert", sa.Column("inhibited_by", sa.BigInteger(), nullable=True))
    op.add_column("detection_rule_setting", sa.Column("suppress_minutes", sa.Integer()))
    op.add_column("detection_rule_setting", sa.Column("time_zone", sa.String(64)))
    op.add_column("detection_rule_setting", sa.Column("business_days", sa.String(40)))


def downgrade() -> None:
    with op.batch_alter_table("detection_rule_setting") as batch:
        batch.drop_column("business_days")
        batch.drop_column("time_zone")
        batch.drop_column("suppress_minutes")
    with op.batch_alter_table("alert") as batch:
        batch.drop_column("inhibited_by")
    op.drop_table("detection_suppression")
    op.drop_index("ix_detection_subject_last_seen_at", table_name="detection_subject")
    op.drop_table("detection_subject")
    op.drop_index("ix_detection_volume_hour_start", table_name="detection_volume")
    op.drop_table("detection_volume")
