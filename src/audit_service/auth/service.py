"""Login, tokens and user administration: rules, permissions and what each event says.

Every function takes the acting principal as an `Actor` (when it matters) and an `EventSink`
for the event its work becomes, never anything HTTP-shaped: the CLI calls the same functions
with a `SessionEventSink`, so the rules (the last-admin guard, the password policy) hold there.
"""

from __future__ import annotations

import logging
import re
import secrets
import string
from datetime import datetime, timedelta
from typing import Any

from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.audit_log.context import Actor
from audit_service.audit_log.sink import EventSink
from audit_service.auth import repository as repo
from audit_service.auth.models import ApiKey, User
from audit_service.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    ApiKeyPage,
    PasswordChange,
    PasswordReset,
    TokenResponse,
    UserCreate,
    UserOut,
    UserPage,
    UserUpdate,
)
from audit_service.core.config import Settings
from audit_service.core.errors import (
    Conflict,
    FieldError,
    Forbidden,
    NotFound,
    RateLimited,
    Unauthorized,
    ValidationFailed,
)
from audit_service.core.security import (
    TokenClaims,
    constant_time_equals,
    create_access_token,
    decode_access_token,
    hash_password_async,
    needs_rehash,
    sha256_hex,
    verify_password_async,
)
from audit_service.kit.models import utcnow

log = logging.getLogger(__name__)

LOGIN_FAILED = "auth.login_failed"
BAD_CREDENTIALS = "Incorrect username or password"
WRONG_CURRENT_PASSWORD = "The current password is incorrect"  # noqa: S105 - a message


def actor_of(user: User) -> Actor:
    return Actor(type="user", id=str(user.id), name=user.username, role=user.role)


def _token(user: User, settings: Settings, key: str) -> tuple[TokenResponse, TokenClaims]:
    token, claims = create_access_token(
        subject=str(user.id),
        role=user.role,
        version=user.token_version,
        key=key,
        ttl_seconds=settings.access_token_ttl,
    )
    return TokenResponse(access_token=token, expires_in=settings.access_token_ttl), claims


async def login(
    session: AsyncSession,
    sink: EventSink,
    settings: Settings,
    key: str,
    *,
    username: str,
    password: str,
) -> TokenResponse:
    # The attempted name is recorded (never the password) so failures can be investigated.
    sink.actor = Actor(type="anonymous", name=username[:200])
    await _reserve_attempt(session, sink, settings, username)
    user = await repo.get_user_by_username(session, username)
    # Always verify (a dummy hash stands in for a missing user): same time, same answer.
    valid = await verify_password_async(password, user.password_hash if user else None)
    if user is None or not valid or not user.is_active:
        sink.describe(
            action=LOGIN_FAILED,
            outcome="failure",
            description=f"Failed login for '{username[:200]}'",
        )
        raise Unauthorized(BAD_CREDENTIALS)
    await repo.clear_login_attempts(
        session,
        username,
        stale_before=utcnow() - timedelta(seconds=settings.login_lockout_window),
    )
    if needs_rehash(user.password_hash):
        user.password_hash = await hash_password_async(password)
        await repo.flush(session)
    response, claims = _token(user, settings, key)
    sink.actor = actor_of(user)
    sink.describe(
        description=f"User '{user.username}' logged in",
        target_type="user",
        target_id=str(user.id),
        token_id=claims.jti,
    )
    return response


async def _reserve_attempt(
    session: AsyncSession, sink: EventSink, settings: Settings, username: str
) -> None:
    """Count this password attempt before checking it; refuse it past the threshold.

    The count is the service's own (`login_counter`), never the audit log, which API keys
    write into. It is taken atomically *before* argon2, so N concurrent guesses let at most
    `login_lockout_failures` of them reach the check. It is keyed by the attempted name, also
    for unknown names (no enumeration through the lockout); the lock ends with its window,
    and the per-IP login limit still bounds how fast one client can keep it closed.
    """
    now = utcnow()
    window = timedelta(seconds=settings.login_lockout_window)
    attempts, started = await repo.reserve_login_attempt(
        session, username, now=now, window_start=now - window
    )
    if attempts > settings.login_lockout_failures:
        sink.describe(locked_out=True)
        raise RateLimited(
            "Too many failed logins for this account. Try again later.",
            _seconds_until(started + window, now),
        )


