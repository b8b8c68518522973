"""Opaque, tamper-proof keyset cursors on (occurred_at, id)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

Direction = Literal["next", "prev"]


class InvalidCursor(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Keyset:
    """A position in the newest-first order; `next` reads older rows, `prev` newer ones."""

    occurred_at: datetime
    id: int
    direction: Direction
    scope: str  # fingerprint of the filters the cursor was issued for


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(payload: str, key: str) -> str:
    digest = hmac.new(key.encode(), b"cursor:" + payload.encode(), hashlib.sha256).digest()
    return _b64(digest[:18])


def encode_cursor(keyset: Keyset, key: str) -> str:
    body = [
        keyset.occurred_at.astimezone(UTC).isoformat(),
        keyset.id,
        keyset.direction,
        keyset.scope,
    ]
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    return f"{payload}.{_sign(payload, key)}"


MAX_ROW_ID = 2**63 - 1  # a bigint: anything larger cannot be compared with the id column


def decode_cursor(token: str, key: str) -> Keyset:
    """The keyset a cursor names; anything forged, truncated or garbled is InvalidCursor."""
    payload, _, signature = token.partition(".")
    # compare_digest refuses non-ASCII str with a TypeError; what we issue is base64url.
    if (
        not payload
        or not signature
        or not token.isascii()
        or not hmac.compare_digest(signature, _sign(payload, key))
    ):
        raise InvalidCursor("cursor is invalid or was not issued by this service")
    try:
        at, row_id, direction, scope = json.loads(_unb64(payload))
        occurred_at = datetime.fromisoformat(at)
        if (
            direction not in ("next", "prev")
            or type(row_id) is not int  # bool is an int too
            or not 1 <= row_id <= MAX_ROW_ID
            or occurred_at.tzinfo is None
            or not isinstance(scope, str)
        ):
            raise ValueError
        occurred_at.astimezone(UTC)  # year 1 at +14:00 has no UTC equivalent
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidCursor("cursor is invalid") from exc
    return Keyset(occurred_at, row_id, direction, scope)


def fingerprint(value: object) -> str:
    """A short stable hash of the filters, binding a cursor to the search that produced it."""
    raw = json.dumps(value, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:16]
