"""Standard Webhooks 1.0 signatures (https://www.standardwebhooks.com/): what the alert
channels and the forwarding destinations put on every request, and what a receiver checks.

The signed content is `{webhook-id}.{webhook-timestamp}.{body}`; the signature is the
base64 HMAC-SHA256 of it under the secret's bytes, sent as `v1,<signature>`. A secret is
`whsec_` + base64 of 24 to 64 random bytes. During a rotation a sender signs with both secrets
(space-separated signatures) so receivers holding either accept the message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping, Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
# The spec asks receivers to refuse timestamps further than this from their clock.
TOLERANCE_SECONDS = 5 * 60
_MIN_KEY_BYTES = 24
_MAX_KEY_BYTES = 64


class InvalidSecret(ValueError):
    """Not `whsec_` + base64 of 24 to 64 bytes. The message never quotes the secret."""


class InvalidSignature(ValueError):
    """The request is not signed by any of the receiver's secrets, or is too old or new."""


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_…` secret; raises InvalidSecret."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidSecret("a webhook secret starts with 'whsec_'")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        raise InvalidSecret("a webhook secret is 'whsec_' followed by base64") from None
    if not _MIN_KEY_BYTES <= len(key) <= _MAX_KEY_BYTES:
        raise InvalidSecret(
            f"a webhook secret holds {_MIN_KEY_BYTES} to {_MAX_KEY_BYTES} bytes of key"
        )
    return key


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature of a message."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign_headers(
    secrets_: Sequence[str], msg_id: str, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """The three headers of a signed request; one signature per secret (rotation)."""
    if not secrets_:
        raise InvalidSecret("at least one webhook secret is needed to sign")
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": " ".join(signature(s, msg_id, ts, body) for s in secrets_),
    }


def verify(
    secrets_: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> None:
    """Raises InvalidSignature unless one signature matches one secret, in constant time,
    and the timestamp is within `tolerance` seconds of `now`."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id")
    raw_ts = lowered.get("webhook-timestamp")
    sent = lowered.get("webhook-signature")
    if not msg_id or not raw_ts or not sent:
        raise InvalidSignature("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        ts = int(raw_ts)
    except ValueError:
        raise InvalidSignature("webhook-timestamp is not an integer") from None
    clock = time.time() if now is None else now
    if abs(clock - ts) > tolerance:
        raise InvalidSignature("webhook-timestamp is outside the tolerance")
    offered = [s.encode() for s in sent.split(" ") if s.startswith("v1,")]
    ok = False
    for secret in secrets_:
        expected = signature(secret, msg_id, ts, body).encode()
        for candidate in offered:
            # No early exit: every comparison runs, so timing says nothing about which failed.
            ok |= hmac.compare_digest(expected, candidate)
    if not ok:
        raise InvalidSignature("no signature matches")
