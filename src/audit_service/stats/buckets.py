"""15-minute UTC buckets and the caller's local intervals (hours, days, weeks, months).

Every local interval starts at an instant where the local wall clock enters a new hour,
day, ISO week or month; across DST a local day is 23, 24 or 25 hours long, and in a zone at
+05:30 it starts at 18:30 UTC. The intervals of a range are computed once (their starts,
ascending) and each rollup bucket falls into one by bisection: no time zone arithmetic per
bucket, and no dialect's time zone support needed (SQLite has none).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from audit_service.stats.models import BUCKET_SECONDS

Interval = Literal["hour", "day", "week", "month"]


def epoch(value: datetime) -> int:
    return int(value.astimezone(UTC).timestamp())


def floor_bucket(seconds: int) -> int:
    return seconds - seconds % BUCKET_SECONDS


def ceil_bucket(seconds: int) -> int:
    return -((-seconds) // BUCKET_SECONDS) * BUCKET_SECONDS


def aligned(value: datetime) -> bool:
    return value.microsecond == 0 and epoch(value) % BUCKET_SECONDS == 0


def local(seconds: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(seconds, tz)


def _day_start(day: date, tz: ZoneInfo) -> int:
    # fold=0: a midnight skipped by DST resolves to the transition itself, an ambiguous one
    # to its first occurrence; either way the instant the local day begins.
    return epoch(datetime(day.year, day.month, day.day, tzinfo=tz))


def _truncate(day: date, interval: Interval) -> date:
    if interval == "week":
        return day - timedelta(days=day.weekday())  # ISO weeks start on Monday
    if interval == "month":
        return day.replace(day=1)
    return day


def _next(day: date, interval: Interval) -> date:
    if interval == "day":
        return day + timedelta(days=1)
    if interval == "week":
        return day + timedelta(days=7)
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def interval_starts(start: int, end: int, tz: ZoneInfo, interval: Interval) -> list[int]:
    """The starts (epoch seconds, ascending) of the local intervals that overlap
    [start, end); the first may begin before `start`."""
    if start >= end:
        return []
    if interval == "hour":
        # Walk the buckets: offsets change by 30 minutes in some zones (Lord Howe), so a
        # local hour is not always 3,600 s; a span is at most 10 years (350,400 buckets).
        first = local(start, tz)
        out = [start - first.minute * 60 - first.second]
        # The offset is part of the key: the hour a DST change repeats is two local hours.
        previous = (first.date(), first.hour, first.utcoffset())
        for t in range(floor_bucket(start) + BUCKET_SECONDS, end, BUCKET_SECONDS):
            now = local(t, tz)
            key = (now.date(), now.hour, now.utcoffset())
            if key != previous:
                out.append(t)
                previous = key
        return out
    day = _truncate(local(start, tz).date(), interval)
    last = local(end - 1, tz).date()
    out = []
    while day <= last:
        out.append(_day_start(day, tz))
        day = _next(day, interval)
    return out


def assign(buckets: Sequence[int], starts: Sequence[int]) -> list[int]:
    """For each bucket, the index of the interval it falls into (starts ascending)."""
    return [bisect.bisect_right(starts, b) - 1 for b in buckets]


def label(seconds: int, tz: ZoneInfo) -> datetime:
    return local(seconds, tz)


def shift_months(value: datetime, months: int, tz: ZoneInfo) -> datetime:
    """The same local wall time `months` calendar months earlier/later (the day clamped to
    the month's length), back in UTC."""
    wall = value.astimezone(tz)
    index = wall.year * 12 + wall.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    first_of_next = (date(year, month, 28) + timedelta(days=4)).replace(day=1)
    day = min(wall.day, (first_of_next - timedelta(days=1)).day)
    moved = wall.replace(year=year, month=month, day=day, tzinfo=tz, fold=0)
    return moved.astimezone(UTC)


Range = tuple[int, int]  # [lo, hi), epoch seconds


def pieces(
    starts: Sequence[int], start: int, end: int, sizes: Sequence[int]
) -> dict[int, list[Range]]:
    """How to read [start, end) cut into the local intervals beginning at `starts` from
    rollup levels of `sizes` seconds (coarsest first, the last one the 15-minute bucket;
    each a multiple of the next, UTC-aligned): per size, the ranges of rows to read,
    ascending, adjacent ones merged.

    Every interval is split on its own: the whole rows of the coarsest level inside it, then
    of the next level beside them, down to 15-minute rows at its ragged edges, so no row
    crosses an interval's start and each can be assigned to one interval whole. A local
    day that is a UTC day reads one day row per key; a Europe/Berlin day (23:00 to 23:00
    UTC) 24 hour rows; an Asia/Kolkata day (18:30 to 18:30 UTC) 23 hour rows and two
    15-minute rows; a 23- or 25-hour DST day whatever hours it has. With no `starts`, the
    whole range is one interval."""
    bounds = [s for s in starts if start < s < end]
    edges = [start, *bounds, end]
    out: dict[int, list[Range]] = {size: [] for size in sizes}
    for a, b in itertools.pairwise(edges):
        _split(a, b, sizes, out)
    merged: dict[int, list[Range]] = {}
    for size, ranges in out.items():
        ranges.sort()
        runs: list[Range] = []
        for lo, hi in ranges:
            if runs and runs[-1][1] == lo:
                runs[-1] = (runs[-1][0], hi)
            else:
                runs.append((lo, hi))
        merged[size] = runs
    return merged


def _split(a: int, b: int, sizes: Sequence[int], out: dict[int, list[Range]]) -> None:
    if a >= b:
        return
    size = sizes[0]
    if len(sizes) == 1:
        out[size].append((a, b))
        return
    lo = -(-a // size) * size
    hi = b - b % size
    if lo < hi:
        out[size].append((lo, hi))
        _split(a, lo, sizes[1:], out)
        _split(hi, b, sizes[1:], out)
    else:
        _split(a, b, sizes[1:], out)
