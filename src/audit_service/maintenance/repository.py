"""All SQL of runtime settings."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.core.db import write_lock_for_update
from audit_service.kit.models import utcnow
from audit_service.maintenance.models import RuntimeSetting


async def get(session: AsyncSession, key: str) -> dict[str, Any] | None:
    value = await session.scalar(select(RuntimeSetting.value).where(RuntimeSetting.key == key))
    return dict(value) if value is not None else None


async def get_for_update(session: AsyncSession, key: str) -> RuntimeSetting | None:
    # Two concurrent changes serialise, so each one's "before" is what the other left.
    await write_lock_for_update(session, cast(Table, RuntimeSetting.__table__))
    stmt = select(RuntimeSetting).where(RuntimeSetting.key == key).with_for_update()
    return await session.scalar(stmt.execution_options(populate_existing=True))


async def put(
    session: AsyncSession, key: str, value: dict[str, Any], updated_by: str | None
) -> None:
    row = await get_for_update(session, key)
    if row is None:
        try:
            async with session.begin_nested():
                session.add(
                    RuntimeSetting(key=key, value=value, updated_at=utcnow(), updated_by=updated_by)
                )
            return
        except IntegrityError:
            # A concurrent first change inserted it: update that row instead.
            row = await get_for_update(session, key)
            assert row is not None
    row.value, row.updated_at, row.updated_by = value, utcnow(), updated_by
    await session.flush()
