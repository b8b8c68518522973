"""Who is calling: `CurrentUser`, role gates, and the rate limits keyed by principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import (
    APIKeyHeader,
    HTTPAuthorizationCredentials,
    HTTPBearer,
    OAuth2PasswordBearer,
)

from audit_service.audit_log.dependencies import RecorderDep, SessionDep
from audit_service.auth import service
from audit_service.auth.models import ApiKey, User
from audit_service.core.dependencies import RateLimiterDep, SettingsDep, SigningKeyDep
from audit_service.core.errors import Forbidden, Unauthorized
from audit_service.core.security import TokenClaims, decode_access_token

# auto_error=False: a missing token becomes our own problem+json 401, not FastAPI's.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/login/form", auto_error=False)
BearerToken = Annotated[str | None, Depends(oauth2_scheme)]


async def get_token_claims(token: BearerToken, key: SigningKeyDep) -> TokenClaims | None:
    """The bearer token's verified claims. A dependency, so FastAPI decodes it once per
    request for both the rate limit and authentication."""
    if not token or service.api_key_prefix(token) is not None:
        return None
    return decode_access_token(token, key)


TokenClaimsDep = Annotated[TokenClaims | None, Depends(get_token_claims)]


async def get_principal(
    session: SessionDep, audit: RecorderDep, token: BearerToken, claims: TokenClaimsDep
) -> tuple[User, TokenClaims]:
    return await service.authenticate(session, audit, token, claims)


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
    limiter: RateLimiterDep,
    settings: SettingsDep,
    audit: RecorderDep,
    token: BearerToken,
    claims: TokenClaimsDep,
) -> None:
    """The default limit: per user when a token with our signature is shown, else per client
    IP. Nothing unverified picks its bucket: a token merely shaped like an API key (which
    these routes never accept) once got a fresh bucket per forgery, i.e. no limit at all."""
    who = f"user:{claims.sub}" if claims else f"ip:{audit.ip}"
    await limiter.hit(settings.default_rate_limit, "default", who)


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
    session: SessionDep,
    audit: RecorderDep,
    signing_key: SigningKeyDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(service_bearer)],
    header: Annotated[str | None, Depends(service_key_header)],
) -> ApiKey:
    if bearer is not None and header is not None and bearer.credentials != header:
        raise Unauthorized("Authorization and X-API-Key name different credentials")
    credential = header if header is not None else bearer.credentials if bearer else None
    return await service.authenticate_service(session, audit, signing_key, credential)


ServiceKey = Annotated[ApiKey, Depends(get_service_key)]


def require_scope(scope: str) -> object:
    async def check(key: ServiceKey, audit: RecorderDep) -> ApiKey:
        service.require_scope(audit, key, scope)
        return key

    return Depends(check)


EventWriter = Annotated[ApiKey, require_scope("events:write")]


async def limit_ingestion_by_ip(
    limiter: RateLimiterDep, settings: SettingsDep, audit: RecorderDep
) -> None:
    """Per client IP, before any key is verified: whatever a client presents (forged keys
    included, each of which is a 401 and an audit row) counts against its address."""
    await limiter.hit(
        settings.ingest_ip_rate_limit, "ingest-ip", f"ip:{audit.ip}", what="ingestion requests"
    )


IngestIpLimit = Annotated[None, Depends(limit_ingestion_by_ip)]


async def limit_ingestion(
    limiter: RateLimiterDep, settings: SettingsDep, _ip: IngestIpLimit, key: ServiceKey
) -> None:
    """Per API key, after it is verified (an unverified prefix could spend a victim's quota).

    `_ip` comes first: FastAPI resolves parameters in order, so the IP limit refuses a
    flood before the key (and the database) is even looked at."""
    await limiter.hit(
        settings.ingest_rate_limit, "ingest", f"key:{key.prefix}", what="ingestion requests"
    )
