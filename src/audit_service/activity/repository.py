"""All SQL of the activity room's own table (export recipients); event SQL is audit_log's."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from audit_service.activity.models import ExportRecipient

_recipients = cast(Table, ExportRecipient.__table__)
MAX_RECIPIENTS_LISTED = 1000
Bind = AsyncSession | AsyncConnection


@dataclass(frozen=True, slots=True)
class Recipient:
    id: int
    name: str
    public_key: str
    fingerprint: str
    created_at: datetime
    created_by: str | None


class DuplicateKey(Exception):
    """That public key is registered already."""


def _recipient(row: Any) -> Recipient:
    return Recipient(**{name: getattr(row, name) for name in Recipient.__slots__})


async def add_recipient(
    session: AsyncSession,
    *,
    name: str,
    public_key: str,
    fingerprint: str,
    created_at: datetime,
    created_by: str | None,
) -> Recipient:
    values = {
        "name": name,
        "public_key": public_key,
        "fingerprint": fingerprint,
        "created_at": created_at,
        "created_by": created_by,
    }
    try:
        # A savepoint: a duplicate must not abort the request's transaction (its event).
        async with session.begin_nested():
            row = (
                await session.execute(insert(_recipients).values(values).returning(_recipients))
            ).one()
    except IntegrityError:
        raise DuplicateKey from None
    return _recipient(row)


async def recipient_by_key(bind: Bind, public_key: str) -> Recipient | None:
    stmt = select(_recipients).where(_recipients.c.public_key == public_key)
    row = (await bind.execute(stmt)).first()
    return None if row is None else _recipient(row)


async def list_recipients(bind: Bind) -> list[Recipient]:
    stmt = select(_recipients).order_by(_recipients.c.id).limit(MAX_RECIPIENTS_LISTED)
    return [_recipient(row) for row in (await bind.execute(stmt)).all()]


async def get_recipient(bind: Bind, recipient_id: int) -> Recipient | None:
    stmt = select(_recipients).where(_recipients.c.id == recipient_id)
    row = (await bind.execute(stmt)).first()
    return None if row is None else _recipient(row)


async def delete_recipient(session: AsyncSession, recipient_id: int) -> Recipient | None:
    """Delete and return it (None: there was none). Concurrent deletes: one wins."""
    stmt = delete(_recipients).where(_recipients.c.id == recipient_id).returning(_recipients)
    row = (await session.execute(stmt)).first()
    return None if row is None else _recipient(row)
