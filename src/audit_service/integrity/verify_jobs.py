"""The `integrity.verify` job: carries out the verification runs asked for at
POST /admin/integrity/verify, and one of its own every `verify_interval` (daily).

One leased job, polled every `verify_poll_interval`: the oldest unfinished run is resumed
(a process that stopped mid-run left its finished tasks behind), else a scheduled run is
queued when due. The verification itself runs in `verify_jobs` spawned processes, so the
server's event loop only relays progress. Its result is an audit event
(`integrity.verified`, `integrity.tampering_detected` or `integrity.verify_failed`).
"""

from __future__ import annotations

from dataclasses import dataclass

from audit_service.core.config import Settings
from audit_service.core.jobs import Job, JobContext
from audit_service.integrity import verify_repository as repo
from audit_service.integrity import verify_service as service
from audit_service.integrity.jobs import log_verifiers

VERIFY_JOB = "integrity.verify"


@dataclass(eq=False)
class VerifyJob:
    settings: Settings

    async def __call__(self, ctx: JobContext) -> None:
        async with ctx.sessionmaker() as session:
            run = await repo.unfinished_run(session)
            if run is None:
                run = await service.queue_scheduled(
                    session, ctx.name, self.settings.verify_interval
                )
                if run is None:
                    return
                await ctx.fence(session)
                await session.commit()
            run_id = run.id
        await service.execute_run(
            run_id,
            engine=ctx.engine,
            sessionmaker=ctx.sessionmaker,
            database_url=self.settings.database_url,
            verifiers=log_verifiers(self.settings),
            jobs=self.settings.verify_jobs,
            job_name=ctx.name,
            fence=ctx.fence,
        )


def verify_jobs(settings: Settings) -> list[Job]:
    return [Job(VERIFY_JOB, settings.verify_poll_interval, VerifyJob(settings), backoff_max=300.0)]
