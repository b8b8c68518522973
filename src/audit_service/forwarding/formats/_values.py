"""Value conversions shared by the formats: an event as `log.follow` returns it (datetimes,
UUIDs, a dict of metadata) → JSON-ready values."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from audit_service import __version__

PRODUCT = "audit-service"
VENDOR = "audit-service"
VERSION = __version__


def as_datetime(value: Any) -> datetime | None:
    """An aware UTC datetime (a naive one is taken as UTC; an RFC 3339 string is parsed)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def rfc3339(value: Any) -> str | None:
    """RFC 3339 UTC with microseconds: 2026-12-02T23:27:10.123456Z."""
    moment = as_datetime(value)
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def epoch_ms(value: Any) -> int | None:
    """Milliseconds since the Unix epoch (integer arithmetic: no float rounding)."""
    moment = as_datetime(value)
    if moment is None:
        return None
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def finite(value: Any) -> float | None:
    """A float, or None when absent or not finite (PostgreSQL floats can hold NaN)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def text(value: Any) -> str | None:
    if value is None:
        return None
    return str(value)


def jsonable(value: Any) -> Any:
    """A deep copy of `value` made only of str/int/float/bool/None/list/dict (string keys)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        # JSON has no NaN/Infinity: keep the information as text rather than emit invalid JSON.
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)


def metadata(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event's metadata (column `metadata`), JSON-ready; {} when absent."""
    value = event.get("metadata")
    if value is None:
        return {}
    out = jsonable(value)
    return out if isinstance(out, dict) else {"value": out}