def _seconds_until(when: datetime, now: datetime) -> int:
    return int((when - now).total_seconds()) + 1


async def authenticate(
    session: AsyncSession, sink: EventSink, token: str | None, claims: TokenClaims | None
) -> tuple[User, TokenClaims]:
    """The active user a bearer token (already verified into `claims`) belongs to; any doubt
    is a 401."""
    if not token:
        raise Unauthorized()
    if claims is None or not claims.sub.isdigit():
        sink.describe(auth_error="invalid_token")
        raise Unauthorized("Invalid or expired token")
    user, revoked = await repo.get_user_and_revocation(session, int(claims.sub), claims.jti)
    if user is None:
        sink.describe(auth_error="unknown_user")
        raise Unauthorized("Invalid or expired token")
    # The signature is ours, so the token really names this user: record them as the actor
    # even when the token is no longer honoured.
    sink.actor = actor_of(user)
    reason = (
        "user_inactive"
        if not user.is_active
        else "sessions_revoked"
        if claims.ver != user.token_version
        else "token_revoked"
        if revoked
        else None
    )
    if reason:
        sink.describe(auth_error=reason)
        raise Unauthorized("Invalid or expired token")
    return user, claims


async def logout(session: AsyncSession, sink: EventSink, user: User, claims: TokenClaims) -> None:
    await repo.revoke_token(session, jti=claims.jti, user_id=user.id, expires_at=claims.exp)
    await repo.purge_expired_revocations(session, utcnow())
    sink.describe(
        description=f"User '{user.username}' logged out",
        target_type="user",
        target_id=str(user.id),
        token_id=claims.jti,
    )


async def change_password(
    session: AsyncSession,
    sink: EventSink,
    settings: Settings,
    key: str,
    user: User,
    data: PasswordChange,
) -> TokenResponse:
    """A user changes their own password, proving the current one.

    Every token of the user stops working, the one used for this call included (the version
    they carry is bumped); the fresh token returned is the only live session afterwards.
    Guesses at the current password count against the same lockout as logins: a stolen
    token must not become a way to brute-force the password.
    """
    # The authenticated `user` may be the process's cached copy, which has no password hash
    # and is not in the session (changing it would store nothing): work on the row itself.
    loaded = await repo.get_user(session, user.id)
    if loaded is None:
        raise Unauthorized("Invalid or expired token")
    user = loaded
    _target(sink, user, f"User '{user.username}' changed their password")
    await _reserve_attempt(session, sink, settings, user.username)
    if not await verify_password_async(data.current_password, user.password_hash):
        sink.describe(description=f"Wrong current password for '{user.username}'")
        raise Forbidden(WRONG_CURRENT_PASSWORD)
    await repo.clear_login_attempts(session, user.username)
    if constant_time_equals(data.current_password, data.new_password):
        raise ValidationFailed(
            "The new password must differ from the current one",
            errors=[
                FieldError(
                    loc=["body", "new_password"],
                    msg="must differ from the current password",
                    type="value_error",
                )
            ],
        )
    user.password_hash = await hash_password_async(data.new_password)
    user.token_version += 1
    await repo.flush(session)
    response, claims = _token(user, settings, key)
    sink.describe(sessions_revoked=True, token_id=claims.jti)
    return response


# --- administration -----------------------------------------------------------------------


def _target(sink: EventSink, user: User, description: str, **metadata: Any) -> None:
    sink.describe(target_type="user", target_id=str(user.id), description=description, **metadata)


def _require_admin(actor: Actor) -> None:
    """Administration is for admins and for the operator's CLI (a system actor).

    The HTTP routes check the role before the call; this is the same rule for every caller.
    """
    if actor.type == "system" or (actor.type == "user" and actor.role == "admin"):
        return
    raise Forbidden("This needs the role admin")


