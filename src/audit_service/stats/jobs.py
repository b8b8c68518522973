"""The `stats.rollup` job: keeps the rollup tables in step with the log (see rollup.py)."""

from __future__ import annotations

from dataclasses import dataclass

from audit_service.core.config import Settings
from audit_service.core.jobs import Job, JobContext
from audit_service.stats import rollup

ROLLUP_JOB = "stats.rollup"


@dataclass(frozen=True)
class RollupJob:
    interval: float
    batch: int

    async def __call__(self, ctx: JobContext) -> None:
        while not ctx.stop.is_set():
            async with ctx.sessionmaker() as session:
                r = await rollup.run_round(session, ctx.fence, batch=self.batch)
            ctx.report_lag(r.lag_seconds)
            if not r.more and not await ctx.sleep(self.interval):
                return


def stats_jobs(settings: Settings) -> list[Job]:
    if not settings.stats_rollup_enabled:
        return []
    job = RollupJob(settings.stats_rollup_interval, settings.stats_rollup_batch)
    # interval 0: the job loops by itself while it holds its lease (as the log job does);
    # after an error the runtime's backoff restarts it.
    return [Job(ROLLUP_JOB, 0.0, job, lease_seconds=15.0, backoff_max=30.0)]
