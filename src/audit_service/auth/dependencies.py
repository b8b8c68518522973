"""Who is calling: `CurrentUser`, role gates, and the rate limits keyed by principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import (
    APIKeyHeader,
    HTTPAuthorizationCredentials,
    HTTPBearer,
    OAuth2PasswordBearer,
)

from audit_service.audit_log.context import RequestAudit
from audit_service.audit_log.dependencies import RecorderDep
from audit_service.auth import service
from audit_service.auth.models import ApiKey, User
from audit_service.core.config import Settings
from audit_service.core.dependencies import RateLimiterDep, SettingsDep
from audit_service.core.errors import Forbidden, Unauthorized
from audit_service.core.ratelimit import RateLimiter
from audit_service.core.security import TokenClaims, decode_access_token

# auto_error=False: a missing token becomes our own problem+json 401, not FastAPI's.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/login/form", auto_error=False)
BearerToken = Annotated[str | None, Depends(oauth2_scheme)]


async def get_current_user(request: Request, token: BearerToken) -> User:
    """The caller: the default rate limit first, then authentication.

    The limit is per user when a token with our signature is shown, else per client IP.
    Nothing unverified picks its bucket: a token merely shaped like an API key (which these
    routes never accept) once got a fresh bucket per forgery, i.e. no limit at all.

    One dependency reading the app's state directly, where it was nine (limit, claims,
    session, settings, limiter, key, audit ...): FastAPI's resolution costs tens of µs per
    node, which was ~18 % of an authenticated request's CPU (bench/request_path.py). It is
    also the routers' own dependency, so FastAPI resolves it once per request; the verified
    claims wait in `request.state` for the one endpoint that needs them (logout).
    """
    state = request.app.state
    audit: RequestAudit = request.state.audit
    claims = None
    if token and service.api_key_prefix(token) is None:
        claims = decode_access_token(token, state.signing_key)
    who = f"user:{claims.sub}" if claims else f"ip:{audit.ip}"
    limiter: RateLimiter = state.rate_limiter
    await limiter.hit(state.settings.default_rate_limit, "default", who)
    user, request.state.claims = await service.authenticate(audit.session(), audit, token, claims)
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_principal(request: Request, user: CurrentUser) -> tuple[User, TokenClaims]:
    claims: TokenClaims = request.state.claims
    return user, claims


Principal = Annotated[tuple[User, TokenClaims], Depends(get_principal)]


def require_role(*roles: str) -> object:
    async def check(user: CurrentUser) -> User:
        if user.role not in roles:
            raise Forbidden(f"This needs the role {' or '.join(roles)}")
        return user

    return Depends(check)


AdminUser = Annotated[User, require_role("admin")]
AdminOrAuditor = Annotated[User, require_role("admin", "auditor")]


async def limit_login_by_ip(
    limiter: RateLimiterDep, settings: SettingsDep, audit: RecorderDep
) -> None:
    await limiter.hit(settings.login_rate_limit, "login", f"ip:{audit.ip}", what="login attempts")


async def limit_predictions(
    limiter: RateLimiterDep, settings: SettingsDep, user: CurrentUser
) -> None:
    await limiter.hit(settings.predict_rate_limit, "predict", f"user:{user.id}", what="predictions")


# --- services (API keys) --------------------------------------------------------------------

# Two ways to present a key; both documented as security schemes, neither auto-erroring so
# a missing key is our own problem+json 401.
service_bearer = HTTPBearer(
    scheme_name="ServiceKey",
    description="A service API key: `Authorization: Bearer ask_…`",
    auto_error=False,
)
service_key_header = APIKeyHeader(
    name="X-API-Key",
    scheme_name="ServiceKeyHeader",
    description="A service API key in the `X-API-Key` header",
    auto_error=False,
)


async def get_service_key(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(service_bearer)],
    header: Annotated[str | None, Depends(service_key_header)],
) -> ApiKey:
    """The verified API key, between the two ingestion limits:

    - per client IP first, before any key is verified: whatever a client presents (forged
      keys included, each of which is a 401 and an audit row) counts against its address,
      and a flood is refused before the database is even looked at;
    - per API key after it is verified (an unverified prefix could spend a victim's quota).

    One dependency (plus the two security schemes) where it was eight: see get_principal.
    """
    state = request.app.state
    settings: Settings = state.settings
    limiter: RateLimiter = state.rate_limiter
    audit: RequestAudit = request.state.audit
    await limiter.hit(
        settings.ingest_ip_rate_limit, "ingest-ip", f"ip:{audit.ip}", what="ingestion requests"
    )
    if bearer is not None and header is not None and bearer.credentials != header:
        raise Unauthorized("Authorization and X-API-Key name different credentials")
    credential = header if header is not None else bearer.credentials if bearer else None
    key = await service.authenticate_service(audit.session(), audit, state.signing_key, credential)
    await limiter.hit(
        settings.ingest_rate_limit, "ingest", f"key:{key.prefix}", what="ingestion requests"
    )
    return key


ServiceKey = Annotated[ApiKey, Depends(get_service_key)]


def require_scope(scope: str) -> object:
    async def check(key: ServiceKey, audit: RecorderDep) -> ApiKey:
        service.require_scope(audit, key, scope)
        return key

    return Depends(check)


EventWriter = Annotated[ApiKey, require_scope("events:write")]


# The ingestion router's dependency: both limits and the key (cached for ServiceKey).
limit_ingestion = get_service_key
