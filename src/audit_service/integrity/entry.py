"""Leaf entry v1: the canonical bytes of one audit event that the Merkle log commits to.

The entry is an RFC 8785 (JCS) JSON array; its leaf hash is SHA-256(0x00 ‖ entry). Personal
values never appear in it, in clear or as a plain hash: each is replaced by a keyed
commitment, so deleting a key (or the row's value) later anonymises the event without
changing a single leaf hash, and a commitment cannot be brute-forced without the key.

    salt_e     = HMAC-SHA256(K, event_id as 16 bytes)
    commitment = SHA-256(domain ‖ salt_e ‖ UTF-8 value), written as 64 lowercase hex digits

with K the *day key* (the key of the event's `recorded_at` UTC day, chosen by the caller) for
the IP address and the user agent, and the *subject key* (one per data subject, i.e. per
actor) for the actor name and, for `user` actors, the actor id. The domains are the ASCII
strings ``audit/v1 ip``, ``audit/v1 user_agent``, ``audit/v1 actor_id``,
``audit/v1 actor_name`` followed by one NUL byte. A null value has a null commitment; the
empty string is committed like any other value.

Field order of the v1 array (index: content; "?" = may be null):

     0  "audit/v1"                 version tag
     1  id                         audit_event.id (integer)
     2  event_id                   lowercase hyphenated UUID
     3  occurred_at                UTC, ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (always 6 digits)
     4  recorded_at                same format
     5  source
     6  tenant_id?
     7  actor_type                 user / service / system / anonymous
     8  actor_id?                  in clear, except null for ``user`` actors
     9  actor_id_commitment?       ``user`` actors only
    10  actor_name_commitment?
    11  actor_role?
    12  action
    13  module
    14  outcome
    15  description?
    16  target_type?
    17  target_id?
    18  ip_prefix?                 the /24 (IPv4) or /48 (IPv6) network, e.g. ``203.0.113.0/24``
    19  ip_commitment?
    20  user_agent_commitment?
    21  request_id?
    22  method?
    23  path?
    24  status_code?
    25  latency_ms?                JCS number
    26  metadata                   JSON object (JCS: keys in UTF-16 code-unit order)
    27  idempotency_key?
    28  client_request_id?         the caller's own X-Request-ID (request_id is ours)

`ip_bytes` is not in the entry: it is derived from `ip`. Any new column of audit_event must be
added here under a new version tag, or listed in `EXCLUDED_COLUMNS` (a test enforces this).

JCS notes: strings are escaped as ECMAScript JSON.stringify does (only ``"``, ``\\`` and
control characters; everything else literal UTF-8); numbers are written as ECMAScript
Number::toString writes doubles. Integers with |n| ≤ 2^53 are exact; larger ones become the
nearest double, exactly as any RFC 8785 implementation would read them — the entry stays
deterministic, but such values are only committed to double precision. NaN, infinities, lone
surrogates and non-string object keys are refused with ValueError.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import operator
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring  # C-accelerated; escapes exactly as JCS requires
from typing import Any, NoReturn

from audit_service.integrity.merkle import leaf_hash

VERSION = "audit/v1"
KEY_SIZE = 32

ENTRY_COLUMNS = (
    "id",
    "event_id",
    "occurred_at",
    "recorded_at",
    "source",
    "tenant_id",
    "actor_type",
    "actor_id",
    "actor_name",
    "actor_role",
    "action",
    "module",
    "outcome",
    "description",
    "target_type",
    "target_id",
    "ip",
    "user_agent",
    "request_id",
    "method",
    "path",
    "status_code",
    "latency_ms",
    "metadata",
    "idempotency_key",
    "client_request_id",
)
# Columns deliberately outside the entry, with the reason.
EXCLUDED_COLUMNS = {"ip_bytes": "derived from ip (a 16-byte key for CIDR filters)"}

# The v1 entry array, by index (ENTRY_COLUMNS with the version first and the personal fields
# split into their clear part and commitment): names for messages about a row that differs
# from its entry.
ENTRY_FIELDS = (
    "version",
    "id",
    "event_id",
    "occurred_at",
    "recorded_at",
    "source",
    "tenant_id",
    "actor_type",
    "actor_id",
    "actor_id (commitment)",
    "actor_name (commitment)",
    "actor_role",
    "action",
    "module",
    "outcome",
    "description",
    "target_type",
    "target_id",
    "ip (prefix)",
    "ip (commitment)",
    "user_agent (commitment)",
    "request_id",
    "method",
    "path",
    "status_code",
    "latency_ms",
    "metadata",
    "idempotency_key",
    "client_request_id",
)

DOMAIN_IP = b"audit/v1 ip\x00"
DOMAIN_USER_AGENT = b"audit/v1 user_agent\x00"
DOMAIN_ACTOR_ID = b"audit/v1 actor_id\x00"
DOMAIN_ACTOR_NAME = b"audit/v1 actor_name\x00"
# SHA-256 states with the domain already absorbed: commitments copy them (cheaper per event).
_DOMAIN_STATES = {
    d: hashlib.sha256(d) for d in (DOMAIN_IP, DOMAIN_USER_AGENT, DOMAIN_ACTOR_ID, DOMAIN_ACTOR_NAME)
}


# --- RFC 8785 -------------------------------------------------------------------------


def _es6_number(x: float) -> str:
    """ECMAScript Number::toString for a finite double (RFC 8785 §3.2.2.3)."""
    if x != x or x in (float("inf"), float("-inf")):
        raise ValueError("NaN and infinity are not JSON numbers")
    if x == 0:
        return "0"  # also -0
    if x < 0:
        return "-" + _es6_number(-x)
    short = repr(x)
    if "e" not in short:
        # Fixed notation from repr() (1e-4 <= x < 1e16) has the same digits ES6 prints in
        # the same notation, except that repr() keeps ".0" on integral values.
        return short[:-2] if short.endswith(".0") else short
    # repr() gives the shortest digits that round-trip, which is what ES6 requires too.
    mantissa, _, exp_text = repr(x).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    digits = (int_part + frac_part).lstrip("0")
    n = len(int_part) + (int(exp_text) if exp_text else 0)  # decimal point position
    n -= len(int_part + frac_part) - len((int_part + frac_part).lstrip("0"))
    digits = digits.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * (-n) + digits
    e = n - 1
    exponent = f"e{'+' if e >= 0 else '-'}{abs(e)}"
    return (digits if k == 1 else digits[0] + "." + digits[1:]) + exponent


_SAFE_INT = 2**53


def _utf16_key(s: str) -> bytes:
    return s.encode("utf-16-be", "surrogatepass")


def _jcs(value: Any) -> str:
    # Exact-type dispatch for the common cases first (bool is not int here: type(True) is
    # bool); anything else, including subclasses, takes the general path.
    t = type(value)
    if t is str:
        return encode_basestring(value)
    if t is dict:
        return _jcs_dict(value)
    if t is list:
        return "[" + ",".join([_jcs(v) for v in value]) + "]"
    if t is int and -_SAFE_INT <= value <= _SAFE_INT:
        return str(value)
    if t is float:
        return _es6_number(value)
    if value is None:
        return "null"
    return _jcs_other(value)


def _jcs_dict(value: dict[Any, Any]) -> str:
    # Metadata is the costliest part of an entry: ASCII string keys (code point order is
    # UTF-16 order for them) with string, safe-integer and object values are written here
    # without a call per value (8.2 -> 3.7 µs for a 7-key object); any other key takes the
    # general path.
    try:
        keys = sorted(value)
    except TypeError:  # keys of mixed types
        return _jcs_other(value)
    enc = encode_basestring
    parts: list[str] = []
    append = parts.append
    for k in keys:
        if type(k) is not str or not k.isascii():
            return _jcs_dict_general(value)
        v = value[k]
        t = type(v)
        if t is str:
            append(enc(k) + ":" + enc(v))
        elif t is int and -_SAFE_INT <= v <= _SAFE_INT:
            append(enc(k) + ":" + str(v))
        elif t is dict:
            append(enc(k) + ":" + _jcs_dict(v))
        else:
            append(enc(k) + ":" + _jcs(v))
    return "{" + ",".join(parts) + "}"


def _jcs_dict_general(value: dict[Any, Any]) -> str:
    if all(type(k) is str for k in value):
        keys = sorted(value, key=_utf16_key)
        return "{" + ",".join([encode_basestring(k) + ":" + _jcs(value[k]) for k in keys]) + "}"
    return _jcs_other(value)


def _jcs_other(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return encode_basestring(value)
    if isinstance(value, int):
        if -_SAFE_INT <= value <= _SAFE_INT:
            return str(int(value))
        try:
            return _es6_number(float(value))
        except OverflowError:
            raise ValueError("integer too large for a JSON number") from None
    if isinstance(value, float):
        return _es6_number(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_jcs(v) for v in value) + "]"
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, str):
                raise ValueError(f"JSON object keys must be strings, got {type(k).__name__}")
        keys = sorted(value, key=_utf16_key)
        return "{" + ",".join(encode_basestring(k) + ":" + _jcs(value[k]) for k in keys) + "}"
    raise ValueError(f"{type(value).__name__} is not a JSON value")


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical UTF-8 bytes of a JSON value (str, int, float, bool, None, list,
    tuple, dict with str keys)."""
    text = _jcs(value)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("string contains a lone surrogate (not valid Unicode)") from None


