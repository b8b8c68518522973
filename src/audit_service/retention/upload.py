"""The archive step's second half: a copy of every written segment and its manifest in the
S3-compatible bucket AUDIT_ARCHIVE_S3_BUCKET (when one is set).

Runs after the segments of the run are written locally, and takes every `retention_archive`
row whose `uploaded_at` is NULL, oldest first: the ones this run wrote, the ones written
before a bucket was configured, the ones a past run failed to send. Per segment: the local
file is read and checked against the row's SHA-256 (a file changed on disk is never sent),
the segment is PUT, then its manifest (both with checksums, confirmed by the store:
kit/s3.py), and only then is the row marked (`s3_key`, `uploaded_at`). A crash in between
leaves the row unmarked and the next run PUTs the same bytes to the same keys again:
harmless, and a marked row is never sent again.

A failure (store down, 5xx, refused) never undoes or blocks the local archive and never
deletes anything: it is written on the row (`s3_error`), logged without secrets, reported by
the step (and its `retention.archived` event), and this run's remaining uploads wait for the
next run (a store that is down would otherwise cost one timeout per segment). With a bucket
configured, the purge step deletes only events whose segment is in the bucket
(retention/forget_repository.py `segments_due`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from audit_service.core.config import Settings
from audit_service.kit import s3
from audit_service.kit.models import utcnow
from audit_service.retention import repository as repo
from audit_service.retention import segment
from audit_service.retention.archive import Fence, no_fence

log = logging.getLogger(__name__)

# Segments sent per run (the next run continues).
UPLOADS_PER_RUN = 1000


@dataclass
class UploadResult:
    enabled: bool = False
    bucket: str | None = None
    uploaded: list[str] = field(default_factory=list)  # segment keys confirmed this run
    failed: int = 0
    error: str | None = None  # the failure that stopped this run's uploads
    pending: int = 0  # segments still not in the bucket after this run (dry run: to send)

    def to_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "bucket": self.bucket,
            "uploaded": len(self.uploaded),
            "keys": self.uploaded[:100],
            "failed": self.failed,
            "error": self.error,
            "pending": self.pending,
        }


def bucket_of(settings: Settings) -> s3.Bucket | None:
    endpoint = settings.archive_s3_endpoint
    if endpoint is None or settings.archive_s3_bucket is None:
        return None
    key_id, secret = settings.archive_s3_keys()
    return s3.Bucket(
        endpoint=endpoint,
        name=settings.archive_s3_bucket,
        region=settings.archive_s3_region,
        credentials=s3.Credentials(key_id, secret),
        timeout=settings.archive_s3_timeout,
    )


def object_keys(settings: Settings, relpath: str) -> tuple[str, str]:
    """The keys of a segment (its path under AUDIT_ARCHIVE_DIR) and of its manifest."""
    manifest = PurePosixPath(segment.manifest_path(Path(relpath)).as_posix())
    return f"{settings.archive_s3_prefix}{relpath}", f"{settings.archive_s3_prefix}{manifest}"


class LocalProblem(Exception):
    """The segment on disk is missing or not the one archived: that row is skipped."""


def _read(path: Path, sha256: str) -> tuple[bytes, bytes]:
    try:
        data = path.read_bytes()
        manifest = segment.manifest_path(path).read_bytes()
    except OSError as exc:
        raise LocalProblem(f"{path.name}: {exc.strerror}") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise LocalProblem(f"{path.name}: the local file differs from the archived segment")
    return data, manifest


async def _upload(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    bucket: s3.Bucket,
    client: httpx.AsyncClient,
    row: Any,
    result: UploadResult,
    fence: Fence,
) -> bool:
    """Send one segment and its manifest, then mark its row; False: stop this run."""
    key, manifest_key = object_keys(settings, row.path)
    error: str | None = None
    go_on = True
    try:
        body, manifest = await asyncio.to_thread(_read, settings.archive_dir / row.path, row.sha256)
        await bucket.put(client, key, body, "application/gzip")
        await bucket.put(client, manifest_key, manifest, "application/json")
    except LocalProblem as exc:  # this segment only: the others can still go
        error = f"not uploaded: {exc}"
    except s3.S3Error as exc:  # the store: the rest of this run would fail the same way
        error, go_on = str(exc), False
    async with sessionmaker() as session:
        if error is None:
            await repo.mark_uploaded(session, row.id, key, utcnow())
            result.uploaded.append(key)
        else:
            await repo.mark_upload_failed(session, row.id, error)
            result.failed += 1
            result.error = error
        await fence(session)
        await session.commit()
    return go_on


async def upload_step(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    dry_run: bool = False,
    fence: Fence = no_fence,
) -> UploadResult:
    bucket = bucket_of(settings)
    result = UploadResult(enabled=bucket is not None, bucket=settings.archive_s3_bucket)
    if bucket is None:
        return result
    async with sessionmaker() as session:
        rows = await repo.pending_uploads(session, UPLOADS_PER_RUN)
        result.pending = await repo.count_pending_uploads(session)
    if dry_run:
        return result
    async with bucket.client() as client:
        for row in rows:
            if not await _upload(sessionmaker, settings, bucket, client, row, result, fence):
                break
    result.pending -= len(result.uploaded)
    if result.error is not None:
        # Names the bucket and the failure (status, S3 error code): never a key or signature.
        log.warning(
            "archive upload to bucket %s: %s; %d segment(s) not in the bucket yet, "
            "the next retention run retries",
            result.bucket,
            result.error,
            result.pending,
        )
    return result
