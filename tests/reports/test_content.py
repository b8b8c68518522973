"""What a report says (both dialects): hand-counted figures for a daily, weekly and monthly
period, comparisons, tops, peak hour, failed logins per IP, revisions, tenant scope; and how
it renders for mail clients (escaped, no SVG, images or data: URIs; a text part)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from audit_service.reports.content import Reported, ReportPeriod, ReportScope, build_report
from audit_service.reports.periods import bounds
from audit_service.reports.render import render
from tests.conftest import Harness
from tests.stats.helpers import event, post_events, roll_up

BERLIN = ZoneInfo("Europe/Berlin")
DAY = datetime(2026, 11, 10, tzinfo=UTC)  # a Tuesday
A, B = "198.51.100.7", "203.0.113.50"


def _daily(day: datetime, tz: str = "UTC") -> ReportPeriod:
    start, end = bounds("daily", day.date(), ZoneInfo(tz))
    return ReportPeriod("daily", start, end, tz)


async def test_a_daily_report_counts_what_happened(h: Harness) -> None:
    t = DAY + timedelta(hours=9)
    await post_events(
        h,
        "lms",
        [
            *[event(t, actor_id="ann") for _ in range(4)],
            *[event(t + timedelta(hours=5), actor_id="bob", action="exam.graded")] * 2,
            # 7 failed logins from A (over the threshold of 5), 3 from B (under it)
            *[
                event(t, action="auth.login", outcome="failure", actor_id=f"u{i}", ip=A)
                for i in range(7)
            ],
            *[event(t, action="auth.login", outcome="failure", actor_id="cy", ip=B)] * 3,
            event(t, action="auth.login", actor_id="cy", ip=B),
            # the day before: 2 events; the same weekday a week before: 5
            *[event(t - timedelta(days=1), actor_id="ann")] * 2,
            *[event(t - timedelta(days=7), actor_id="ann")] * 5,
        ],
    )
    await roll_up(h)
    async with h.app.state.sessionmaker() as session:
        report = await build_report(session, _daily(DAY), ReportScope(), failed_login_threshold=5)
    f = report.figures
    assert (f.events, f.logins_ok, f.logins_failed, f.distinct_users) == (17, 1, 10, 10)
    previous_day, last_week = report.comparisons
    assert (previous_day.label, previous_day.figures.events) == ("previous day", 2)
    assert (last_week.label, last_week.figures.events) == ("same weekday last week", 5)
    assert previous_day.delta["events"].abs == 15 and last_week.delta["events"].pct == 240.0
    assert [(u.key, u.count) for u in report.top_users][:2] == [("ann", 4), ("cy", 4)]
    assert len(report.top_users) == 5
    assert [(a.key, a.count) for a in report.top_actions] == [
        ("auth.login", 11),
        ("exam.submitted", 4),
        ("exam.graded", 2),
    ]
    assert report.peak is not None and (report.peak.hour, report.peak.count) == (9, 15)
    assert report.peak.weekday == 1
    assert report.failed_login_ips is not None
    assert [(i.ip, i.failed, i.users) for i in report.failed_login_ips] == [(A, 7, 7)]
    assert "not enabled" in report.alerts
    assert report.revisions == []

    # A report of that day again, told what an earlier run reported for the day before:
    # the late events are a revision.
    earlier = [
        Reported(DAY - timedelta(days=1), DAY, 1),
        Reported(DAY - timedelta(days=7), DAY - timedelta(days=6), 5),
    ]
    async with h.app.state.sessionmaker() as session:
        again = await build_report(session, _daily(DAY), ReportScope(), earlier=earlier)
    assert [(r.reported, r.now) for r in again.revisions] == [(1, 2)]

    mail = render(report, public_url="https://audit.example.com")
    assert mail.subject == "[audit-service] Daily report 2026-11-10 (UTC)"
    assert (
        "https://audit.example.com/console/activity?since=2026-11-10T00%3A00%3A00%2B00%3A00"
        in mail.html
    )
    for part in (mail.html, mail.text):
        assert "17" in part and A in part and B not in part.split("Failed logins per IP")[1]
    assert "No activity" not in mail.text


async def test_a_weekly_report_in_berlin_has_days_movers_and_off_hours(h: Harness) -> None:
    monday = datetime(2026, 10, 19, tzinfo=BERLIN)  # the week before the DST change
    events = [
        event((monday + timedelta(hours=10)).astimezone(UTC), action="exam.opened"),  # Mon 10:00
        event((monday + timedelta(days=2, hours=22)).astimezone(UTC)),  # Wed 22:00: off hours
        event((monday + timedelta(days=5, hours=11)).astimezone(UTC)),  # Sat: off hours
        event((monday + timedelta(days=6, hours=23, minutes=59)).astimezone(UTC)),  # Sun 23:59
        *[event((monday - timedelta(days=3)).astimezone(UTC), action="exam.opened")] * 4,
    ]
    await post_events(h, "lms", events)
    await roll_up(h)
    start, end = bounds("weekly", monday.date(), BERLIN)
    async with h.app.state.sessionmaker() as session:
        report = await build_report(
            session, ReportPeriod("weekly", start, end, "Europe/Berlin"), ReportScope()
        )
    assert report.figures.events == 4
    assert [b.count for b in report.per_day] == [1, 0, 1, 0, 0, 1, 1]
    assert report.per_day[0].label == "Mon 19 Oct"
    assert report.off_hours_share == 0.75
    assert [(m.action, m.change_abs) for m in report.top_movers] == [
        ("exam.opened", -3),
        ("exam.submitted", 3),
    ]
    mail = render(report, public_url=None)
    assert "/console/" not in mail.html and "Console:" not in mail.text  # no AUDIT_PUBLIC_URL
    assert "Events per day" in mail.html and "75.0 %" in mail.text


async def test_a_monthly_report_has_trend_heatmap_and_module_mix(h: Harness) -> None:
    await post_events(
        h,
        "lms",
        [
            *[event(datetime(2026, 11, 3, 8, tzinfo=UTC), module="exams")] * 3,  # Tuesday
            event(datetime(2026, 11, 20, 14, tzinfo=UTC), module="grades"),
            *[event(datetime(2026, 10, 5, 8, tzinfo=UTC), module="exams")] * 2,
            event(datetime(2026, 6, 1, 8, tzinfo=UTC)),
            event(datetime(2026, 5, 31, 8, tzinfo=UTC)),  # 7 months back: outside the trend
        ],
    )
    await roll_up(h)
    start, end = bounds("monthly", datetime(2026, 11, 1).date(), ZoneInfo("UTC"))
    async with h.app.state.sessionmaker() as session:
        report = await build_report(
            session, ReportPeriod("monthly", start, end, "UTC"), ReportScope()
        )
    assert report.figures.events == 4
    (vs_month,) = report.comparisons
    assert (vs_month.label, vs_month.figures.events) == ("previous month", 2)
    assert [(b.label, b.count) for b in report.trend] == [
        ("Jun 2026", 1),
        ("Jul 2026", 0),
        ("Aug 2026", 0),
        ("Sep 2026", 0),
        ("Oct 2026", 2),
        ("Nov 2026", 4),
    ]
    assert len(report.heatmap) == 7 and all(len(row) == 24 for row in report.heatmap)
    assert report.heatmap[1][8] == 3 and report.heatmap[4][14] == 1
    assert [(m.key, m.share) for m in report.module_mix] == [("exams", 0.75), ("grades", 0.25)]
    mail = render(report, public_url=None)
    assert mail.subject == "[audit-service] Monthly report November 2026 (UTC)"
    assert "Module mix" in mail.html and "Module mix" in mail.text


async def test_scope_empty_periods_and_escaping(h: Harness) -> None:
    hostile = '<script>alert("x")</script>'
    await post_events(
        h,
        "lms",
        [
            event(DAY + timedelta(hours=1), tenant_id="t1", actor_id=hostile),
            event(
                DAY + timedelta(hours=1), tenant_id="t1", actor_id='"><img src=x onerror=alert(1)>'
            ),
            *[
                event(
                    DAY + timedelta(hours=1), tenant_id="t2", actor_id="t2-user", action="t2.secret"
                )
            ]
            * 5,
        ],
    )
    await roll_up(h)
    async with h.app.state.sessionmaker() as session:
        scoped = await build_report(session, _daily(DAY), ReportScope(tenant_id="t1"))
        empty = await build_report(session, _daily(DAY + timedelta(days=30)), ReportScope())
        by_module = await build_report(session, _daily(DAY), ReportScope(module="exam"))
    assert scoped.figures.events == 2 and scoped.scope == {"tenant_id": "t1"}
    mail = render(scoped, public_url="https://audit.example.com")
    assert mail.subject.endswith("(UTC) - tenant_id t1")
    assert "&lt;script&gt;" in mail.html and "<script" not in mail.html
    assert "<img" not in mail.html and "&#34;&gt;&lt;img" in mail.html
    assert hostile in mail.text  # plain text is text
    tags = re.findall(r"<[^>]+>", mail.html.lower())
    for forbidden in ("<svg", "<img", "<link", "<style", "<script", "src=", "url(", "data:"):
        assert not [t for t in tags if forbidden in t], forbidden
    assert "t2.secret" not in mail.html + mail.text and "t2-user" not in mail.html + mail.text
    assert "tenant_id=t1" in mail.html

    assert empty.figures.events == 0 and empty.top_users == [] and empty.peak is None
    quiet = render(empty, public_url=None)
    assert (
        "No activity in this period." in quiet.html and "No activity in this period." in quiet.text
    )
    # IP rollups have no module: a module-scoped report says so instead of guessing.
    assert by_module.failed_login_ips is None
    assert "Not available" in render(by_module, public_url=None).text