# --- commitments ----------------------------------------------------------------------


@dataclass(frozen=True)
class EntryKeys:
    """Key material for one event's commitments (32 bytes each; None if not needed)."""

    day_key: bytes | None = None  # for ip and user_agent
    subject_key: bytes | None = None  # for the actor's name (and id, for users)

    def __repr__(self) -> str:  # keys never reach logs
        return "EntryKeys(<redacted>)"


@dataclass(frozen=True)
class Commitments:
    ip: bytes | None = None
    user_agent: bytes | None = None
    actor_id: bytes | None = None
    actor_name: bytes | None = None


@functools.lru_cache(maxsize=4096)
def _hmac_states(key: bytes) -> tuple[Any, Any]:
    """SHA-256 states with HMAC's inner and outer pads absorbed (RFC 2104), so each salt costs
    two hash copies instead of re-deriving the pads: the sequencer sees one day key for a
    whole day. Bounded; `forget_keys()` drops them (e.g. right after a key is erased).
    A miss must stay cheap too: `verify` walks years of history with thousands of subject
    keys, and missed here for about one event in three (measured: ~10 µs per miss with a
    per-byte generator, ~1 µs with translate)."""
    padded = key.ljust(64, b"\x00")
    return hashlib.sha256(padded.translate(_IPAD)), hashlib.sha256(padded.translate(_OPAD))


