"""Detections and alerts

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02

`alert` (one finding; `dedup_key` unique among unresolved alerts), `detection_rule_setting`
(per-rule and per-tenant overrides of the catalogue's defaults), `detection_state` (the
evaluator's log position), `detection_login` (the sliding window of recent login
attempts), `detection_network` (the networks each user logged in from), `detection_privilege`
(each user's last privileged action, and the actions denied to them).
Plain mutable bookkeeping, not part of the record: no triggers.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from audit_service.kit.models import UTCDateTime

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UNRESOLVED = sa.text("status <> 'resolved'")


def upgrade() -> None:
    op.create_table(
        "alert",
        sa.Column("id", _BIGINT_ID, sa.Identity(always=False), nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("rule_version", sa.Integer(), nullable=False),
        sa.Column("severity", sa.String(10), nullable=False),
        sa.Column("status", sa.String(15), nullable=False),
        sa.Column("resolution", sa.String(20), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("dedup_key", sa.String(500), nullable=False),
        sa.Column("count", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("opened_at", UTCDateTime(), nullable=False),
        sa.Column("acknowledged_at", UTCDateTime(), nullable=True),
        sa.Column("acknowledged_by", sa.String(255), nullable=True),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.Column("resolved_by", sa.String(255), nullable=True),
        sa.Column("tenant_id", sa.String(100), nullable=True),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("entity_kind", sa.String(10), nullable=False),
        sa.Column("entity_value", sa.String(300), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert")),
    )
    op.create_index(
        "uq_alert_dedup_key_unresolved",
        "alert",
        ["dedup_key"],
        unique=True,
        postgresql_where=_UNRESOLVED,
        sqlite_where=_UNRESOLVED,
    )
    op.create_index("ix_alert_opened_at_id", "alert", ["opened_at", "id"])
    op.create_index("ix_alert_status_opened_at", "alert", ["status", "opened_at"])
    op.create_table(
        "detection_rule_setting",
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=True),
        sa.Column("severity", sa.String(10), nullable=True),
        sa.Column("thresholds", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("rule_id", "tenant_id", name=op.f("pk_detection_rule_setting")),
    )
    op.create_table(
        "detection_state",
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_detection_state")),
    )
    op.create_table(
        "detection_login",
        sa.Column("event_pk", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("ip", sa.String(45), nullable=True),
        sa.Column("user_name", sa.String(200), nullable=True),
        sa.Column("user_agent", sa.String(512), nullable=True),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("event_pk", name=op.f("pk_detection_login")),
    )
    op.create_index("ix_detection_login_ip_recorded_at", "detection_login", ["ip", "recorded_at"])
    op.create_index(
        "ix_detection_login_user_name_recorded_at",
        "detection_login",
        ["user_name", "recorded_at"],
    )
    op.create_index("ix_detection_login_recorded_at", "detection_login", ["recorded_at"])
    op.create_table(
        "detection_network",
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("user_name", sa.String(200), nullable=False),
        sa.Column("network", sa.String(50), nullable=False),
        sa.Column("logins", sa.Integer(), nullable=False),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "source", "tenant_id", "user_name", "network", name=op.f("pk_detection_network")
        ),
    )

    op.create_table(
        "detection_privilege",
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("user_name", sa.String(200), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("last_allowed_at", UTCDateTime(), nullable=True),
        sa.Column("last_denied_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint(
            "source", "tenant_id", "user_name", "action", name=op.f("pk_detection_privilege")
        ),
    )


def downgrade() -> None:
    op.drop_table("detection_privilege")
    op.drop_table("detection_network")
    op.drop_table("detection_login")
    op.drop_table("detection_state")
    op.drop_table("detection_rule_setting")
    op.drop_index("ix_alert_status_opened_at", table_name="alert")
    op.drop_index("ix_alert_opened_at_id", table_name="alert")
    op.drop_index("uq_alert_dedup_key_unresolved", table_name="alert")
    op.drop_table("alert")
