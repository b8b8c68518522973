"""All SQL about action schemas (events themselves are written by `audit_log.repository`)."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select
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


async def save_schema(session: AsyncSession, schema: ActionSchema) -> ActionSchema:
    session.add(schema)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:  # another request created it first
        raise ConcurrentChange(schema.action) from exc
    return schema


async def delete_schema(session: AsyncSession, schema: ActionSchema) -> None:
    await session.delete(schema)
    await session.flush()