# XOR with HMAC's pad bytes as translation tables: a miss (a new data subject) costs ~1 µs,
# not the ~7 µs of a byte-by-byte generator.
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


def forget_keys() -> None:
    _hmac_states.cache_clear()


def event_salt(key: bytes, event_id: uuid.UUID) -> bytes:
    """HMAC-SHA256(key, event_id.bytes)."""
    if len(key) != KEY_SIZE:
        raise ValueError(f"commitment keys must be {KEY_SIZE} bytes")
    inner, outer = _hmac_states(bytes(key))
    h = inner.copy()
    h.update(event_id.bytes)
    o = outer.copy()
    o.update(h.digest())
    salt: bytes = o.digest()
    return salt


def commit(domain: bytes, salt: bytes, value: str) -> bytes:
    h = _DOMAIN_STATES[domain].copy() if domain in _DOMAIN_STATES else hashlib.sha256(domain)
    h.update(salt)
    h.update(value.encode("utf-8", "strict"))
    return h.digest()


def compute_commitments(event: Mapping[str, Any], keys: EntryKeys) -> Commitments:
    """Commitments for an event's personal fields; ValueError naming a missing key."""
    event_id = _uuid(event.get("event_id"))
    ip, user_agent = _opt_str(event, "ip"), _opt_str(event, "user_agent")
    name = _opt_str(event, "actor_name")
    actor_id = _opt_str(event, "actor_id") if event.get("actor_type") == "user" else None
    out: dict[str, bytes] = {}
    if ip is not None or user_agent is not None:
        if keys.day_key is None:
            raise ValueError("day_key is required to commit to ip / user_agent")
        salt = event_salt(keys.day_key, event_id)
        if ip is not None:
            out["ip"] = commit(DOMAIN_IP, salt, ip)
        if user_agent is not None:
            out["user_agent"] = commit(DOMAIN_USER_AGENT, salt, user_agent)
    if name is not None or actor_id is not None:
        if keys.subject_key is None:
            raise ValueError("subject_key is required to commit to actor_name / actor_id")
        salt = event_salt(keys.subject_key, event_id)
        if name is not None:
            out["actor_name"] = commit(DOMAIN_ACTOR_NAME, salt, name)
        if actor_id is not None:
            out["actor_id"] = commit(DOMAIN_ACTOR_ID, salt, actor_id)
    return Commitments(**out)


