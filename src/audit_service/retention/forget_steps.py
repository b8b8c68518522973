"""The forgetting half's steps of the `retention.run` job (retention/jobs.py `STEPS`): after
archive, purge (tombstone, then delete through the restricted path), then anonymise (IPs,
user agents, day keys). Each commits its own work and records its own events
(`retention.purged` per tombstone, `retention.anonymized` per day)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from audit_service.retention.anonymize import run_anonymize
from audit_service.retention.purge import run_purge

if TYPE_CHECKING:  # retention/jobs.py imports this module for STEPS
    from audit_service.retention.jobs import StepContext, StepReport


@dataclass(frozen=True)
class PurgeStep:
    name: str = "purge"

    async def run(self, ctx: StepContext) -> StepReport:
        from audit_service.retention.jobs import StepReport

        result = await run_purge(
            ctx.sessionmaker, ctx.settings, ctx.now, fence=ctx.fence, dry_run=ctx.dry_run
        )
        report = StepReport(self.name, facts=result.to_json())
        if ctx.dry_run:
            report.lines.append(f"would delete {result.would_delete} archived event(s)")
        else:
            report.lines.append(
                f"deleted {result.deleted} event(s) under {len(result.tombstones)} new "
                f"tombstone(s), {len(result.resumed)} resumed"
            )
        if result.blocked_segments:
            report.lines.append(
                f"{len(result.blocked_segments)} segment(s) kept whole: {result.held} of "
                "their events are under a legal hold"
            )
        if result.pending:
            report.lines.append(f"tombstones not sequenced yet: {result.pending}")
        if result.waiting_upload:
            report.lines.append(
                f"{result.waiting_upload} due segment(s) kept until their upload to the "
                "bucket is confirmed"
            )
        return report


@dataclass(frozen=True)
class AnonymizeStep:
    name: str = "anonymize"

    async def run(self, ctx: StepContext) -> StepReport:
        from audit_service.retention.jobs import StepReport

        result = await run_anonymize(
            ctx.sessionmaker, ctx.settings, ctx.now, fence=ctx.fence, dry_run=ctx.dry_run
        )
        verb = "would anonymise" if ctx.dry_run else "anonymised"
        report = StepReport(self.name, facts=result.to_json())
        report.lines.append(f"{verb} {len(result.days)} day(s), {result.events} event(s)")
        if result.held_days:
            report.lines.append(f"days kept (legal hold): {', '.join(result.held_days)}")
        if result.unsequenced_days:
            report.lines.append(f"days not sequenced yet: {', '.join(result.unsequenced_days)}")
        return report
