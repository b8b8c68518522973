"""All SQL about principals. Flushes so constraint errors surface here; never commits."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import delete, exists, func, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.auth.models import ApiKey, RevokedToken, User


class DuplicateUsername(Exception):
    pass


async def get_user(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def get_user_by_username(session: AsyncSession, username: str) -> User | None:
    return await session.scalar(select(User).where(User.username == username))


async def add_user(session: AsyncSession, user: User) -> User:
    session.add(user)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        raise DuplicateUsername(user.username) from exc
    return user


async def list_users(session: AsyncSession, *, offset: int, limit: int) -> list[User]:
    stmt = select(User).order_by(User.id).offset(offset).limit(limit)
    return list((await session.scalars(stmt)).all())


async def count_users(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(User)) or 0)


async def count_active_admins(session: AsyncSession) -> int:
    stmt = select(func.count()).where(User.role == "admin", User.is_active.is_(True))
    return int(await session.scalar(stmt) or 0)


async def delete_user(session: AsyncSession, user: User) -> None:
    await session.delete(user)
    await session.flush()


async def flush(session: AsyncSession) -> None:
    await session.flush()


async def is_token_revoked(session: AsyncSession, jti: str) -> bool:
    return bool(await session.scalar(select(exists().where(RevokedToken.jti == jti))))


async def revoke_token(
    session: AsyncSession, *, jti: str, user_id: int, expires_at: datetime
) -> None:
    if not await is_token_revoked(session, jti):
        session.add(RevokedToken(jti=jti, user_id=user_id, expires_at=expires_at))
        await session.flush()


async def purge_expired_revocations(session: AsyncSession, now: datetime) -> int:
    result = await session.execute(delete(RevokedToken).where(RevokedToken.expires_at < now))
    return int(cast(CursorResult[Any], result).rowcount)


# --- API keys -------------------------------------------------------------------------------


async def add_api_key(session: AsyncSession, key: ApiKey) -> ApiKey:
    session.add(key)
    await session.flush()
    return key


async def get_api_key(session: AsyncSession, key_id: int) -> ApiKey | None:
    return await session.get(ApiKey, key_id)


async def get_api_key_by_prefix(session: AsyncSession, prefix: str) -> ApiKey | None:
    return await session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))


async def list_api_keys(session: AsyncSession, *, offset: int, limit: int) -> list[ApiKey]:
    stmt = select(ApiKey).order_by(ApiKey.id.desc()).offset(offset).limit(limit)
    return list((await session.scalars(stmt)).all())


async def count_api_keys(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(ApiKey)) or 0)


async def touch_api_key(session: AsyncSession, key_id: int, now: datetime, stale: datetime) -> None:
    """Set last_used_at, unless another request already did since `stale`.

    The condition makes concurrent requests of one key write the row once, not each.
    """
    await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id)
        .where(or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < stale))
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