async def create_user(
    session: AsyncSession, sink: EventSink, actor: Actor, data: UserCreate
) -> UserOut:
    _require_admin(actor)
    user = User(
        username=data.username,
        full_name=data.full_name,
        email=data.email,
        role=data.role,
        password_hash=await hash_password_async(data.password),
        is_active=True,
        token_version=0,
    )
    try:
        await repo.add_user(session, user)
    except repo.DuplicateUsername:
        sink.describe(username=data.username)
        raise Conflict(f"Username '{data.username}' is taken") from None
    _target(sink, user, f"Created user '{user.username}' with role {user.role}", role=user.role)
    return UserOut.model_validate(user)


async def list_users(
    session: AsyncSession, sink: EventSink, actor: Actor, page: int, page_size: int
) -> UserPage:
    _require_admin(actor)
    users = await repo.list_users(session, offset=(page - 1) * page_size, limit=page_size)
    sink.describe(page=page, page_size=page_size)
    return UserPage(
        items=[UserOut.model_validate(u) for u in users],
        page=page,
        page_size=page_size,
        total=await repo.count_users(session),
    )


async def _get(session: AsyncSession, sink: EventSink, user_id: int) -> User:
    sink.describe(target_type="user", target_id=str(user_id))
    user = await repo.get_user(session, user_id)
    if user is None:
        raise NotFound(f"No user with id {user_id}")
    return user


async def user_id_by_name(session: AsyncSession, username: str) -> int:
    """For callers that name users (the CLI); the API addresses them by id."""
    user = await repo.get_user_by_username(session, username)
    if user is None:
        raise NotFound(f"no user '{username}'")
    return user.id


async def full_names(session: AsyncSession, actor_ids: list[str | None]) -> dict[str, str]:
    """Display names of users named by events' `actor_id` (a user's id as text): the
    console shows who acted by full name. Unknown or deleted users are simply absent."""
    ids = sorted({int(a) for a in actor_ids if a and a.isascii() and a.isdigit() and len(a) < 10})
    return {str(k): v for k, v in (await repo.full_names(session, ids)).items()}


async def get_user(session: AsyncSession, sink: EventSink, actor: Actor, user_id: int) -> UserOut:
    _require_admin(actor)
    return UserOut.model_validate(await _get(session, sink, user_id))


async def _keep_an_admin(session: AsyncSession, user: User, actor: Actor, what: str) -> None:
    if actor.type == "user" and actor.id == str(user.id):
        raise Conflict(f"You cannot {what} your own account")
    if user.role == "admin" and user.is_active and await repo.count_active_admins(session) <= 1:
        raise Conflict(f"Cannot {what} the last active admin")


async def update_user(
    session: AsyncSession, sink: EventSink, actor: Actor, user_id: int, data: UserUpdate
) -> UserOut:
    _require_admin(actor)
    user = await _get(session, sink, user_id)
    changes = {
        name: value
        for name, value in data.model_dump(exclude_unset=True).items()
        if getattr(user, name) != value
    }
    if changes.get("is_active") is False or (changes.get("role") not in (None, "admin")):
        await _keep_an_admin(session, user, actor, "demote or deactivate")
    before = {name: getattr(user, name) for name in changes}
    for name, value in changes.items():
        setattr(user, name, value)
    if "role" in changes or changes.get("is_active") is False:
        user.token_version += 1  # a changed role or a disabled account ends every session now
    await repo.flush(session)
    action = (
        "user.deactivated"
        if changes.get("is_active") is False
        else "user.activated"
        if changes.get("is_active") is True
        else "user.updated"
    )
    sink.describe(action=action)
    _target(
        sink,
        user,
        f"Updated user '{user.username}': {', '.join(changes) or 'no change'}",
        changed=sorted(changes),
        before=before,
        after=changes,
    )
    return UserOut.model_validate(user)


async def set_password(
    session: AsyncSession, sink: EventSink, actor: Actor, user_id: int, data: PasswordReset
) -> None:
    """An administrator (or the operator's CLI) sets a user's password; every session ends."""
    _require_admin(actor)
    user = await _get(session, sink, user_id)
    user.password_hash = await hash_password_async(data.new_password)
    user.token_version += 1
    # A known-good password from an administrator ends a lockout too.
    await repo.clear_login_attempts(session, user.username)
    await repo.flush(session)
    _target(sink, user, f"Password of '{user.username}' reset", sessions_revoked=True)


