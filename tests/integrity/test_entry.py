"""Leaf entry v1: RFC 8785 vectors, the pinned canonical form, commitments, bad input."""

from __future__ import annotations

import hashlib
import json
import re
import struct
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_service.audit_log.models import AuditEvent
from audit_service.integrity import entry as e
from audit_service.integrity.entry import EntryKeys

V: dict[str, Any] = json.loads((Path(__file__).parent / "data" / "jcs_vectors.json").read_text())


def _double(bits: str) -> float:
    return float(struct.unpack(">d", bytes.fromhex(bits))[0])


@pytest.mark.parametrize("case", V["numbers"] + V["extra_numbers"], ids=lambda c: c["ieee"])
def test_rfc8785_number_serialisation(case: dict[str, str]) -> None:
    assert e.canonical_json(_double(case["ieee"])) == case["text"].encode()


@pytest.mark.parametrize("bits", ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"])
def test_nan_and_infinity_are_refused(bits: str) -> None:
    with pytest.raises(ValueError, match="NaN and infinity"):
        e.canonical_json([_double(bits)])


@pytest.mark.parametrize("case", V["documents"], ids=lambda c: c["name"])
def test_rfc8785_documents(case: dict[str, str]) -> None:
    assert e.canonical_json(json.loads(case["input"])).hex() == case["output_hex"]


def test_keys_sort_by_utf16_code_units_not_code_points() -> None:
    # U+E000 < U+1F600 as code points, but the emoji's UTF-16 lead unit (0xD83D) is smaller.
    doc = {"\ue000": 1, "\U0001f600": 2, "a": 3}
    assert e.canonical_json(doc) == '{"a":3,"\U0001f600":2,"\ue000":1}'.encode()
    assert json.dumps(doc, sort_keys=True, ensure_ascii=False).index("\ue000") < json.dumps(
        doc, sort_keys=True, ensure_ascii=False
    ).index("\U0001f600")  # which is what a naive sort_keys gets wrong


def test_integers_and_refusals() -> None:
    assert e.canonical_json([2**53, -(2**53), 0, True, None]) == (
        b"[9007199254740992,-9007199254740992,0,true,null]"
    )
    assert e.canonical_json(2**53 + 1) == b"9007199254740992"  # read as a double, like JCS
    with pytest.raises(ValueError, match="lone surrogate"):
        e.canonical_json("\ud800")
    with pytest.raises(ValueError, match="keys must be strings"):
        e.canonical_json({1: "x"})
    with pytest.raises(ValueError, match="not a JSON value"):
        e.canonical_json({"x": b"bytes"})
    with pytest.raises(ValueError, match="too large"):
        e.canonical_json(10**400)


DAY_KEY = bytes(range(32))
SUBJECT_KEY = bytes(range(32, 64))
KEYS = EntryKeys(day_key=DAY_KEY, subject_key=SUBJECT_KEY)


def sample_event(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": 42,
        "event_id": uuid.UUID("0b5c7d1e-8f2a-4c3b-9d4e-5f6a7b8c9d0e"),
        "occurred_at": datetime(2026, 12, 1, 21, 43, 19, 123456, tzinfo=UTC),
        "recorded_at": datetime(
            2026, 12, 1, 22, 43, 19, 500000, tzinfo=timezone(timedelta(hours=1))
        ),
        "source": "audit-service",
        "tenant_id": None,
        "actor_type": "user",
        "actor_id": "17",
        "actor_name": "Zoë Alvarez",
        "actor_role": "admin",
        "action": "auth.login",
        "module": "auth",
        "outcome": "success",
        "description": 'Login OK \u2028 "quoted"',
        "target_type": "user",
        "target_id": "17",
        "ip": "203.0.113.7",
        "ip_bytes": bytes(10) + b"\xff\xff\xcb\x00\x71\x07",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
        "request_id": "req-1",
        "method": "POST",
        "path": "/login",
        "status_code": 200,
        "latency_ms": 12.5,
        "metadata": {"b": [1, 2.0, 1e21], "a": {"\u00e9": None, "e": True}},
        "idempotency_key": None,
        "client_request_id": None,
    }
    event.update(changes)
    return event


def _commit(domain: bytes, key: bytes, event_id: uuid.UUID, value: str) -> str:
    import hmac

    salt = hmac.new(key, event_id.bytes, hashlib.sha256).digest()
    return hashlib.sha256(domain + salt + value.encode()).hexdigest()


def test_pinned_canonical_form_of_a_sample_event() -> None:
    event = sample_event()
    entry = e.build_entry(event, KEYS)
    eid = event["event_id"]
    ip_c = _commit(b"audit/v1 ip\x00", DAY_KEY, eid, "203.0.113.7")
    ua_c = _commit(b"audit/v1 user_agent\x00", DAY_KEY, eid, event["user_agent"])
    id_c = _commit(b"audit/v1 actor_id\x00", SUBJECT_KEY, eid, "17")
    name_c = _commit(b"audit/v1 actor_name\x00", SUBJECT_KEY, eid, "Zoë Alvarez")
    expected = (
        '["audit/v1",42,"0b5c7d1e-8f2a-4c3b-9d4e-5f6a7b8c9d0e",'
        '"2026-12-01T21:43:19.123456Z","2026-12-01T21:43:19.500000Z",'
        f'"audit-service",null,"user",null,"{id_c}","{name_c}","admin",'
        '"auth.login","auth","success","Login OK \u2028 \\"quoted\\"","user","17",'
        f'"203.0.113.0/24","{ip_c}","{ua_c}","req-1","POST","/login",200,12.5,'
        '{"a":{"e":true,"\u00e9":null},"b":[1,2,1e+21]},null,null]'
    )
    assert entry.decode() == expected
    # Pinned bytes: any change to the v1 format must change the version tag instead.
    assert hashlib.sha256(entry).hexdigest() == (
        "6b842c62ca5bf60ac836ba043123c956faee61ea63b723c4a02f4b97195cb8fc"
    )
    assert e.entry_leaf_hash(event, KEYS) == hashlib.sha256(b"\x00" + entry).digest()


def test_no_personal_value_in_clear_or_as_a_plain_hash() -> None:
    event = sample_event()
    entry = e.build_entry(event, KEYS)
    for value in ("203.0.113.7", "Zoë Alvarez", "Mozilla"):
        assert value.encode() not in entry
        assert hashlib.sha256(value.encode()).hexdigest().encode() not in entry
    # Same IP in two events: unlinkable commitments (salted per event).
    other = sample_event(event_id=uuid.uuid4())
    assert e.compute_commitments(event, KEYS).ip != e.compute_commitments(other, KEYS).ip
    # Service actors keep their id in clear and have no id commitment.
    service = sample_event(actor_type="service", actor_id="billing")
    assert b'"service","billing",null,' in e.build_entry(service, KEYS)


def test_ip_prefixes() -> None:
    assert e.ip_prefix("203.0.113.7") == "203.0.113.0/24"
    assert e.ip_prefix("2001:db8:1234:5678::1") == "2001:db8:1234::/48"
    assert e.ip_prefix("fe80::1%eth0") == "fe80::/48"
    with pytest.raises(ValueError, match="not an IPv4 or IPv6"):
        e.ip_prefix("203.0.113")


def test_anonymising_with_stored_commitments_keeps_the_leaf() -> None:
    event = sample_event()
    original = e.build_entry(event, KEYS)
    stored = e.compute_commitments(event, KEYS)
    # Retention: IP cut to its network, user agent and actor name erased, keys destroyed.
    erased = sample_event(ip="203.0.113.0", user_agent=None, actor_name=None, actor_id=None)
    assert e.encode_entry(erased, stored) == original


def test_every_audit_event_column_is_in_the_entry_or_excluded_on_purpose() -> None:
    columns = {c.name for c in AuditEvent.__table__.columns}
    assert columns == set(e.ENTRY_COLUMNS) | set(e.EXCLUDED_COLUMNS)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"occurred_at": datetime(2026, 1, 1)}, "occurred_at must be a timezone-aware"),
        ({"event_id": "not-a-uuid"}, "event_id must be a UUID"),
        ({"id": "42"}, "id must be a non-negative integer"),
        ({"source": None}, "source must be a string"),
        ({"actor_name": 5}, "actor_name must be a string or null"),
        ({"status_code": "200"}, "status_code must be an integer"),
        ({"latency_ms": "fast"}, "latency_ms must be a number"),
        ({"metadata": None}, "metadata must be a JSON object"),
        ({"metadata": {"x": float("nan")}}, "NaN"),
        ({"description": "\udcff"}, "lone surrogate"),
        ({"ip": "999.1.1.1"}, "not an IPv4 or IPv6"),
    ],
)
def test_bad_events_are_refused_naming_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        e.build_entry(sample_event(**changes), KEYS)


