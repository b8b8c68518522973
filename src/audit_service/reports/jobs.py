"""The `reports.scheduler` job: adds the periods schedules owe, then sends the due ones."""

from __future__ import annotations

from dataclasses import dataclass

from audit_service.core.config import Settings
from audit_service.core.jobs import Job, JobContext
from audit_service.kit.models import utcnow
from audit_service.reports import service

SCHEDULER_JOB = "reports.scheduler"


@dataclass(eq=False)
class SchedulerJob:
    settings: Settings

    async def __call__(self, ctx: JobContext) -> None:
        async with ctx.sessionmaker() as session:
            await service.plan_runs(session, utcnow())
            await ctx.fence(session)
            await session.commit()
        await service.send_due(ctx.sessionmaker, self.settings, ctx.fence)


def report_jobs(settings: Settings) -> list[Job]:
    return [
        Job(SCHEDULER_JOB, settings.report_poll_interval, SchedulerJob(settings), backoff_max=300.0)
    ]
