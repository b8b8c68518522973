"""The leased `retention.run` job (daily by default) and `audit-service retention run`: the
retention steps, in order, once.

`STEPS` is the list: the archive step here; the forgetting half (purge, anonymise) adds its
steps after it at merge, each a `Step`: a name and `async run(ctx) -> StepReport`. A step
commits its own work (fenced with `ctx.fence` when the job runs it) and returns what it did,
or in a dry run what it would do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from audit_service.audit_log.context import SYSTEM
from audit_service.audit_log.sink import SessionEventSink
from audit_service.core.config import Settings
from audit_service.core.jobs import Job, JobContext
from audit_service.integrity.jobs import log_signer
from audit_service.kit.models import utcnow
from audit_service.retention.archive import AfterWrite, archive_step, no_fence
from audit_service.retention.forget_steps import AnonymizeStep, PurgeStep
from audit_service.retention.upload import upload_step

RUN_JOB = "retention.run"
MAX_LISTED = 100  # segments named in one retention.archived event


@dataclass(frozen=True, slots=True)
class StepContext:
    sessionmaker: async_sessionmaker[AsyncSession]
    settings: Settings
    now: datetime
    dry_run: bool = False
    fence: Callable[[AsyncSession], Awaitable[None]] = no_fence
    # Test hook of the archive step (between a segment's files and its row).
    after_write: AfterWrite | None = None


@dataclass
class StepReport:
    name: str
    lines: list[str] = field(default_factory=list)  # what it did, for people
    facts: dict[str, Any] = field(default_factory=dict)  # for the event and --json


class Step(Protocol):
    @property
    def name(self) -> str: ...

    async def run(self, ctx: StepContext) -> StepReport: ...


@dataclass(frozen=True)
class ArchiveStep:
    name: str = "archive"

    async def run(self, ctx: StepContext) -> StepReport:
        result = await archive_step(
            ctx.sessionmaker,
            ctx.settings.archive_dir,
            log_signer(ctx.settings),
            now=ctx.now,
            dry_run=ctx.dry_run,
            fence=ctx.fence,
            after_write=ctx.after_write,
        )
        verb = "would archive" if ctx.dry_run else "archived"
        report = StepReport(self.name)
        for s in result.written:
            report.lines.append(
                f"{verb} {s.count} event(s) of '{s.policy}' recorded on {s.day} "
                f"(positions {s.first_position}-{s.last_position}) -> {s.path}"
            )
        report.lines += [f"waiting: {w}" for w in result.waiting]
        if not result.written:
            report.lines.append(f"nothing to archive (checkpoint size {result.checkpoint_size})")
        # Then the copies in the bucket (none configured: nothing), never blocking the above.
        uploads = await upload_step(
            ctx.sessionmaker, ctx.settings, dry_run=ctx.dry_run, fence=ctx.fence
        )
        if uploads.enabled:
            if ctx.dry_run:
                report.lines.append(
                    f"would upload {uploads.pending} segment(s) to bucket {uploads.bucket}"
                )
            else:
                report.lines.append(
                    f"uploaded {len(uploads.uploaded)} segment(s) to bucket {uploads.bucket}"
                    + (
                        f"; {uploads.pending} not there yet: {uploads.error}"
                        if uploads.error
                        else ""
                    )
                )
        report.facts = {
            "segments": len(result.written),
            "events": result.events,
            "checkpoint_size": result.checkpoint_size,
            "written": [s.public() for s in result.written[:MAX_LISTED]],
            "waiting": result.waiting[:MAX_LISTED],
            "s3": uploads.to_json(),
        }
        if (result.written or uploads.uploaded or uploads.failed) and not ctx.dry_run:
            description = f"Archived {result.events} event(s) in {len(result.written)} segment(s)"
            if uploads.enabled:
                description += f"; {len(uploads.uploaded)} segment(s) uploaded to the bucket"
                if uploads.failed:
                    description += f", upload failed ({uploads.pending} waiting)"
            async with ctx.sessionmaker() as session:
                sink = SessionEventSink(session, SYSTEM, "retention.archived", "retention")
                sink.describe(
                    description=description,
                    target_type="retention_archive",
                    **report.facts,
                )
                await sink.write()
                await ctx.fence(session)
                await session.commit()
        return report


# Archive, then the forgetting half (retention/forget_steps.py): purge, anonymise.
STEPS: list[Step] = [ArchiveStep(), PurgeStep(), AnonymizeStep()]


async def run_steps(ctx: StepContext, steps: Sequence[Step] | None = None) -> list[StepReport]:
    """Run the steps in order; a failing step stops the run (the next run resumes)."""
    return [await step.run(ctx) for step in (STEPS if steps is None else steps)]


@dataclass(eq=False)
class RetentionJob:
    settings: Settings

    async def __call__(self, ctx: JobContext) -> None:
        await run_steps(StepContext(ctx.sessionmaker, self.settings, utcnow(), fence=ctx.fence))


def retention_jobs(settings: Settings) -> list[Job]:
    return [Job(RUN_JOB, settings.retention_interval, RetentionJob(settings), backoff_max=3600.0)]
