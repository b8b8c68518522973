"""All SQL about action schemas (events themselves are written by `audit_log.repository`)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.ingestion.models import ActionSchema


async def get_schema(session: AsyncSession, action: str) -> ActionSchema | None:
    return await session.get(ActionSchema, action)


async def get_schemas(session: AsyncSession, actions: Collection[str]) -> dict[str, ActionSchema]:
    if not actions:
        return {}
    # Most requests carry one action: plain equality is a cheaper statement than IN (…).
    (first, *others) = actions
    where = ActionSchema.action.in_(actions) if others else ActionSchema.action == first
    stmt = select(ActionSchema).where(where)
    return {row.action: row for row in await session.scalars(stmt)}


async def list_schemas(session: AsyncSession) -> list[ActionSchema]:
    return list(await session.scalars(select(ActionSchema).order_by(ActionSchema.action)))


class ConcurrentChange(Exception):
    pass


class ConcurrentDelete(ConcurrentChange):
    """The row was deleted by another request between our read and our write."""


async def create_schema(session: AsyncSession, schema: ActionSchema) -> ActionSchema:
    session.add(schema)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:  # another request created it first
        raise ConcurrentChange(schema.action) from exc
    return schema


async def update_schema(
    session: AsyncSession,
    action: str,
    json_schema: dict[str, Any],
    updated_at: datetime,
    updated_by: int | None,
) -> ActionSchema:
    """Replace a schema read earlier in this request. A plain UPDATE whose row count says
    whether the row still exists: the ORM's unit of work would raise StaleDataError (a 500)
    when a concurrent DELETE won."""
    stmt = (
        update(ActionSchema)
        .where(ActionSchema.action == action)
        .values(json_schema=json_schema, updated_at=updated_at, updated_by=updated_by)
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(stmt)
    if cast(CursorResult[Any], result).rowcount != 1:
        raise ConcurrentDelete(action)
    row = await session.get(ActionSchema, action, populate_existing=True)
    if row is None:
        raise ConcurrentDelete(action)
    return row


async def delete_schema(session: AsyncSession, action: str) -> None:
    stmt = (
        delete(ActionSchema)
        .where(ActionSchema.action == action)
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(stmt)
    if cast(CursorResult[Any], result).rowcount != 1:  # deleted meanwhile
        raise ConcurrentDelete(action)
