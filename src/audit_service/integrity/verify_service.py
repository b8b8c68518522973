"""Verification runs: asking for one (POST /admin/integrity/verify), reading one, and
carrying one out (the `integrity.verify` job, integrity/verify_jobs.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Literal

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from audit_service.audit_log.context import Actor, RequestAudit
from audit_service.audit_log.jobs import record_job_event
from audit_service.core.errors import NotFound
from audit_service.integrity import bundle, note, verify
from audit_service.integrity import verify_repository as repo
from audit_service.integrity.models import VERIFY_ERROR_LENGTH, IntegrityVerifyRun
from audit_service.integrity.verify_schemas import VerifyProblem, VerifyRunOut
from audit_service.kit.models import utcnow

logger = logging.getLogger(__name__)

# Problems kept with a run (GET shows them) and in its audit event's metadata.
RUN_PROBLEMS = 100
EVENT_PROBLEMS = 20
MAX_ATTEMPTS = 3

Fence = Callable[[AsyncSession], Awaitable[None]]


def run_out(run: IntegrityVerifyRun) -> VerifyRunOut:
    report: dict[str, Any] = run.report or {}
    size = run.tree_size or 0
    progress = 1.0 if run.status == repo.FINISHED else (run.positions_done / size if size else 0.0)
    return VerifyRunOut(
        id=run.id,
        status=run.status,
        trigger=run.trigger,
        requested_by=run.requested_by,
        requested_at=run.requested_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        updated_at=run.updated_at,
        tree_size=run.tree_size,
        tasks_total=run.tasks_total,
        tasks_done=run.tasks_done,
        positions_done=run.positions_done,
        progress=min(1.0, progress),
        outcome=run.outcome,
        reason=report.get("reason"),
        problem_count=run.problem_count,
        problem_counts=report.get("problem_counts", {}),
        problems=[VerifyProblem(**p) for p in report.get("problems", [])],
        error=run.error,
    )


async def request_run(
    session: AsyncSession, actor: Actor, audit: RequestAudit
) -> tuple[VerifyRunOut, bool]:
    """Queue a verification unless one is queued or running already (then that one is the
    answer: asking twice starts one run). (run, created)."""
    await repo.lock_requests(session)
    run = await repo.unfinished_run(session)
    created = run is None
    if run is None:
        run = await repo.create_run(session, "api", actor.name or actor.id or actor.type)
    audit.describe(
        description=(
            f"Asked for verification run {run.id} of the log"
            if created
            else f"Asked for a verification of the log: run {run.id} is already {run.status}"
        ),
        target_type="verify_run",
        target_id=str(run.id),
        created=created,
    )
    return run_out(run), created


async def read_run(session: AsyncSession, run_id: int, audit: RequestAudit) -> VerifyRunOut:
    audit.describe(target_type="verify_run", target_id=str(run_id))
    run = await repo.get_run(session, run_id)
    if run is None:
        raise NotFound(f"No verification run {run_id}")
    audit.describe(description=f"Viewed verification run {run_id} ({run.status})")
    return run_out(run)


async def latest_runs(session: AsyncSession, audit: RequestAudit, limit: int) -> list[VerifyRunOut]:
    """The newest verification runs (the newest first), as read_run shows each."""
    runs = await repo.latest_runs(session, limit)
    audit.describe(target_type="verify_run", runs=[r.id for r in runs])
    return [run_out(r) for r in runs]


@dataclass(frozen=True, slots=True)
class BundleCheck:
    """What `audit-service verify-bundle` would say of an uploaded bundle."""

    status: Literal["intact", "tampered", "unverifiable"]
    problems: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


async def check_bundle(
    audit: RequestAudit, data: IO[bytes], verifiers: Sequence[note.Verifier], name: str
) -> BundleCheck:
    """Verify an exported bundle against this log's own verifier keys, in a worker thread
    (hashing is CPU work). The bundle's content is not recorded, only the outcome."""
    try:
        report = await asyncio.to_thread(bundle.verify_bundle, data, verifiers, jobs=1)
    except bundle.CannotVerify as exc:
        result = BundleCheck("unverifiable", [str(exc)])
    except Exception as exc:  # a damaged upload: say what, never a 500
        logger.info("bundle check failed: %s", type(exc).__name__)
        result = BundleCheck("unverifiable", [f"unreadable bundle ({type(exc).__name__})"])
    else:
        status: Literal["intact", "tampered"] = "intact" if report.ok else "tampered"
        result = BundleCheck(status, list(report.problems), dict(report.facts))
    audit.describe(
        description=f"Checked an uploaded bundle: {result.status}",
        target_type="bundle",
        target_id=name[:200] or None,
        status=result.status,
        problem_count=len(result.problems),
        events=result.facts.get("events"),
        tree_size=result.facts.get("tree_size"),
    )
    return result


async def queue_scheduled(
    session: AsyncSession, job: str, interval: float
) -> IntegrityVerifyRun | None:
    """The daily run, when it is due: `interval` after the previous scheduled one, or after
    the first checkpoint (before that there is nothing signed to verify)."""
    await repo.lock_requests(session)
    if await repo.unfinished_run(session) is not None:
        return None
    base = await repo.last_requested(session, "schedule") or await repo.first_checkpoint_at(session)
    if base is None or (utcnow() - base).total_seconds() < interval:
        return None
    return await repo.create_run(session, "schedule", f"job:{job}")


