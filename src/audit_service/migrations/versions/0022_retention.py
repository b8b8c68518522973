"""Retention: policies, legal holds, archive segments, the restore table

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-03

`retention_policy` (ordered rules, seeded with the defaults of issue 12: the critical
classes kept 2,555 days, then everything archived at 90 days and deleted at 365),
`retention_hold` (legal holds: an `/admin/activity` filter and a reason),
`retention_archive` (one row per written segment, unique per policy and UTC day, its
manifest hash chained to the previous one) and `retention_restore` (the columns of
audit_event, where `audit-service archive restore` re-imports a segment for investigation).
Plus `ix_audit_event_recorded_at_id`: retention ages events by `recorded_at` (the service's
clock; `occurred_at` is the client's and may be back-dated), one UTC day is one index range.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from audit_service.kit.models import UTCDateTime

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CRITICAL_DAYS = 2555
# (name, match) of the critical classes, evaluated first; then the catch-all.
CRITICAL = (
    ("Authentication failures", {"action_prefix": "auth.", "outcome": "failure"}),
    ("User administration", {"action_prefix": "user."}),
    ("API keys", {"action_prefix": "api_key."}),
    ("Configuration changes", {"action_prefix": "config."}),
    ("System events", {"action_prefix": "system."}),
    ("Denied", {"outcome": "denied"}),
    ("Errors", {"outcome": "error"}),
    ("Integrity", {"action_prefix": "integrity."}),
    ("Retention", {"action_prefix": "retention."}),
)
BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _policies() -> list[dict[str, object]]:
    now = datetime.now(UTC)
    rows: list[dict[str, object]] = []
    for i, (name, match) in enumerate(CRITICAL):
        rows.append(
            {
                "position": (i + 1) * 10,
                "name": name,
                "match": match,
                "archive_after_days": 90,
                "delete_after_days": CRITICAL_DAYS,
                "critical": True,
            }
        )
    rows.append(
        {
            "position": 1000,
            "name": "Everything else",
            "match": {},
            "archive_after_days": 90,
            "delete_after_days": 365,
            "critical": False,
        }
    )
    for row in rows:
        row.update(created_at=now, created_by="migration 0022", updated_at=now, updated_by=None)
    return rows


def upgrade() -> None:
    op.create_index("ix_audit_event_recorded_at_id", "audit_event", ["recorded_at", "id"])
    policy = op.create_table(
        "retention_policy",
        sa.Column("id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("match", sa.JSON(), nullable=False),
        sa.Column("archive_after_days", sa.Integer(), nullable=True),
        sa.Column("delete_after_days", sa.Integer(), nullable=True),
        sa.Column("critical", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_policy")),
        sa.UniqueConstraint("position", name=op.f("uq_retention_policy_position")),
        sa.UniqueConstraint("name", name=op.f("uq_retention_policy_name")),
    )
    op.bulk_insert(policy, _policies())
    op.create_table(
        "retention_hold",
        sa.Column("id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("filter", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("released_at", UTCDateTime(), nullable=True),
        sa.Column("released_by", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_hold")),
    )
    op.create_table(
        "retention_archive",
        sa.Column("id", BIGINT, sa.Identity(always=False), nullable=False),
        sa.Column("policy_id", sa.Integer(), nullable=False),
        sa.Column("policy_name", sa.String(200), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("recorded_from", UTCDateTime(), nullable=False),
        sa.Column("recorded_until", UTCDateTime(), nullable=False),
        sa.Column("first_id", sa.BigInteger(), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("first_position", sa.BigInteger(), nullable=False),
        sa.Column("last_position", sa.BigInteger(), nullable=False),
        sa.Column("checkpoint_size", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("manifest_hash", sa.String(64), nullable=False),
        sa.Column("previous_manifest_hash", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_archive")),
        sa.UniqueConstraint("policy_id", "day", name=op.f("uq_retention_archive_policy_id_day")),
        sa.UniqueConstraint("manifest_hash", name=op.f("uq_retention_archive_manifest_hash")),
        sa.UniqueConstraint(
            "previous_manifest_hash", name=op.f("uq_retention_archive_previous_manifest_hash")
        ),
    )
    op.create_table(
        "retention_restore",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("tenant_id", sa.String(100), nullable=True),
        sa.Column("actor_type", sa.String(20), nullable=False),
        sa.Column("actor_id", sa.String(200), nullable=True),
        sa.Column("actor_name", sa.String(200), nullable=True),
        sa.Column("actor_role", sa.String(50), nullable=True),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("module", sa.String(50), nullable=False),
        sa.Column("outcome", sa.String(10), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("target_type", sa.String(100), nullable=True),
        sa.Column("target_id", sa.String(200), nullable=True),
        sa.Column("ip", sa.String(45), nullable=True),
        sa.Column("ip_bytes", sa.LargeBinary(16), nullable=True),
        sa.Column("user_agent", sa.String(512), nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("client_request_id", sa.String(128), nullable=True),
        sa.Column("method", sa.String(10), nullable=True),
        sa.Column("path", sa.String(512), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Double(), nullable=True),
        sa.Column("metadata", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("idempotency_key", sa.String(128), nullable=True),
        sa.Column("restored_from", sa.String(64), nullable=False),
        sa.Column("restored_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_restore")),
    )


def downgrade() -> None:
    op.drop_table("retention_restore")
    op.drop_table("retention_archive")
    op.drop_table("retention_hold")
    op.drop_table("retention_policy")
    op.drop_index("ix_audit_event_recorded_at_id", table_name="audit_event")
