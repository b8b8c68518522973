"""When a schedule sends and which period each send covers, in the schedule's time zone.

daily: the previous local day, sent at `send_at` on the next day; weekly: the previous ISO
week (Monday to Monday), sent on Mondays; monthly: the previous calendar month, sent on the
1st. Local midnights are looked up with zoneinfo, so a day across a DST change is 23 or 25
hours long, and a zone offset by :30 or :45 (Asia/Kolkata, Asia/Kathmandu) starts its days at
that UTC quarter hour — the statistics' resolution.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

Kind = Literal["daily", "weekly", "monthly"]
KINDS: tuple[Kind, ...] = ("daily", "weekly", "monthly")
DEFAULT_SEND_AT: dict[Kind, str] = {"daily": "07:00", "weekly": "08:00", "monthly": "08:00"}


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tz).astimezone(UTC)


def period_start_day(kind: Kind, day: date) -> date:
    """The first local day of the period `day` falls in."""
    if kind == "daily":
        return day
    if kind == "weekly":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def next_start_day(kind: Kind, start: date) -> date:
    if kind == "daily":
        return start + timedelta(days=1)
    if kind == "weekly":
        return start + timedelta(days=7)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


def previous_start_day(kind: Kind, start: date) -> date:
    if kind == "daily":
        return start - timedelta(days=1)
    if kind == "weekly":
        return start - timedelta(days=7)
    return (start - timedelta(days=1)).replace(day=1)


def bounds(kind: Kind, start_day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The period starting on local `start_day`, as UTC instants [start, end)."""
    return _midnight(start_day, tz), _midnight(next_start_day(kind, start_day), tz)


def send_time(kind: Kind, start_day: date, send_at: str, tz: ZoneInfo) -> datetime:
    """When the period starting on `start_day` is sent: `send_at` on the day it ends.
    A wall time DST skips (02:30 on a spring-forward day) is read as the time after the gap."""
    hours, minutes = (int(part) for part in send_at.split(":"))
    local = datetime.combine(next_start_day(kind, start_day), time(hours, minutes), tz)
    return local.astimezone(UTC)


def last_complete(kind: Kind, tz: ZoneInfo, now: datetime) -> date:
    """The start day of the latest period that has ended by `now`."""
    today = now.astimezone(tz).date()
    return previous_start_day(kind, period_start_day(kind, today))


def due(
    kind: Kind, send_at: str, tz: ZoneInfo, *, since: datetime, now: datetime
) -> Iterator[date]:
    """Start days of the periods whose send time is in [since, now], oldest first: the
    periods a schedule created (or last caught up) at `since` owes by `now`."""
    day = period_start_day(kind, since.astimezone(tz).date())
    # Start one period early: its send time may still lie after `since`.
    day = previous_start_day(kind, day)
    while (at := send_time(kind, day, send_at, tz)) <= now:
        if at >= since:
            yield day
        day = next_start_day(kind, day)