async def execute_run(
    run_id: int,
    *,
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    database_url: str,
    verifiers: list[note.Verifier],
    jobs: int,
    job_name: str,
    fence: Fence,
) -> verify.Report | None:
    """Carry out (or resume) run `run_id`; its result is recorded as an audit event in the
    transaction that finishes it. Every write is fenced by the job's lease."""
    async with sessionmaker() as session:
        run = await repo.get_run(session, run_id)
        if run is None or run.status == repo.FINISHED:
            return None
        run.attempts += 1
        if run.attempts > MAX_ATTEMPTS:
            # It failed (not "found tampering": that finishes) every time: stop retrying.
            await _finish(session, run, None, run.error or "failed repeatedly", job_name)
            await fence(session)
            await session.commit()
            return None
        if run.plan is None:
            async with engine.connect() as conn:
                plan = await verify.make_plan(conn)
            run.plan = plan.to_json()
            run.tree_size = plan.tree_size
            run.started_at = utcnow()
        else:
            plan = verify.Plan.from_json(run.plan)
        run.status = repo.RUNNING
        run.updated_at = utcnow()
        done = {
            i: verify.TaskResult.from_json(r)
            for i, r in (await repo.task_results(session, run_id)).items()
        }
        await fence(session)
        await session.commit()

    async def on_task(progress: verify.Progress, result: verify.TaskResult) -> None:
        async with sessionmaker() as s:
            await repo.save_task(s, run_id, result.index, result.to_json())
            current = await repo.get_run(s, run_id)
            assert current is not None
            current.tasks_total = progress.tasks_total
            current.tasks_done = progress.tasks_done
            current.positions_done = progress.positions_done
            current.updated_at = utcnow()
            await fence(s)
            await s.commit()

    report: verify.Report | None = None
    reason = None
    try:
        report = await verify.verify_log(
            engine,
            verifiers,
            verify.Pool(database_url, jobs),
            plan=plan,
            done=done,
            on_task=on_task,
            jobs=jobs,
        )
    except verify.CannotVerify as exc:
        reason = str(exc)
    except Exception as exc:
        # Kept for GET (class and message only), then the job's backoff retries the run.
        async with sessionmaker() as s:
            current = await repo.get_run(s, run_id)
            if current is not None:
                current.error = f"{type(exc).__name__}: {exc}"[:VERIFY_ERROR_LENGTH]
                await fence(s)
                await s.commit()
        raise
    async with sessionmaker() as session:
        run = await repo.get_run(session, run_id)
        assert run is not None
        await _finish(session, run, report, reason, job_name)
        await fence(session)
        await session.commit()
    return report


async def _finish(
    session: AsyncSession,
    run: IntegrityVerifyRun,
    report: verify.Report | None,
    reason: str | None,
    job_name: str,
) -> None:
    run.status = repo.FINISHED
    run.finished_at = run.updated_at = utcnow()
    run.error = None
    if report is not None:
        run.outcome = report.status
        run.problem_count = len(report.problems)
        run.report = report.to_json(RUN_PROBLEMS)
        run.tasks_done = run.tasks_total = max(run.tasks_total, run.tasks_done)
        run.positions_done = report.tree_size
        reason = report.reason
    else:
        run.outcome = "unverifiable"
        run.report = {"status": "unverifiable", "reason": reason}
    await repo.drop_tasks(session, run.id)
    common: dict[str, Any] = {
        "target_type": "verify_run",
        "target_id": str(run.id),
        "run_id": run.id,
        "trigger": run.trigger,
    }
    if report is not None and report.status == "tampered":
        shown = [
            {**p.to_json(), "detail": p.detail[:200]} for p in report.problems[:EVENT_PROBLEMS]
        ]
        await record_job_event(
            session,
            job_name,
            "integrity.tampering_detected",
            "integrity",
            f"Verification run {run.id}: {len(report.problems)} problem(s) in the log of "
            f"{report.tree_size} events",
            outcome="failure",
            tree_size=report.tree_size,
            checked=report.checked,
            problem_count=len(report.problems),
            problem_counts=report.counts(),
            problems=shown,
            problems_truncated=len(report.problems) > len(shown),
            **common,
        )
    elif report is not None and report.status == "intact":
        newest = report.newest
        await record_job_event(
            session,
            job_name,
            "integrity.verified",
            "integrity",
            f"Verification run {run.id}: the log of {report.tree_size} events is intact",
            tree_size=report.tree_size,
            checked=report.checked,
            purged=report.purged,
            checkpoints=report.checkpoints,
            checkpoint_size=None if newest is None else newest.size,
            seconds=round(report.seconds, 3),
            **common,
        )
    else:
        await record_job_event(
            session,
            job_name,
            "integrity.verify_failed",
            "integrity",
            f"Verification run {run.id} could not verify the log: {reason}",
            outcome="error",
            reason=reason,
            **common,
        )
