"""Console sign-in state: the session cookie, `console_user(...)`, CSRF and cross-site checks.

The cookie holds the same revocable access token the API issues (`auth.service.login`), so
revocation, role changes, deactivation and sign-out end a console session at once. It is
read ONLY here: the API's routes take bearer tokens from the Authorization header and never
look at cookies, so the cookie can never authenticate `/admin/*` or `/events`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from audit_service.audit_log.dependencies import RecorderDep, SessionDep
from audit_service.auth import service as auth_service
from audit_service.auth.models import User
from audit_service.core.config import Settings
from audit_service.core.dependencies import RateLimiterDep, SettingsDep, SigningKeyDep
from audit_service.core.errors import AppError, Forbidden, Unauthorized
from audit_service.core.security import TokenClaims, constant_time_equals, decode_access_token

VIEWER_ROLES = ("admin", "auditor")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
LOGIN_PATH = "/console/login"
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


class SignInRequired(AppError):
    """No (live) console session: a navigation is sent to the sign-in page."""

    status_code, slug, title = 401, "unauthorized", "Sign-in required"


class ConsoleForbidden(Forbidden):
    title = "Forbidden"


@dataclass(frozen=True, slots=True)
class CookiePolicy:
    session: str
    csrf: str
    secure: bool


def cookie_policy(request: Request, settings: Settings) -> CookiePolicy:
    """`__Host-` cookies (Secure, Path=/, no Domain) everywhere except plain-HTTP localhost
    development, where browsers refuse Secure cookies from some hosts and a `__Host-` name
    without Secure is refused by every browser: there the names lose the prefix."""
    host = (request.url.hostname or "").lower()
    plain_local = (
        settings.env == "development" and request.url.scheme == "http" and host in _LOCAL_HOSTS
    )
    if plain_local:
        return CookiePolicy("audit_console", "audit_console_csrf", secure=False)
    return CookiePolicy("__Host-audit_console", "__Host-audit_console_csrf", secure=True)


@dataclass(frozen=True, slots=True)
class ConsolePrincipal:
    """The signed-in console user."""

    user: User
    claims: TokenClaims

    @property
    def role(self) -> str:
        return self.user.role

    @property
    def username(self) -> str:
        return self.user.username

    @property
    def display_name(self) -> str:
        return self.user.full_name or self.user.username

    @property
    def can_change(self) -> bool:
        """Auditors are read-only."""
        return self.user.role == "admin"


def current(request: Request) -> ConsolePrincipal | None:
    """The principal `console_user` found for this request, if it ran."""
    principal: ConsolePrincipal | None = getattr(request.state, "console_principal", None)
    return principal


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _session_claims(request: Request) -> TokenClaims | None:
    """The session cookie's claims if its signature and expiry hold (not yet whether it is
    revoked: that is `console_user`'s database check)."""
    token = request.cookies.get(cookie_policy(request, _settings(request)).session)
    if not token:
        return None
    return decode_access_token(token, request.app.state.signing_key)


def _csrf_basis(request: Request) -> str | None:
    basis: str | None = getattr(request.state, "console_csrf_basis", None)
    if basis:
        return basis
    # The sign-in form is bound to its pre-session cookie (signed in or not: signing in
    # again as someone else is allowed); every other form to the session.
    if request.url.path != LOGIN_PATH:
        claims = _session_claims(request)
        if claims is not None:
            return "session:" + claims.jti
    pre = request.cookies.get(cookie_policy(request, _settings(request)).csrf)
    return "pre:" + pre if pre else None


def csrf_token(request: Request) -> str:
    """The CSRF token for forms on this page (a template global): an HMAC of the session's
    token id, or before sign-in of the random pre-session cookie; bound to the session, so
    a token from another session (or a forged one) fails."""
    basis = _csrf_basis(request)
    if basis is None:
        return ""
    key = request.app.state.signing_key.encode()
    return hmac.new(key, b"console-csrf\0" + basis.encode(), hashlib.sha256).hexdigest()


def new_pre_session(request: Request) -> str:
    """A fresh pre-session CSRF value for the sign-in form; the caller sets the cookie."""
    value = secrets.token_urlsafe(24)
    request.state.console_csrf_basis = "pre:" + value
    return value


async def console_guard(request: Request) -> None:
    """On every console route: refuse cross-site requests (all unsafe ones, and anything
    but a top-level navigation), and a wrong or missing CSRF token on unsafe methods."""
    site = request.headers.get("sec-fetch-site")
    unsafe = request.method not in SAFE_METHODS
    navigating = request.headers.get("sec-fetch-mode") == "navigate"
    if site == "cross-site" and (unsafe or not navigating):
        raise ConsoleForbidden("Cross-site requests to the console are refused.")
    if not unsafe:
        return
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    expected = csrf_token(request)
    if not sent or not expected or not constant_time_equals(sent, expected):
        raise ConsoleForbidden(
            "The form's security token is missing or does not match this session "
            "(CSRF check). Reload the page and try again."
        )


def console_user(
    required_role: str | None = None,
) -> Callable[..., Awaitable[ConsolePrincipal]]:
    """A dependency: the signed-in principal, else a redirect to sign-in (navigations) or a
    polite 403 page. `required_role=None`: admins and auditors (read-only); `"admin"`:
    admins only (every change)."""
    roles = VIEWER_ROLES if required_role is None else (required_role,)

    async def dependency(
        request: Request,
        session: SessionDep,
        audit: RecorderDep,
        key: SigningKeyDep,
        limiter: RateLimiterDep,
        settings: SettingsDep,
    ) -> ConsolePrincipal:
        audit.describe(via="console")
        token = request.cookies.get(cookie_policy(request, settings).session)
        if not token:
            audit.describe(outcome="denied", auth_error="no_session")
            raise SignInRequired("Sign in to use the console.")
        try:
            user, claims = await auth_service.authenticate(
                session, audit, token, decode_access_token(token, key)
            )
        except Unauthorized:
            audit.describe(outcome="denied")
            raise SignInRequired("Your session has ended. Sign in again.") from None
        principal = ConsolePrincipal(user, claims)
        request.state.console_principal = principal
        await limiter.hit(settings.default_rate_limit, "default", f"user:{claims.sub}")
        if user.role not in roles:
            raise ConsoleForbidden(
                "This page is for administrators"
                + ("" if required_role == "admin" else " and auditors")
                + f". You are signed in as '{user.username}' (role {user.role})."
            )
        return principal

    return dependency


Viewer = Annotated[ConsolePrincipal, Depends(console_user())]
Admin = Annotated[ConsolePrincipal, Depends(console_user("admin"))]