def test_missing_fields_and_keys_are_refused() -> None:
    event = sample_event()
    del event["path"]
    with pytest.raises(ValueError, match="event field path is missing"):
        e.build_entry(event, KEYS)
    with pytest.raises(ValueError, match="day_key is required"):
        e.build_entry(sample_event(), EntryKeys(subject_key=SUBJECT_KEY))
    with pytest.raises(ValueError, match="subject_key is required"):
        e.build_entry(sample_event(), EntryKeys(day_key=DAY_KEY))
    with pytest.raises(ValueError, match="32 bytes"):
        e.build_entry(sample_event(), EntryKeys(day_key=b"short", subject_key=SUBJECT_KEY))
    with pytest.raises(ValueError, match="ip is set but has no commitment"):
        e.encode_entry(sample_event(), e.Commitments())
    assert "00010203" not in repr(KEYS)


def test_event_salt_is_hmac_sha256_of_the_event_id() -> None:
    import hmac

    for key in (bytes(32), b"\xff" * 32, DAY_KEY):
        eid = uuid.uuid4()
        assert e.event_salt(key, eid) == hmac.digest(key, eid.bytes, "sha256")
    e.forget_keys()
    assert e.event_salt(DAY_KEY, eid) == hmac.digest(DAY_KEY, eid.bytes, "sha256")


