"""All SQL about principals. Flushes so constraint errors surface here; never commits."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import case, delete, exists, func, literal, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from audit_service.auth.models import ApiKey, LoginCounter, RevokedToken, User
from audit_service.core.cache import MISS, usable
from audit_service.core.db import upsert_for
from audit_service.kit.models import UTCDateTime


class DuplicateUsername(Exception):
    pass


async def get_user(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


# What a cached user holds: every column but the password hash (only a password change reads
# it, and that loads the row itself: see service.change_password).
_CACHED_USER_COLUMNS = tuple(
    c.key for c in User.__mapper__.column_attrs if c.key != "password_hash"
)
_CACHED_KEY_COLUMNS = tuple(c.key for c in ApiKey.__mapper__.column_attrs)


async def get_user_and_revocation(
    session: AsyncSession, user_id: int, jti: str
) -> tuple[User | None, bool]:
    """The user, and whether the token `jti` was revoked: the request path's authentication.

    From the process's cache when it has both (core/cache.py: no round trip at all), else one
    statement for both (was a `get` and an `EXISTS`). A cached user is a new, session-less
    `User` without `password_hash`: reading it is all callers may do.
    """
    cache = usable(session, "user", "revoked_token")
    if cache is not None:
        values = cache.get("user", user_id)
        if values is not MISS and cache.get("revoked_token", jti) is False:
            return User(**values), False
        stamps = cache.stamp("user"), cache.stamp("revoked_token")
    revoked = exists().where(RevokedToken.jti == jti).label("revoked")
    row = (await session.execute(select(User, revoked).where(User.id == user_id))).first()
    if row is None:
        return None, False
    user, is_revoked = row[0], bool(row[1])
    if cache is not None:
        cache.put("user", user_id, {c: getattr(user, c) for c in _CACHED_USER_COLUMNS}, stamps[0])
        if not is_revoked:  # revoked tokens are refused: not worth keeping
            cache.put("revoked_token", jti, False, stamps[1])
    return user, is_revoked


async def get_user_by_username(session: AsyncSession, username: str) -> User | None:
    return await session.scalar(select(User).where(User.username == username))


async def full_names(session: AsyncSession, user_ids: list[int]) -> dict[int, str]:
    """Full names of the given users (those that have one), for display."""
    if not user_ids:
        return {}
    rows = await session.execute(
        select(User.id, User.full_name).where(User.id.in_(user_ids), User.full_name.is_not(None))
    )
    return {row.id: row.full_name for row in rows}


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
    """The key with this prefix; from the process's cache when it has it (a session-less
    `ApiKey`, for reading). Unknown prefixes are not cached: each is a 401 anyway."""
    cache = usable(session, "api_key")
    if cache is not None:
        values = cache.get("api_key", prefix)
        if values is not MISS:
            return ApiKey(**{**values, "scopes": list(values["scopes"])})
        stamp = cache.stamp("api_key")
    key = await session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if cache is not None and key is not None:
        cache.put("api_key", prefix, {c: getattr(key, c) for c in _CACHED_KEY_COLUMNS}, stamp)
    return key


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


# --- login attempts ---------------------------------------------------------------------------


async def reserve_login_attempt(
    session: AsyncSession, username: str, *, now: datetime, window_start: datetime
) -> tuple[int, datetime]:
    """Count one attempt at `username`; returns the attempts in its window and when that
    window started. A window that began before `window_start` starts again at one.

    One atomic upsert, in a transaction of its own on another connection that commits at
    once: concurrent attempts each get a distinct count (no two read the same value), and
    the count survives the rollback of a failed login's request transaction.
    """
    engine = session.bind
    assert isinstance(engine, AsyncEngine), "sessions are bound to the engine"
    stale = LoginCounter.window_started_at < window_start
    started = literal(now, UTCDateTime())
    stmt = upsert_for(session)(LoginCounter).values(
        username=username, attempts=1, window_started_at=now
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[LoginCounter.username],
        set_={
            "attempts": case((stale, 1), else_=LoginCounter.attempts + 1),
            "window_started_at": case((stale, started), else_=LoginCounter.window_started_at),
        },
    ).returning(LoginCounter.attempts, LoginCounter.window_started_at)
    async with engine.begin() as conn:
        attempts, started_at = (await conn.execute(stmt)).one()
    return int(attempts), started_at


async def clear_login_attempts(
    session: AsyncSession, username: str, *, stale_before: datetime | None = None
) -> None:
    """After a successful login; in the request's transaction, so it commits with its event.

    With `stale_before`, rows whose window ended before it go too: names sprayed by a
    guesser (unknown ones included) would otherwise stay forever.
    """
    condition = LoginCounter.username == username
    if stale_before is not None:
        condition = or_(condition, LoginCounter.window_started_at < stale_before)
    await session.execute(delete(LoginCounter).where(condition))


async def login_attempts(session: AsyncSession, username: str) -> int:
    return int(
        await session.scalar(select(LoginCounter.attempts).where(LoginCounter.username == username))
        or 0
    )
