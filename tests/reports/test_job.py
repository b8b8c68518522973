"""The `reports.scheduler` job in the running service (in-process jobs): a schedule that
owes a period gets its report by e-mail without anyone asking."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from audit_service.kit.models import utcnow
from audit_service.reports.models import ReportSchedule
from tests.conftest import make_settings, start_harness
from tests.reports.smtp import SmtpServer


async def test_the_job_sends_a_due_report(pg_only_url: str, smtp: SmtpServer) -> None:
    # A clean database, not earlier tests' leftovers as the jobs' backlog.
    settings = make_settings(
        pg_only_url, run_jobs=True, smtp_url=smtp.url, report_poll_interval=0.2
    )
    started = utcnow()
    async for h in start_harness(settings):
        admin = await h.auth()
        body = {
            "name": "Midnight",
            "kind": "daily",
            "send_at": "00:00",
            "recipients": ["job-test@example.com"],
        }
        r = await h.client.post("/admin/reports/schedules", headers=admin, json=body)
        assert r.status_code == 201, r.text
        # Effective a day ago: exactly one period (yesterday's, sent at today's 00:00) is owed.
        async with h.app.state.sessionmaker() as session:
            await session.execute(
                update(ReportSchedule)
                .where(ReportSchedule.id == r.json()["id"])
                .values(effective_from=utcnow() - timedelta(days=1))
            )
            await session.commit()

        def mine() -> list[Any]:
            return [m for m in smtp.received if m.recipients == ["job-test@example.com"]]

        for _ in range(150):
            if mine():
                break
            await asyncio.sleep(0.1)
        assert len(mine()) == 1
        yesterday = (utcnow() - timedelta(days=1)).date().isoformat()
        assert yesterday in mine()[0].message["Subject"]
        jobs = (await h.client.get("/admin/jobs", headers=admin)).json()
        names = {j["name"] for j in jobs["items"]} if isinstance(jobs, dict) else set()
        assert "reports.scheduler" in names, jobs

        sid = str(r.json()["id"])
        for _ in range(50):
            sent = [e for e in await h.events(action="report.sent", target_id=sid)]
            if sent:
                break
            await asyncio.sleep(0.1)
        (sent,) = [e for e in sent if e.recorded_at >= started]
        assert sent.actor_type == "system"
        await asyncio.sleep(0.5)
        assert len(mine()) == 1  # later rounds owe nothing more
