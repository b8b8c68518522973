"""Verified tokens are remembered (core/security.py), but never a forgery, and never past
their expiry."""

from __future__ import annotations

import time

from audit_service.core import security
from audit_service.core.security import create_access_token, decode_access_token

KEY = "test-secret-" + "k" * 40


def test_a_remembered_token_still_expires() -> None:
    token, claims = create_access_token(subject="7", role="user", version=0, key=KEY, ttl_seconds=1)
    assert decode_access_token(token, KEY) == claims
    assert (KEY, token) in security._verified
    assert decode_access_token(token, KEY) == claims  # from memory
    deadline = claims.exp.timestamp() + 1.5
    while decode_access_token(token, KEY) is not None:
        assert time.time() < deadline, "an expired token was still accepted"
        time.sleep(0.05)
    assert (KEY, token) not in security._verified


def test_forgeries_are_neither_accepted_nor_remembered() -> None:
    token, _ = create_access_token(
        subject="7", role="admin", version=0, key="another-" + "x" * 40, ttl_seconds=60
    )
    assert decode_access_token(token, KEY) is None
    assert (KEY, token) not in security._verified
    genuine, claims = create_access_token(
        subject="7", role="user", version=0, key=KEY, ttl_seconds=60
    )
    assert decode_access_token(genuine, KEY) == claims
    head, payload, signature = genuine.split(".")
    assert decode_access_token(f"{head}.{payload}.{signature[:-2]}AA", KEY) is None
    assert decode_access_token(genuine, "a-rotated-" + "y" * 40) is None  # keyed by the key too


def test_memory_is_bounded() -> None:
    for i in range(security._VERIFIED_MAX + 10):
        security._verified[("k", str(i))] = None  # type: ignore[assignment]
    token, _ = create_access_token(subject="1", role="user", version=0, key=KEY, ttl_seconds=60)
    assert decode_access_token(token, KEY) is not None
    assert len(security._verified) <= security._VERIFIED_MAX
    security._verified.clear()
