"""Retention: archive segments uploaded to an S3-compatible bucket

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-03

Per `retention_archive` row, where its segment and manifest went (retention/upload.py):
`s3_key` (the segment's object key; the manifest's is derived from it) and `uploaded_at`,
both set only once both objects are in the bucket and their checksums were confirmed;
`s3_error`, the last failed attempt (no secrets: a status line or an exception class). NULL
`uploaded_at` with a bucket configured: the next run uploads it (segments written before the
bucket was configured too).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from audit_service.kit.models import UTCDateTime

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("retention_archive", sa.Column("s3_key", sa.String(1000), nullable=True))
    op.add_column("retention_archive", sa.Column("uploaded_at", UTCDateTime(), nullable=True))
    op.add_column("retention_archive", sa.Column("s3_error", sa.String(500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("retention_archive") as batch:
        batch.drop_column("s3_error")
        batch.drop_column("uploaded_at")
        batch.drop_column("s3_key")