# --- the entry ------------------------------------------------------------------------


def ip_prefix(ip: str) -> str:
    """The coarse network kept in clear: /24 for IPv4, /48 for IPv6."""
    if ":" not in ip:
        try:
            packed = socket.inet_pton(socket.AF_INET, ip)
        except OSError:
            raise ValueError(f"ip {ip!r} is not an IPv4 or IPv6 address") from None
        return socket.inet_ntop(socket.AF_INET, packed[:3] + b"\x00") + "/24"
    try:
        address = ipaddress.IPv6Address(ip.split("%", 1)[0])
    except ValueError:
        raise ValueError(f"ip {ip!r} is not an IPv4 or IPv6 address") from None
    # ipaddress, not inet_ntop: its text form is the same on every platform a verifier uses.
    return f"{ipaddress.IPv6Address(address.packed[:6] + bytes(10)).compressed}/48"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
# "YYYY-MM-DDTHH:MM:SS" by whole UTC second: a batch of events shares a handful of seconds,
# so the date formatting runs once per second instead of twice per event. Bounded.
_second_prefixes: dict[int, str] = {}


def _timestamp(event: Mapping[str, Any], name: str) -> str:
    value = event.get(name)
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
    return _utc_text(value)


def _utc_text(value: datetime) -> str:
    """An aware datetime as entry text (a naive one raises TypeError: it cannot be
    subtracted from the aware epoch)."""
    second = (value - _EPOCH) // _SECOND  # exact integer arithmetic, any time zone
    prefix = _second_prefixes.get(second)
    if prefix is None:
        if len(_second_prefixes) >= 4096:
            _second_prefixes.clear()
        # isoformat always pads the year to 4 digits.
        utc = value.astimezone(UTC).replace(microsecond=0, tzinfo=None)
        prefix = _second_prefixes[second] = utc.isoformat()
    return f"{prefix}.{value.microsecond:06d}Z"


