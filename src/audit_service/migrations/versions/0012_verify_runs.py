"""Verification runs of the tamper-evident log

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02

`integrity_verify_run`: each verification asked for at POST /admin/integrity/verify or made
by the daily `integrity.verify` job, with its progress and outcome; `integrity_verify_task`:
the finished tasks of a run still in progress (so a run cut short resumes where it stopped).
Plain mutable bookkeeping, not part of the record: no append-only triggers.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from audit_service.kit.models import UTCDateTime

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "integrity_verify_run",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.Identity(always=False),
            nullable=False,
        ),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("trigger", sa.String(20), nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("requested_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=True),
        sa.Column("plan", sa.JSON(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=True),
        sa.Column("tasks_total", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("tasks_done", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("positions_done", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=True),
        sa.Column("problem_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.Column("error", sa.String(500), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integrity_verify_run")),
    )
    op.create_index(
        op.f("ix_integrity_verify_run_requested_at"), "integrity_verify_run", ["requested_at"]
    )
    op.create_table(
        "integrity_verify_task",
        sa.Column("run_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("task_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "task_index", name=op.f("pk_integrity_verify_task")),
    )


def downgrade() -> None:
    op.drop_table("integrity_verify_task")
    op.drop_index(op.f("ix_integrity_verify_run_requested_at"), table_name="integrity_verify_run")
    op.drop_table("integrity_verify_run")