async def delete_user(session: AsyncSession, sink: EventSink, actor: Actor, user_id: int) -> None:
    _require_admin(actor)
    user = await _get(session, sink, user_id)
    await _keep_an_admin(session, user, actor, "delete")
    _target(sink, user, f"Deleted user '{user.username}'", username=user.username, role=user.role)
    await repo.delete_user(session, user)


async def revoke_sessions(
    session: AsyncSession, sink: EventSink, actor: Actor, user_id: int
) -> None:
    _require_admin(actor)
    user = await _get(session, sink, user_id)
    user.token_version += 1
    await repo.flush(session)
    _target(sink, user, f"Revoked every session of '{user.username}'")


async def ensure_bootstrap_admin(
    session: AsyncSession, username: str, password: SecretStr | None
) -> tuple[User, str | None] | None:
    """Create the first admin when none exists; returns it and a generated password, if any.

    A configured password that is not used is logged as a warning at start, instead of
    leaving the operator to wonder why it does not log in.
    """
    if await repo.count_active_admins(session) > 0:
        if password is not None:
            log.warning(
                "AUDIT_BOOTSTRAP_ADMIN_PASSWORD is set but an active admin already exists, "
                "so it is ignored (it only seeds the first admin). Change a password with "
                "POST /me/password or `audit-service users set-password`, then unset it."
            )
        return None
    if await repo.get_user_by_username(session, username) is not None:
        # An inactive admin or another role holds the name: leave it to a human.
        if password is not None:
            log.warning(
                "AUDIT_BOOTSTRAP_ADMIN_PASSWORD is ignored: there is no active admin, but the "
                "name %r (AUDIT_BOOTSTRAP_ADMIN_USERNAME) is taken by an inactive or non-admin "
                "user. Fix it with `audit-service users ...`.",
                username,
            )
        return None
    generated = None if password else secrets.token_urlsafe(15)
    user = User(
        username=username,
        full_name="Bootstrap administrator",
        role="admin",
        password_hash=await hash_password_async(
            password.get_secret_value() if password else generated or ""
        ),
        is_active=True,
        token_version=0,
    )
    await repo.add_user(session, user)
    return user, generated


# --- API keys (other services) ------------------------------------------------------------

# `ask_` + 12 public characters (the stored, listable prefix) + `_` + 40 secret characters:
# ~238 bits of entropy, recognisable in logs and by secret scanners.
API_KEY_TAG = "ask_"
_KEY_ALPHABET = string.ascii_letters + string.digits
_PREFIX_LENGTH, _SECRET_LENGTH = 12, 40
_API_KEY = re.compile(
    rf"^({API_KEY_TAG}[A-Za-z0-9]{{{_PREFIX_LENGTH}}})_[A-Za-z0-9]{{{_SECRET_LENGTH}}}$"
)
# Compared against when the prefix is unknown, so every miss costs the same.
_DUMMY_SHA256 = sha256_hex(secrets.token_hex(16))
# last_used_at is refreshed at most this often: no write per request.
LAST_USED_RESOLUTION = timedelta(seconds=60)
INVALID_KEY = "Invalid or revoked API key"


def api_key_prefix(credential: str) -> str | None:
    """The public prefix of a well-formed API key, or None for anything else (e.g. a JWT)."""
    match = _API_KEY.match(credential)
    return match.group(1) if match else None


def service_actor(key: ApiKey) -> Actor:
    return Actor(type="service", id=key.prefix, name=key.name, role=None)


async def new_api_key(
    session: AsyncSession, *, name: str, scopes: list[str], created_by: int | None
) -> tuple[ApiKey, str]:
    """Make a key; returns it and its secret, which exists nowhere else after this call."""
    prefix = API_KEY_TAG + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(_PREFIX_LENGTH))
    secret = f"{prefix}_{''.join(secrets.choice(_KEY_ALPHABET) for _ in range(_SECRET_LENGTH))}"
    # A plain SHA-256 is enough: the secret is random and long, so there is nothing to
    # brute-force that a slow hash would protect.
    key = ApiKey(
        name=name,
        prefix=prefix,
        secret_sha256=sha256_hex(secret),
        scopes=list(scopes),
        created_by=created_by,
    )
    await repo.add_api_key(session, key)
    return key, secret