def _uuid(value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise ValueError("event_id must be a UUID")


def _opt_str(event: Mapping[str, Any], name: str) -> str | None:
    if name not in event:
        _missing(name)
    value = event[name]
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string or null")
    return value


def _missing(name: str) -> NoReturn:
    raise ValueError(f"event field {name} is missing")


def _str(event: Mapping[str, Any], name: str) -> str:
    """A required string column, JSON-encoded."""
    value = event[name]
    if type(value) is not str and not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    return encode_basestring(value)


def _ostr(event: Mapping[str, Any], name: str) -> str:
    """An optional string column, JSON-encoded."""
    value = event[name]
    if value is None:
        return "null"
    if type(value) is not str and not isinstance(value, str):
        raise ValueError(f"{name} must be a string or null")
    return encode_basestring(value)


def _hex(c: bytes | None) -> str:
    return "null" if c is None else f'"{c.hex()}"'


def encode_entry(event: Mapping[str, Any], commitments: Commitments) -> bytes:
    """The v1 entry bytes of an event whose commitments are already known (e.g. stored
    ones, after the key or the clear value was erased)."""
    # Hot path (the sequencer runs it per event): the top-level array is written directly,
    # each column validated as it is encoded; only metadata goes through the generic JCS.
    try:
        return _encode_entry(event, commitments)
    except KeyError as exc:
        raise ValueError(f"event field {exc.args[0]} is missing") from None


def _encode_entry(event: Mapping[str, Any], commitments: Commitments) -> bytes:
    event_id = _uuid(event["event_id"])
    pk = event["id"]
    if type(pk) is not int or pk < 0:
        raise ValueError("id must be a non-negative integer")
    status = event["status_code"]
    if status is None:
        status_text = "null"
    elif type(status) is int:
        status_text = str(status)
    else:
        raise ValueError("status_code must be an integer or null")
    latency = event["latency_ms"]
    if latency is None:
        latency_text = "null"
    elif type(latency) in (int, float):
        latency_text = _jcs(latency)
    else:
        raise ValueError("latency_ms must be a number or null")
    metadata = event["metadata"]
    if not isinstance(metadata, dict):
        raise ValueError("metadata must be a JSON object")
    actor_type = _str(event, "actor_type")
    is_user = event["actor_type"] == "user"
    actor_id = _ostr(event, "actor_id")
    ip = event["ip"]
    if ip is not None and type(ip) is not str:
        raise ValueError("ip must be a string or null")
    user_agent = _ostr(event, "user_agent")  # validated; only its commitment is written
    del user_agent
    _ostr(event, "actor_name")
    _check_commitments(event, commitments, is_user)
    try:
        metadata_text = _jcs(metadata)
    except ValueError as exc:
        raise ValueError(f"metadata cannot be serialised canonically: {exc}") from None
    text = ",".join(
        (
            '["audit/v1"',
            str(pk),
            f'"{event_id}"',
            '"' + _timestamp(event, "occurred_at") + '"',
            '"' + _timestamp(event, "recorded_at") + '"',
            _str(event, "source"),
            _ostr(event, "tenant_id"),
            actor_type,
            "null" if is_user else actor_id,
            _hex(commitments.actor_id) if is_user else "null",
            _hex(commitments.actor_name),
            _ostr(event, "actor_role"),
            _str(event, "action"),
            _str(event, "module"),
            _str(event, "outcome"),
            _ostr(event, "description"),
            _ostr(event, "target_type"),
            _ostr(event, "target_id"),
            "null" if ip is None else f'"{ip_prefix(ip)}"',
            _hex(commitments.ip),
            _hex(commitments.user_agent),
            _ostr(event, "request_id"),
            _ostr(event, "method"),
            _ostr(event, "path"),
            status_text,
            latency_text,
            metadata_text,
            _ostr(event, "idempotency_key"),
            _ostr(event, "client_request_id") + "]",
        )
    )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a string field contains a lone surrogate (not valid Unicode)") from None


def _check_commitments(event: Mapping[str, Any], c: Commitments, is_user: bool) -> None:
    """A commitment exists exactly where a personal value does (or did, before erasure the
    caller passes the stored commitment with a null value), never for a null one."""
    pairs = [("ip", c.ip), ("user_agent", c.user_agent), ("actor_name", c.actor_name)]
    pairs.append(("actor_id", c.actor_id if is_user else None))
    for name, value in pairs:
        if value is not None and len(value) != 32:
            raise ValueError(f"{name} commitment must be 32 bytes")
        if event[name] is not None and value is None and (name != "actor_id" or is_user):
            raise ValueError(f"{name} is set but has no commitment")
    if not is_user and c.actor_id is not None:
        raise ValueError("only user actors have an actor_id commitment")


def commitments_with(event: Mapping[str, Any], keys: EntryKeys, kept: Commitments) -> Commitments:
    """An event's commitments where some were kept (retention: the key is gone or the clear
    value was replaced): a kept one stands for its field; the others are computed from the
    row with `keys` (ValueError naming a missing key)."""
    computed = compute_commitments(
        {
            **event,
            "ip": None if kept.ip is not None else event.get("ip"),
            "user_agent": None if kept.user_agent is not None else event.get("user_agent"),
            "actor_id": None if kept.actor_id is not None else event.get("actor_id"),
            "actor_name": None if kept.actor_name is not None else event.get("actor_name"),
        },
        keys,
    )
    is_user = event.get("actor_type") == "user"
    return Commitments(
        ip=kept.ip or computed.ip,
        user_agent=kept.user_agent or computed.user_agent,
        actor_id=(kept.actor_id or computed.actor_id) if is_user else None,
        actor_name=kept.actor_name or computed.actor_name,
    )


def build_entry(event: Mapping[str, Any], keys: EntryKeys) -> bytes:
    """The v1 entry of an event (a dict of audit_event columns, `metadata` by column name)."""
    return _build(event, keys.day_key, keys.subject_key)


def entry_leaf_hash(event: Mapping[str, Any], keys: EntryKeys) -> bytes:
    return leaf_hash(_build(event, keys.day_key, keys.subject_key))


def leaf_hash_with(
    event: Mapping[str, Any], day_key: bytes | None, subject_key: bytes | None
) -> bytes:
    """`entry_leaf_hash` without building an `EntryKeys` per event (the sequencer's loop)."""
    return _sha256(b"\x00" + _build(event, day_key, subject_key)).digest()


def _build(event: Mapping[str, Any], day_key: bytes | None, subject_key: bytes | None) -> bytes:
    try:
        return _fast_entry(event, day_key, subject_key)
    except Exception:  # noqa: S110 - the checked path below decides, and names the field
        pass
    keys = EntryKeys(day_key=day_key, subject_key=subject_key)
    return encode_entry(event, compute_commitments(event, keys))


# --- the fast path ----------------------------------------------------------------------
#
# The sequencer builds every entry once (and `verify` again): the checked path above costs
# ~17 µs per event, most of it in per-field helper calls. `_fast_entry` writes the same bytes
# for the events the checked path accepts with exact types (str, int, float, dict, aware
# datetime, UUID) in one pass; anything else (a missing field, a wrong or unusual type, a
# missing key, a lone surrogate, an invalid IP) raises, and `_build` reruns the event
# through the checked path, which either writes it or refuses it with its precise message.
# A test compares both paths over generated events.

_sha256 = hashlib.sha256
_ENTRY_VALUES = operator.itemgetter(*ENTRY_COLUMNS)


class _Refer(Exception):
    """Not for the fast path: let the checked path decide."""


def _fast_entry(
    event: Mapping[str, Any], day_key: bytes | None, subject_key: bytes | None
) -> bytes:
    (
        pk,
        event_id,
        occurred_at,
        recorded_at,
        source,
        tenant_id,
        actor_type,
        actor_id,
        actor_name,
        actor_role,
        action,
        module,
        outcome,
        description,
        target_type,
        target_id,
        ip,
        user_agent,
        request_id,
        method,
        path,
        status_code,
        latency_ms,
        metadata,
        idempotency_key,
        client_request_id,
    ) = _ENTRY_VALUES(event)
    if (
        type(pk) is not int
        or pk < 0
        or not isinstance(event_id, uuid.UUID)
        or type(metadata) is not dict
        or (status_code is not None and type(status_code) is not int)
        or (latency_ms is not None and type(latency_ms) not in (float, int))
        or (ip is not None and type(ip) is not str)
    ):
        raise _Refer
    enc = encode_basestring
    ip_c = ua_c = id_c = name_c = "null"
    if ip is not None or user_agent is not None:
        if day_key is None:
            raise _Refer
        salt = event_salt(day_key, event_id)
        if ip is not None:
            ip_c = '"' + _sha256(DOMAIN_IP + salt + ip.encode()).hexdigest() + '"'
        if user_agent is not None:
            ua_c = '"' + _sha256(DOMAIN_USER_AGENT + salt + user_agent.encode()).hexdigest() + '"'
    if actor_type == "user":
        clear_id = "null"
        if actor_name is not None or actor_id is not None:
            if subject_key is None:
                raise _Refer
            salt = event_salt(subject_key, event_id)
            if actor_id is not None:
                id_c = '"' + _sha256(DOMAIN_ACTOR_ID + salt + actor_id.encode()).hexdigest() + '"'
            if actor_name is not None:
                name_c = (
                    '"' + _sha256(DOMAIN_ACTOR_NAME + salt + actor_name.encode()).hexdigest() + '"'
                )
    else:
        clear_id = "null" if actor_id is None else enc(actor_id)
        if actor_name is not None:
            if subject_key is None:
                raise _Refer
            salt = event_salt(subject_key, event_id)
            name_c = '"' + _sha256(DOMAIN_ACTOR_NAME + salt + actor_name.encode()).hexdigest() + '"'
    text = ",".join(
        (
            '["audit/v1"',
            str(pk),
            f'"{event_id}"',
            '"' + _utc_text(occurred_at) + '"',
            '"' + _utc_text(recorded_at) + '"',
            enc(source),
            "null" if tenant_id is None else enc(tenant_id),
            enc(actor_type),
            clear_id,
            id_c,
            name_c,
            "null" if actor_role is None else enc(actor_role),
            enc(action),
            enc(module),
            enc(outcome),
            "null" if description is None else enc(description),
            "null" if target_type is None else enc(target_type),
            "null" if target_id is None else enc(target_id),
            "null" if ip is None else '"' + ip_prefix(ip) + '"',
            ip_c,
            ua_c,
            "null" if request_id is None else enc(request_id),
            "null" if method is None else enc(method),
            "null" if path is None else enc(path),
            "null" if status_code is None else str(status_code),
            "null" if latency_ms is None else _jcs(latency_ms),
            _jcs(metadata),
            "null" if idempotency_key is None else enc(idempotency_key),
            ("null" if client_request_id is None else enc(client_request_id)) + "]",
        )
    )
    return text.encode()
