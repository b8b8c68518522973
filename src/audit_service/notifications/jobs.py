"""The `notifications.deliver` job: sends the due notification groups (see delivery.py)."""

from __future__ import annotations

from dataclasses import dataclass

from audit_service.core.config import Settings
from audit_service.core.jobs import Job, JobContext
from audit_service.notifications.delivery import Deliverer

DELIVER_JOB = "notifications.deliver"


@dataclass(eq=False)
class DeliverJob:
    settings: Settings

    async def __call__(self, ctx: JobContext) -> None:
        deliverer = Deliverer(ctx.sessionmaker, self.settings)
        while not ctx.stop.is_set():
            await deliverer.run_once()
            if not await ctx.sleep(self.settings.alert_poll_interval):
                return


def notification_jobs(settings: Settings) -> list[Job]:
    # Loops by itself while it holds its lease; after an error the runtime's backoff
    # restarts it. Claims on each group make a second deliverer (another job) harmless.
    return [Job(DELIVER_JOB, 0.0, DeliverJob(settings), lease_seconds=15.0, backoff_max=30.0)]
