"""Background jobs of the auth domain."""

from __future__ import annotations

from audit_service.audit_log.jobs import record_job_event
from audit_service.auth import repository as repo
from audit_service.core.jobs import Job, JobContext
from audit_service.kit.models import utcnow

PRUNE_REVOKED_TOKENS = "auth.prune-revoked-tokens"


async def prune_revoked_tokens(ctx: JobContext) -> None:
    """Delete revocations of tokens that have expired anyway (logout only prunes when someone
    logs out, so a quiet service would otherwise keep them forever). Idempotent."""
    async with ctx.sessionmaker() as session:
        pruned = await repo.purge_expired_revocations(session, utcnow())
        if pruned:
            await record_job_event(
                session,
                ctx.name,
                "auth.revocations_pruned",
                "auth",
                f"Pruned {pruned} revocation(s) of expired tokens",
                count=pruned,
            )
        await ctx.fence(session)
        await session.commit()


def housekeeping_jobs(interval: float) -> list[Job]:
    return [Job(PRUNE_REVOKED_TOKENS, interval, prune_revoked_tokens)]
