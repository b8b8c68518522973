"""Local intervals from 15-minute buckets in zones with odd offsets and DST steps."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from audit_service.stats.buckets import assign, epoch, interval_starts, shift_months


def _t(text: str) -> int:
    return epoch(datetime.fromisoformat(text))


def test_kathmandu_days_begin_at_a_quarter_past_six_utc() -> None:
    tz = ZoneInfo("Asia/Kathmandu")  # +05:45
    starts = interval_starts(_t("2026-01-01T00:00:00Z"), _t("2026-01-03T00:00:00Z"), tz, "day")
    assert [datetime.fromtimestamp(s, UTC).isoformat() for s in starts] == [
        "2025-12-31T18:15:00+00:00",
        "2026-01-01T18:15:00+00:00",
        "2026-01-02T18:15:00+00:00",
    ]


def test_lord_howe_half_hour_dst_step() -> None:
    tz = ZoneInfo("Australia/Lord_Howe")  # +10:30, +11:00 from 2026-10-04 02:00 local
    day = interval_starts(
        _t("2026-10-04T00:00:00+10:30"), _t("2026-10-05T00:00:00+11:00"), tz, "day"
    )
    assert len(day) == 1
    hours = interval_starts(
        _t("2026-10-04T00:00:00+10:30"), _t("2026-10-05T00:00:00+11:00"), tz, "hour"
    )
    # 23.5 hours: 02:00-02:30 does not exist, so the local hour "02" is 02:30-03:00.
    assert len(hours) == 24
    assert datetime.fromtimestamp(hours[2], tz).isoformat() == "2026-10-04T02:30:00+11:00"
    assert hours[3] - hours[2] == 1800


def test_buckets_fall_into_their_interval() -> None:
    tz = ZoneInfo("Europe/Berlin")
    starts = interval_starts(
        _t("2026-03-01T00:00:00+01:00"), _t("2026-05-01T00:00:00+02:00"), tz, "month"
    )
    assert len(starts) == 2
    march_end = _t("2026-03-31T23:45:00+02:00")
    assert assign([starts[0], march_end, march_end + 900], starts) == [0, 0, 1]


def test_a_month_back_keeps_the_local_time_and_clamps_the_day() -> None:
    tz = ZoneInfo("Europe/Berlin")
    moved = shift_months(datetime.fromisoformat("2026-03-31T10:00:00+02:00"), -1, tz)
    assert moved.astimezone(tz).isoformat() == "2026-02-28T10:00:00+01:00"
    moved = shift_months(datetime.fromisoformat("2026-01-15T00:00:00+01:00"), -1, tz)
    assert moved.astimezone(tz).isoformat() == "2025-12-15T00:00:00+01:00"