@settings(max_examples=400, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_property_every_double_round_trips_in_ecmascript_notation(x: float) -> None:
    text = e.canonical_json(x).decode()
    assert float(text) == x
    magnitude = abs(x)
    if x == 0 or 1e-6 <= magnitude < 1e21:
        assert "e" not in text  # ES6 uses fixed notation in this range ...
        assert not text.endswith(".0")  # ... and never keeps a ".0"
    else:
        assert re.fullmatch(r"-?[1-9](\.[0-9]*[1-9])?e[+-][1-9][0-9]*", text), text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime(2026, 12, 1, 23, 59, 59, 999999, tzinfo=UTC), "2026-12-01T23:59:59.999999Z"),
        (datetime(2026, 12, 2, 0, 0, 0, tzinfo=UTC), "2026-12-02T00:00:00.000000Z"),
        (
            datetime(2026, 12, 2, 0, 30, 0, 5, tzinfo=timezone(timedelta(hours=1))),
            "2026-12-01T23:30:00.000005Z",
        ),
        (datetime(999, 1, 1, tzinfo=UTC), "0999-01-01T00:00:00.000000Z"),
        (datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=UTC), "1969-12-31T23:59:59.000001Z"),
    ],
)
def test_timestamps_are_utc_with_six_fraction_digits(value: datetime, text: str) -> None:
    assert e._timestamp({"t": value}, "t") == text
    assert e._timestamp({"t": value}, "t") == text  # and the same from the per-second cache


# --- the fast path writes exactly what the checked path writes --------------------------

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
_json = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=8,
)
# Each column: mostly well-typed values, sometimes the odd ones the checked path refuses.
_odd = st.sampled_from([None, 5, 2.5, b"x", "\udcff", True, "", "é"])
_columns: dict[str, Any] = {
    "id": st.integers(min_value=-1, max_value=2**40) | _odd,
    "event_id": st.uuids() | st.sampled_from(["0b5c7d1e-8f2a-4c3b-9d4e-5f6a7b8c9d0e", "x"]),
    "occurred_at": st.datetimes(timezones=st.just(UTC)) | st.datetimes(),
    "recorded_at": st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3))])),
    "actor_type": st.sampled_from(["user", "service", "system", "anonymous"]) | _odd,
    "ip": st.sampled_from(["203.0.113.7", "2001:db8::1", "fe80::1%eth0", "999.1.1.1"]) | _odd,
    "status_code": st.integers(min_value=100, max_value=599) | _odd,
    "latency_ms": st.floats(allow_nan=False) | st.integers() | _odd,
    "metadata": st.dictionaries(st.text(max_size=6), _json, max_size=5) | _odd,
}


@st.composite
def _events(draw: st.DrawFn) -> dict[str, Any]:
    event = sample_event()
    for name in e.ENTRY_COLUMNS:
        if draw(st.integers(0, 3)) == 0:
            strategy = _columns.get(name, st.text(max_size=12) | _odd)
            event[name] = draw(strategy)
    if draw(st.integers(0, 30)) == 0:
        del event[draw(st.sampled_from(e.ENTRY_COLUMNS))]
    return event


def _outcome(build: Any) -> Any:
    try:
        return build()
    except ValueError as exc:
        return ("ValueError", str(exc))


@settings(max_examples=1500, deadline=None)
@given(
    _events(),
    st.sampled_from([KEYS, EntryKeys(day_key=DAY_KEY), EntryKeys(subject_key=SUBJECT_KEY)]),
)
def test_fast_path_writes_what_the_checked_path_writes(event: dict[str, Any], keys: Any) -> None:
    checked = _outcome(lambda: e.encode_entry(event, e.compute_commitments(event, keys)))
    assert _outcome(lambda: e.build_entry(event, keys)) == checked
    try:
        fast = e._fast_entry(event, keys.day_key, keys.subject_key)
    except Exception:
        return  # referred to the checked path (compared above)
    assert fast == checked


def test_entry_field_names_match_the_v1_array() -> None:
    """ENTRY_FIELDS names each slot of the entry array (for messages about a differing row)."""
    entry = json.loads(e.build_entry(sample_event(), KEYS))
    assert len(e.ENTRY_FIELDS) == len(entry)
    assert entry[e.ENTRY_FIELDS.index("action")] == "auth.login"
    assert entry[e.ENTRY_FIELDS.index("ip (prefix)")] == "203.0.113.0/24"
    assert entry[e.ENTRY_FIELDS.index("client_request_id")] is None
