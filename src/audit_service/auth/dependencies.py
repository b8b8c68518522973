"""Who is calling: `CurrentUser`, role gates, and the rate limits keyed by principal."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import OAuth2PasswordBearer
from pydantic import ValidationError

from audit_service.audit_log.dependencies import RecorderDep, SessionDep
from audit_service.auth import service
from audit_service.auth.models import User
from audit_service.auth.schemas import LoginRequest
from audit_service.core.dependencies import RateLimiterDep, SettingsDep, SigningKeyDep
from audit_service.core.errors import Forbidden
from audit_service.core.security import TokenClaims, decode_access_token

# auto_error=False: a missing token becomes our own problem+json 401, not FastAPI's.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/login", auto_error=False)
BearerToken = Annotated[str | None, Depends(oauth2_scheme)]


async def get_principal(
    session: SessionDep, audit: RecorderDep, key: SigningKeyDep, token: BearerToken
) -> tuple[User, TokenClaims]:
    return await service.authenticate(session, audit, key, token)


Principal = Annotated[tuple[User, TokenClaims], Depends(get_principal)]


async def get_current_user(principal: Principal) -> User:
    return principal[0]


CurrentUser = Annotated[User, Depends(get_current_user)]


def require_role(*roles: str) -> object:
    async def check(user: CurrentUser) -> User:
        if user.role not in roles:
            raise Forbidden(f"This needs the role {' or '.join(roles)}")
        return user

    return Depends(check)


AdminUser = Annotated[User, require_role("admin")]
AdminOrAuditor = Annotated[User, require_role("admin", "auditor")]


async def limit_by_principal(
    limiter: RateLimiterDep, settings: SettingsDep, key: SigningKeyDep, audit: RecorderDep,
    token: BearerToken,
) -> None:
    """The default limit: per user when a valid token is shown, else per client IP."""
    claims = decode_access_token(token, key) if token else None
    who = f"user:{claims.sub}" if claims else f"ip:{audit.ip}"
    await limiter.hit(settings.default_rate_limit, "default", who)


async def limit_login_by_ip(limiter: RateLimiterDep, settings: SettingsDep, audit: RecorderDep) -> None:
    await limiter.hit(settings.login_rate_limit, "login", f"ip:{audit.ip}", what="login attempts")


async def limit_predictions(limiter: RateLimiterDep, settings: SettingsDep, user: CurrentUser) -> None:
    await limiter.hit(settings.predict_rate_limit, "predict", f"user:{user.id}", what="predictions")


async def login_credentials(request: Request) -> LoginRequest:
    """`{username, password}` as JSON, or as an OAuth2 password form (Swagger's Authorize)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.form()
            data: object = {k: form.get(k) for k in ("username", "password") if k in form}
        else:
            data = json.loads(await request.body())
        return LoginRequest.model_validate(data)
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [{"loc": ("body",), "msg": f"Malformed JSON: {exc.msg}", "type": "json_invalid"}]
        ) from None
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_input=False)]
        ) from None


Credentials = Annotated[LoginRequest, Depends(login_credentials)]
