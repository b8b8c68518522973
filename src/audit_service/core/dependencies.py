"""Process-wide objects made in lifespan, as `Annotated` dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_service.core.config import Settings
from audit_service.core.ratelimit import RateLimiter


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_rate_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


def get_engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


def get_signing_key(request: Request) -> str:
    key: str = request.app.state.signing_key
    return key


SettingsDep = Annotated[Settings, Depends(get_settings)]
RateLimiterDep = Annotated[RateLimiter, Depends(get_rate_limiter)]
SigningKeyDep = Annotated[str, Depends(get_signing_key)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