async def create_api_key(
    session: AsyncSession, sink: EventSink, actor: Actor, data: ApiKeyCreate
) -> ApiKeyCreated:
    _require_admin(actor)
    created_by = int(actor.id) if actor.type == "user" and actor.id else None
    key, secret = await new_api_key(
        session, name=data.name, scopes=list(data.scopes), created_by=created_by
    )
    sink.describe(
        target_type="api_key",
        target_id=str(key.id),
        description=f"Created API key {key.prefix} for service '{key.name}'",
        name=key.name,
        prefix=key.prefix,
        scopes=key.scopes,
    )
    return ApiKeyCreated(**ApiKeyOut.model_validate(key).model_dump(), key=secret)


async def list_api_keys(
    session: AsyncSession, sink: EventSink, actor: Actor, page: int, page_size: int
) -> ApiKeyPage:
    _require_admin(actor)
    keys = await repo.list_api_keys(session, offset=(page - 1) * page_size, limit=page_size)
    sink.describe(page=page, page_size=page_size)
    return ApiKeyPage(
        items=[ApiKeyOut.model_validate(k) for k in keys],
        page=page,
        page_size=page_size,
        total=await repo.count_api_keys(session),
    )


async def revoke_api_key(session: AsyncSession, sink: EventSink, actor: Actor, key_id: int) -> None:
    _require_admin(actor)
    sink.describe(target_type="api_key", target_id=str(key_id))
    key = await repo.get_api_key(session, key_id)
    if key is None:
        raise NotFound(f"No API key with id {key_id}")
    if key.revoked_at is not None:
        sink.describe(
            description=f"API key {key.prefix} ('{key.name}') was already revoked",
            already_revoked=True,
        )
        return
    key.revoked_at = utcnow()
    await repo.flush(session)
    sink.describe(
        description=f"Revoked API key {key.prefix} of service '{key.name}'",
        name=key.name,
        prefix=key.prefix,
    )


async def authenticate_service(
    session: AsyncSession, sink: EventSink, signing_key: str, credential: str | None
) -> ApiKey:
    """The live API key a credential belongs to; any doubt is a 401. A user token is a 403."""
    if not credential:
        raise Unauthorized("An API key is required (Authorization: Bearer <key> or X-API-Key)")
    prefix = api_key_prefix(credential)
    if prefix is None:
        claims = decode_access_token(credential, signing_key)
        if claims is not None:
            await authenticate(session, sink, credential, claims)  # names the user
            raise Forbidden("This endpoint takes a service API key, not a user token")
        sink.describe(auth_error="malformed_api_key")
        raise Unauthorized(INVALID_KEY)
    key = await repo.get_api_key_by_prefix(session, prefix)
    # Constant-time comparison, and a dummy one for unknown prefixes: no timing oracle.
    matches = constant_time_equals(
        sha256_hex(credential), key.secret_sha256 if key else _DUMMY_SHA256
    )
    if key is None or not matches:
        sink.describe(auth_error="unknown_api_key", api_key_prefix=prefix)
        raise Unauthorized(INVALID_KEY)
    # The secret was proven: the service is the actor, even if the key no longer works.
    sink.actor = service_actor(key)
    if key.revoked_at is not None:
        sink.describe(auth_error="api_key_revoked")
        raise Unauthorized(INVALID_KEY)
    now = utcnow()
    if key.last_used_at is None or key.last_used_at < now - LAST_USED_RESOLUTION:
        await repo.touch_api_key(session, key.id, now, now - LAST_USED_RESOLUTION)
    return key


def require_scope(sink: EventSink, key: ApiKey, scope: str) -> None:
    if scope not in key.scopes:
        sink.describe(auth_error="missing_scope", scope=scope)
        raise Forbidden(f"This API key lacks the scope '{scope}'")
