"""Password hashing (argon2id) and access tokens (HS256 JWT, algorithm pinned)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from jose import JWTError, jwt

JWT_ALGORITHM = "HS256"
_hasher = PasswordHasher()
# Verified against when the username does not exist, so an unknown user costs the same time
# as a wrong password and the response cannot be used to enumerate accounts.
_dummy_hash: str | None = None  # made on first use: the CLI should not pay for it


def _dummy() -> str:
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))
    return _dummy_hash


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    try:
        return _hasher.verify(password_hash or _dummy(), password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# argon2 is deliberately slow (tens of ms of CPU, 64 MiB); it releases the GIL, so running it in
# a worker thread keeps the event loop serving other requests meanwhile.
async def hash_password_async(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)


async def verify_password_async(password: str, password_hash: str | None) -> bool:
    return await asyncio.to_thread(verify_password, password, password_hash)


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


@dataclass(frozen=True, slots=True)
class TokenClaims:
    sub: str
    role: str
    jti: str
    iat: datetime
    exp: datetime
    ver: int


def create_access_token(
    *, subject: str, role: str, version: int, key: str, ttl_seconds: int
) -> tuple[str, TokenClaims]:
    now = datetime.now(UTC).replace(microsecond=0)
    claims = TokenClaims(
        sub=subject,
        role=role,
        jti=uuid.uuid4().hex,
        iat=now,
        exp=now + timedelta(seconds=ttl_seconds),
        ver=version,
    )
    payload: dict[str, Any] = {
        "sub": claims.sub,
        "role": claims.role,
        "jti": claims.jti,
        "ver": claims.ver,
        "iat": int(claims.iat.timestamp()),
        "exp": int(claims.exp.timestamp()),
    }
    return jwt.encode(payload, key, algorithm=JWT_ALGORITHM), claims


# Tokens already verified, by (key, token): a session shows the same token on every request,
# and verifying is deterministic, so only its expiry needs checking again (python-jose's
# decode was ~60 µs, ~12 % of a cached `GET /me`). Only valid tokens are kept (a forgery never
# is), and at most _VERIFIED_MAX of them. Revocation is checked per request elsewhere.
_verified: dict[tuple[str, str], TokenClaims] = {}
_VERIFIED_MAX = 10_000


def decode_access_token(token: str, key: str) -> TokenClaims | None:
    """Claims of a valid token, or None for anything else (bad signature, alg, expiry, shape)."""
    claims = _verified.get((key, token))
    if claims is None:
        claims = _decode_access_token(token, key)
        if claims is None:
            return None
        if len(_verified) >= _VERIFIED_MAX:
            _verified.clear()
        _verified[(key, token)] = claims
    # Expiry without leeway, as python-jose checks it (to the second; here a little stricter).
    if time.time() > claims.exp.timestamp():
        _verified.pop((key, token), None)
        return None
    return claims


def _decode_access_token(token: str, key: str) -> TokenClaims | None:
    try:
        payload = jwt.decode(
            token,
            key,
            algorithms=[JWT_ALGORITHM],
            options={
                "require_exp": True,
                "require_iat": True,
                "require_sub": True,
                "require_jti": True,
            },
        )
        return TokenClaims(
            sub=str(payload["sub"]),
            role=str(payload["role"]),
            jti=str(payload["jti"]),
            iat=datetime.fromtimestamp(int(payload["iat"]), UTC),
            exp=datetime.fromtimestamp(int(payload["exp"]), UTC),
            ver=int(payload.get("ver", 0)),
        )
    except (JWTError, KeyError, TypeError, ValueError):
        return None


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
