"""Process-wide objects made in lifespan, as `Annotated` dependencies.

`async def` although nothing here awaits: FastAPI runs a plain `def` dependency in a worker
thread, and that hop costs far more than the attribute lookup (measured ~50 µs per dependency).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_service.core.config import Settings
from audit_service.core.ratelimit import RateLimiter


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_rate_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


async def get_engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


async def get_signing_key(request: Request) -> str:
    key: str = request.app.state.signing_key
    return key


SettingsDep = Annotated[Settings, Depends(get_settings)]
RateLimiterDep = Annotated[RateLimiter, Depends(get_rate_limiter)]
SigningKeyDep = Annotated[str, Depends(get_signing_key)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
