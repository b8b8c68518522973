"""The `detections.evaluate` job: keeps the alerts in step with the log (see service.py)."""

from __future__ import annotations

from dataclasses import dataclass

from audit_service.core.config import Settings
from audit_service.core.jobs import Job, JobContext
from audit_service.detections import service

EVALUATE_JOB = "detections.evaluate"


@dataclass(frozen=True)
class EvaluateJob:
    config: service.Config
    interval: float
    batch: int

    async def __call__(self, ctx: JobContext) -> None:
        while not ctx.stop.is_set():
            async with ctx.sessionmaker() as session:
                r = await service.evaluate_round(session, self.config, ctx.fence, batch=self.batch)
            ctx.report_lag(r.lag_seconds)
            if not r.more and not await ctx.sleep(self.interval):
                return


def detection_jobs(settings: Settings) -> list[Job]:
    if not settings.detections_enabled:
        return []
    job = EvaluateJob(
        service.Config.of(settings), settings.detections_poll_interval, settings.detections_batch
    )
    # Loops by itself while it holds its lease (as stats.rollup does); after an error the
    # runtime's backoff restarts it.
    return [Job(EVALUATE_JOB, 0.0, job, lease_seconds=15.0, backoff_max=30.0)]
