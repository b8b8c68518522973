"""Scheduled reports delivered to a real SMTP server (aiosmtpd on loopback), both dialects:
once per period however many schedulers race, missed periods caught up, a refusing server
retried until it accepts, a failure recorded, no SMTP configured, send-now, tenant scope,
and the figures of local days in UTC, Europe/Berlin (a 25-hour day) and Asia/Kolkata."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from audit_service.audit_log.sequencer import no_fence
from audit_service.reports import service
from audit_service.reports.models import ReportRun, ReportSchedule
from tests.conftest import Harness, make_settings, start_harness
from tests.reports.smtp import PASSWORD, SmtpServer, smtp  # noqa: F401 - the fixture
from tests.stats.helpers import event, post_events, roll_up

BASE = "/admin/reports/schedules"
# The scheduler is run as of this instant (and the schedules made effective before it),
# so which periods are due does not depend on when the test runs.
NOW = datetime(2026, 10, 28, 9, 0, tzinfo=UTC)


async def _harness(db_url: str, **overrides: Any) -> AsyncIterator[Harness]:
    settings = make_settings(
        db_url, report_retry_base=0.05, public_url="https://audit.example.com", **overrides
    )
    async for h in start_harness(settings):
        yield h


@pytest.fixture
async def mailer(db_url: str, smtp: SmtpServer) -> AsyncIterator[Harness]:  # noqa: F811
    async for h in _harness(db_url, smtp_url=smtp.url):
        yield h


async def _create(h: Harness, **body: Any) -> dict[str, Any]:
    payload = {"name": "Daily", "kind": "daily", "tz": "UTC", "recipients": ["ops@example.com"]}
    r = await h.client.post(BASE, headers=await h.auth(), json={**payload, **body})
    assert r.status_code == 201, r.text
    schedule: dict[str, Any] = r.json()
    return schedule


async def _effective(h: Harness, schedule_id: int, at: datetime) -> None:
    async with h.app.state.sessionmaker() as session:
        await session.execute(
            update(ReportSchedule).where(ReportSchedule.id == schedule_id).values(effective_from=at)
        )
        await session.commit()


async def _schedule_round(h: Harness, now: datetime = NOW) -> int:
    """One round of the `reports.scheduler` job as of `now`."""
    async with h.app.state.sessionmaker() as session:
        await service.plan_runs(session, now)
        await session.commit()
    return await service.send_due(h.app.state.sessionmaker, h.app.state.settings, no_fence)


async def _runs(h: Harness, schedule_id: int) -> list[ReportRun]:
    async with h.app.state.sessionmaker() as session:
        stmt = select(ReportRun).where(ReportRun.schedule_id == schedule_id)
        return list((await session.scalars(stmt.order_by(ReportRun.period_start))).all())


async def test_due_periods_are_caught_up_and_sent_once(
    mailer: Harness,
    smtp: SmtpServer,  # noqa: F811
) -> None:
    h = mailer
    day = datetime(2026, 10, 26, tzinfo=UTC)
    await post_events(h, "lms", [event(day + timedelta(hours=h)) for h in range(5)])
    await roll_up(h)
    s = await _create(h)
    # Effective since 3 days before NOW's 07:00 send: the reports of 24, 25, 26 and 27 Oct
    # are owed (sent 25 to 28 Oct at 07:00 UTC).
    await _effective(h, s["id"], NOW - timedelta(days=3, hours=3))
    assert await _schedule_round(h) == 4
    runs = await _runs(h, s["id"])
    assert [r.period_start.day for r in runs] == [24, 25, 26, 27]
    assert [r.status for r in runs] == ["sent"] * 4
    assert [r.events for r in runs] == [0, 0, 5, 0]
    assert all(r.watermark is not None and r.watermark >= 4 for r in runs)
    assert len(smtp.received) == 4
    subjects = [m.message["Subject"] for m in smtp.received]
    assert all("2026-10-2" in subject for subject in subjects), subjects
    mail = smtp.received[2]
    assert mail.recipients == ["ops@example.com"]
    assert mail.message["Message-ID"].startswith("<report-run-")
    assert mail.message.get_content_type() == "multipart/alternative"
    assert "https://audit.example.com/console/activity?" in mail.part("html")
    # Another round sends nothing again; nor does a later one before the next send time.
    assert await _schedule_round(h) == 0
    assert await _schedule_round(h, NOW + timedelta(hours=12)) == 0
    assert len(smtp.received) == 4
    sent = await h.events(action="report.sent")
    assert len(sent) == 4 and {e.module for e in sent} == {"reports"}
    assert sent[2].event_metadata["events"] == 5
    assert sent[2].event_metadata["recipients"] == ["ops@example.com"]
    assert sent[2].event_metadata["period_start"] == "2026-10-26T00:00:00+00:00"


async def test_racing_schedulers_send_each_period_once(
    mailer: Harness,
    smtp: SmtpServer,  # noqa: F811
) -> None:
    h = mailer
    s = await _create(h)
    await _effective(h, s["id"], NOW - timedelta(days=2, hours=3))
    results = await asyncio.gather(*(_schedule_round(h) for _ in range(4)))
    assert sum(results) == 3
    # One message per period: a run sent twice would repeat its Message-ID.
    assert len({m.message["Message-ID"] for m in smtp.received}) == len(smtp.received) == 3
    assert len(await h.events(action="report.sent")) == 3


async def test_a_refusing_server_is_retried_until_it_accepts(
    mailer: Harness,
    smtp: SmtpServer,  # noqa: F811
) -> None:
    h = mailer
    s = await _create(h)
    await _effective(h, s["id"], NOW - timedelta(hours=3))  # owes 27 Oct only
    smtp.handler.refuse_next = 2
    assert await _schedule_round(h) == 0
    (run,) = await _runs(h, s["id"])
    assert (run.status, run.attempts) == ("pending", 1)
    assert run.error is not None and "554" in run.error
    for _ in range(40):
        await asyncio.sleep(0.05)
        if await _schedule_round(h):
            break
    (run,) = await _runs(h, s["id"])
    assert (run.status, run.attempts, run.error) == ("sent", 3, None)
    assert len(smtp.received) == 1
    (sent,) = await h.events(action="report.sent")
    assert sent.event_metadata["attempts"] == 3
    assert await h.events(action="report.failed") == []


async def test_a_server_that_keeps_refusing_is_a_recorded_failure(
    db_url: str,
    smtp: SmtpServer,  # noqa: F811
) -> None:
    async for h in _harness(db_url, smtp_url=smtp.url, report_max_attempts=2):
        s = await _create(h)
        await _effective(h, s["id"], NOW - timedelta(hours=3))
        smtp.handler.refuse_next = 100
        for _ in range(40):
            await _schedule_round(h)
            if (await _runs(h, s["id"]))[0].status == "failed":
                break
            await asyncio.sleep(0.05)
        (run,) = await _runs(h, s["id"])
        assert (run.status, run.attempts) == ("failed", 2)
        (failed,) = await h.events(action="report.failed")
        assert failed.outcome == "failure" and "554 5.7.1" in failed.event_metadata["error"]
        assert failed.event_metadata["period_start"] == "2026-10-27T00:00:00+00:00"
        assert smtp.received == []
        # Failed is final: later rounds leave it alone.
        assert await _schedule_round(h) == 0


async def test_without_smtp_schedules_work_and_sending_says_why(db_url: str) -> None:
    async for h in _harness(db_url):
        s = await _create(h)
        preview = await h.client.post(
            "/admin/reports/preview", headers=await h.auth(), json={"schedule_id": s["id"]}
        )
        assert preview.status_code == 200, preview.text
        assert preview.json()["subject"] and preview.json()["text"]
        r = await h.client.post(f"{BASE}/{s['id']}/send-now", headers=await h.auth())
        assert r.status_code == 503
        assert r.headers["content-type"] == "application/problem+json"
        assert "No SMTP server is configured" in r.json()["detail"]
        event = await h.last_event()
        assert (event.action, event.outcome) == ("report.failed", "failure")
        # The scheduler fails the period at once (retrying cannot help) and records it.
        await _effective(h, s["id"], NOW - timedelta(hours=3))
        assert await _schedule_round(h) == 0
        (run,) = await _runs(h, s["id"])
        assert (run.status, run.attempts) == ("failed", 1)
        (failed,) = [e for e in await h.events(action="report.failed") if e.actor_type == "system"]
        assert "AUDIT_SMTP_URL" in failed.event_metadata["error"]


async def test_send_now_with_credentials_records_no_secret(
    db_url: str,
    smtp: SmtpServer,  # noqa: F811
) -> None:
    async for h in _harness(db_url, smtp_url=smtp.auth_url):
        s = await _create(h, recipients=["a@example.com", "b@example.org"])
        r = await h.client.post(f"{BASE}/{s['id']}/send-now", headers=await h.auth())
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["recipients"] == ["a@example.com", "b@example.org"] and body["refused"] == []
        assert smtp.logins == ["reports"]
        (mail,) = smtp.received
        assert mail.recipients == ["a@example.com", "b@example.org"]
        assert body["size"] > 0
        event = await h.last_event()
        assert (event.action, event.outcome) == ("report.sent", "success")
        assert event.event_metadata["trigger"] == "manual"
        everything = json.dumps([e.event_metadata for e in await h.events()], default=str)
        assert PASSWORD not in everything
        # Manual sends leave the schedule's own periods alone.
        assert await _runs(h, s["id"]) == []


async def test_send_now_to_an_unreachable_server_is_502(db_url: str) -> None:
    async for h in _harness(db_url, smtp_url="smtp://127.0.0.1:9", smtp_timeout=2):
        s = await _create(h)
        r = await h.client.post(f"{BASE}/{s['id']}/send-now", headers=await h.auth())
        assert r.status_code == 502, r.text
        assert "cannot reach the SMTP server" in r.json()["detail"]
        assert (await h.last_event()).action == "report.failed"


async def test_a_tenant_scoped_report_shows_only_its_tenant(
    mailer: Harness,
    smtp: SmtpServer,  # noqa: F811
) -> None:
    h = mailer
    day = datetime(2026, 10, 27, 10, tzinfo=UTC)
    await post_events(
        h,
        "lms",
        [event(day, tenant_id="t1", actor_id="alice-of-t1", action="exam.opened")] * 3
        + [event(day, tenant_id="t2", actor_id="bob-of-t2", action="grade.leaked")] * 7,
    )
    await roll_up(h)
    s = await _create(h, tenant_id="t1")
    await _effective(h, s["id"], NOW - timedelta(hours=3))
    assert await _schedule_round(h) == 1
    (run,) = await _runs(h, s["id"])
    assert run.events == 3
    (mail,) = smtp.received
    for part in (mail.part("html"), mail.part("plain"), str(run.summary)):
        assert "alice-of-t1" in part and "exam.opened" in part
        assert "bob-of-t2" not in part and "grade.leaked" not in part and "t2" not in part
    assert "tenant_id=t1" in mail.part("html")


@pytest.mark.parametrize(
    ("tz", "day", "inside", "outside"),
    [
        (
            "UTC",
            "2026-10-26",
            ["2026-10-26T00:00:00Z", "2026-10-26T23:59:00Z"],
            ["2026-10-25T23:59:00Z", "2026-10-27T00:00:00Z"],
        ),
        # 25 October in Berlin is 25 hours long: 22:00 UTC on the 24th to 23:00 UTC on the 25th.
        (
            "Europe/Berlin",
            "2026-10-25",
            ["2026-10-24T22:00:00Z", "2026-10-25T00:30:00Z", "2026-10-25T22:59:00Z"],
            ["2026-10-24T21:59:00Z", "2026-10-25T23:00:00Z"],
        ),
        # Kolkata is UTC+05:30: its 26 October is 18:30 UTC on the 25th to 18:30 UTC on the 26th.
        (
            "Asia/Kolkata",
            "2026-10-26",
            ["2026-10-25T18:30:00Z", "2026-10-26T18:29:00Z"],
            ["2026-10-25T18:29:00Z", "2026-10-26T18:30:00Z"],
        ),
    ],
)
async def test_figures_of_local_days(
    mailer: Harness,
    smtp: SmtpServer,  # noqa: F811
    tz: str,
    day: str,
    inside: list[str],
    outside: list[str],
) -> None:
    h = mailer
    stamps = [datetime.fromisoformat(s) for s in inside + outside]
    await post_events(
        h,
        "lms",
        [event(t, action="auth.login", outcome="failure", ip="203.0.113.9") for t in stamps],
    )
    await roll_up(h)
    s = await _create(h, tz=tz)
    r = await h.client.post(
        "/admin/reports/preview", headers=await h.auth(), json={"schedule_id": s["id"], "day": day}
    )
    assert r.status_code == 200, r.text
    preview = r.json()
    assert preview["period"]["start"].startswith(day + "T00:00:00")
    assert preview["report"]["figures"]["events"] == len(inside)
    assert day in preview["subject"]
    # The same period through the scheduler and SMTP.
    start = datetime.fromisoformat(preview["period"]["start"])
    end = datetime.fromisoformat(preview["period"]["end"])
    await _effective(h, s["id"], end)
    assert await _schedule_round(h, end + timedelta(days=1)) >= 1
    run = next(r for r in await _runs(h, s["id"]) if r.period_start == start)
    assert run.events == len(inside)
    mail = next(m for m in smtp.received if day in m.message["Subject"])
    assert str(len(inside)) in mail.part("plain")


async def test_an_empty_period_is_still_sent(mailer: Harness, smtp: SmtpServer) -> None:  # noqa: F811
    h = mailer
    s = await _create(h, kind="weekly")
    await _effective(h, s["id"], datetime(2026, 10, 26, 7, tzinfo=UTC))  # before Monday 08:00
    assert await _schedule_round(h) == 1
    (run,) = await _runs(h, s["id"])
    assert (run.status, run.events) == ("sent", 0)
    assert run.period_start == datetime(2026, 10, 19, tzinfo=UTC)
    (mail,) = smtp.received
    assert mail.part("plain").strip()


async def test_disabled_schedules_send_nothing_and_resume_without_a_burst(
    mailer: Harness,
    smtp: SmtpServer,  # noqa: F811
) -> None:
    h = mailer
    admin = await h.auth()
    s = await _create(h, enabled=False)
    await _effective(h, s["id"], NOW - timedelta(days=5))
    assert s["next_period"] is None
    assert await _schedule_round(h) == 0 and smtp.received == []
    r = await h.client.patch(f"{BASE}/{s['id']}", headers=admin, json={"enabled": True})
    assert r.status_code == 200 and r.json()["next_period"] is not None
    # Effective again from now (real time, after NOW): the five missed days are not owed.
    assert await _schedule_round(h) == 0
    assert await _runs(h, s["id"]) == []
