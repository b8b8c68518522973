"""The `forwarding.deliver` job: every `AUDIT_FORWARD_POLL_INTERVAL`, one round over the due
destinations and replays (each with its own lease inside; see delivery.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from audit_service.core.config import Settings
from audit_service.core.jobs import Job, JobContext
from audit_service.forwarding.delivery import Deliverer

DELIVER_JOB = "forwarding.deliver"


@dataclass(eq=False)
class DeliverJob:
    settings: Settings
    _deliverer: Deliverer | None = field(default=None, init=False)

    async def __call__(self, ctx: JobContext) -> None:
        if self._deliverer is None or self._deliverer.sessionmaker is not ctx.sessionmaker:
            self._deliverer = Deliverer(ctx.sessionmaker, self.settings, holder=ctx.holder)
        await self._deliverer.run_once()


def forwarding_jobs(settings: Settings) -> list[Job]:
    return [
        Job(DELIVER_JOB, settings.forward_poll_interval, DeliverJob(settings), backoff_max=30.0)
    ]
