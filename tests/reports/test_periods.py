"""Which period each send covers, and when it is due, in the schedule's zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from audit_service.reports import periods

BERLIN, KOLKATA = ZoneInfo("Europe/Berlin"), ZoneInfo("Asia/Kolkata")


def test_daily_bounds_follow_local_midnights_across_dst() -> None:
    start, end = periods.bounds("daily", date(2026, 10, 25), BERLIN)  # clocks go back
    assert start == datetime(2026, 10, 24, 22, 0, tzinfo=UTC)
    assert end - start == timedelta(hours=25)
    start, end = periods.bounds("daily", date(2026, 3, 29), BERLIN)  # clocks go forward
    assert end - start == timedelta(hours=23)
    start, end = periods.bounds("daily", date(2026, 12, 1), KOLKATA)
    assert start == datetime(2026, 11, 30, 18, 30, tzinfo=UTC)
    assert end - start == timedelta(hours=24)


def test_weekly_and_monthly_periods() -> None:
    assert periods.period_start_day("weekly", date(2026, 12, 3)) == date(2026, 11, 30)
    start, end = periods.bounds("weekly", date(2026, 11, 30), ZoneInfo("UTC"))
    assert (start.date(), end.date()) == (date(2026, 11, 30), date(2026, 12, 7))
    assert periods.next_start_day("monthly", date(2026, 12, 1)) == date(2027, 1, 1)
    assert periods.previous_start_day("monthly", date(2026, 3, 1)) == date(2026, 2, 1)
    start, end = periods.bounds("monthly", date(2026, 10, 1), BERLIN)
    assert end - start == timedelta(days=31, hours=1)  # October holds the extra DST hour


def test_send_time_is_local_and_a_dst_gap_moves_forward() -> None:
    at = periods.send_time("daily", date(2026, 12, 1), "07:00", BERLIN)
    assert at == datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
    at = periods.send_time("monthly", date(2026, 11, 1), "08:00", KOLKATA)
    assert at == datetime(2026, 12, 1, 2, 30, tzinfo=UTC)
    # 02:30 does not exist in Berlin on 2026-03-29: it is read as 03:30 CEST (01:30 UTC).
    at = periods.send_time("daily", date(2026, 3, 28), "02:30", BERLIN)
    assert at == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_due_catches_up_missed_periods_from_since() -> None:
    utc = ZoneInfo("UTC")
    since = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)  # before that day's 07:00 send
    now = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
    days = list(periods.due("daily", "07:00", utc, since=since, now=now))
    assert days == [date(2026, 11, 27), date(2026, 11, 28), date(2026, 11, 29), date(2026, 11, 30)]
    # Created after the send time: that day's report is not owed.
    since = datetime(2026, 11, 28, 7, 1, tzinfo=UTC)
    assert next(periods.due("daily", "07:00", utc, since=since, now=now)) == date(2026, 11, 28)
    # Weekly: due on Mondays only; monthly on the 1st.
    assert list(periods.due("weekly", "08:00", utc, since=since, now=now)) == [date(2026, 11, 23)]
    assert list(periods.due("monthly", "08:00", utc, since=since, now=now)) == []
    assert list(
        periods.due("monthly", "08:00", utc, since=since, now=now + timedelta(hours=1))
    ) == [date(2026, 11, 1)]


def test_last_complete_period() -> None:
    now = datetime(2026, 12, 2, 0, 10, tzinfo=UTC)  # 01:10 in Berlin, still 1 Dec in New York
    assert periods.last_complete("daily", BERLIN, now) == date(2026, 12, 1)
    assert periods.last_complete("daily", ZoneInfo("America/New_York"), now) == date(2026, 11, 30)
    assert periods.last_complete("weekly", BERLIN, now) == date(2026, 11, 23)
    assert periods.last_complete("monthly", BERLIN, now) == date(2026, 11, 1)
