"""Report schedules, previews, and sending: by the `reports.scheduler` job for each period
that comes due, or at once (`send-now`).

Exactly once per period: the scheduler adds one `report_run` row per schedule and period
(unique), and a sender claims a due row (`FOR UPDATE SKIP LOCKED` on PostgreSQL, a
compare-and-set UPDATE everywhere) for `CLAIM` seconds before it sends. The only window for a
second copy is a crash between the SMTP server's acceptance and our record of it; the copy
carries the same Message-ID, so mail systems that deduplicate drop it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from audit_service.audit_log.context import SYSTEM
from audit_service.audit_log.sink import EventSink, SessionEventSink
from audit_service.core.config import Settings
from audit_service.core.errors import (
    AppError,
    FieldError,
    NotFound,
    ServiceUnavailable,
    ValidationFailed,
)
from audit_service.core.jobs import describe_error
from audit_service.kit.models import utcnow
from audit_service.kit.schemas import config_change
from audit_service.notifications import email
from audit_service.reports import periods
from audit_service.reports import repository as repo
from audit_service.reports.content import Reported, ReportPeriod, ReportScope, build_report
from audit_service.reports.models import ERROR_LENGTH, ReportRun, ReportSchedule
from audit_service.reports.periods import Kind
from audit_service.reports.render import Rendered, render
from audit_service.reports.schemas import (
    PeriodOut,
    PreviewIn,
    PreviewOut,
    RunList,
    RunOut,
    ScheduleIn,
    ScheduleList,
    ScheduleOut,
    ScheduleUpdate,
    SendOut,
)
from audit_service.stats.service import rollup_state

log = logging.getLogger(__name__)

CLAIM = timedelta(minutes=10)  # longer than any build + SMTP timeout
# A report waits for the statistics to reflect its period (after downtime the rollup may be
# catching up) for at most this long after it is due, then goes out with what there is:
# events counted later show in the next reports' revisions.
FRESHNESS_WAIT = timedelta(hours=1)
FRESHNESS_RETRY = timedelta(seconds=5)
EARLIER_RUNS = 7  # sent periods whose totals a report re-checks for late events
_TIMING = ("kind", "send_at", "tz")


class MailFailed(AppError):
    status_code, slug, title = 502, "mail-failed", "Mail Not Sent"


# --- schedules -------------------------------------------------------------------------------


def _period_out(kind: Kind, start_day: date, tz_name: str, send_at: str | None) -> PeriodOut:
    tz = ZoneInfo(tz_name)
    start, end = periods.bounds(kind, start_day, tz)
    return PeriodOut(
        start=start.astimezone(tz),
        end=end.astimezone(tz),
        tz=tz_name,
        send_at=periods.send_time(kind, start_day, send_at, tz).astimezone(tz) if send_at else None,
    )


def _kind(s: ReportSchedule) -> Kind:
    kind = s.kind
    assert kind in periods.KINDS
    return kind


def schedule_out(s: ReportSchedule, now: datetime | None = None) -> ScheduleOut:
    next_period = None
    if s.enabled:
        tz = ZoneInfo(s.tz)
        day = periods.period_start_day(_kind(s), (now or utcnow()).astimezone(tz).date())
        # The period running now is sent when it ends, unless the previous one is still due.
        previous = periods.previous_start_day(_kind(s), day)
        if periods.send_time(_kind(s), previous, s.send_at, tz) > (now or utcnow()):
            day = previous
        next_period = _period_out(_kind(s), day, s.tz, s.send_at)
    return ScheduleOut(
        id=s.id,
        name=s.name,
        kind=_kind(s),
        send_at=s.send_at,
        tz=s.tz,
        recipients=list(s.recipients),
        tenant_id=s.tenant_id,
        source=s.source,
        module=s.module,
        enabled=s.enabled,
        next_period=next_period,
        created_at=s.created_at,
        created_by=s.created_by,
        updated_at=s.updated_at,
        updated_by=s.updated_by,
    )


async def _schedule(session: AsyncSession, schedule_id: int) -> ReportSchedule:
    schedule = await repo.get_schedule(session, schedule_id)
    if schedule is None:
        raise NotFound(f"No report schedule with id {schedule_id}")
    return schedule


async def create_schedule(session: AsyncSession, audit: EventSink, data: ScheduleIn) -> ScheduleOut:
    audit.describe(target_type="report_schedule", setting="report_schedule")
    now = utcnow()
    schedule = await repo.add_schedule(
        session,
        name=data.name,
        kind=data.kind,
        send_at=data.send_at or periods.DEFAULT_SEND_AT[data.kind],
        tz=data.tz,
        recipients=data.recipients,
        tenant_id=data.tenant_id,
        source=data.source,
        module=data.module,
        enabled=data.enabled,
        effective_from=now,
        created_at=now,
        created_by=audit.actor.name,
        updated_at=now,
        updated_by=audit.actor.name,
    )
    out = schedule_out(schedule, now)
    audit.describe(
        target_id=str(out.id),
        description=f"Created {out.kind} report schedule {out.id} '{out.name}'",
        **config_change(before=None, after=out.public()),
    )
    return out


async def list_schedules(session: AsyncSession, audit: EventSink) -> ScheduleList:
    items = [schedule_out(s) for s in await repo.list_schedules(session)]
    audit.describe(target_type="report_schedule", returned=len(items))
    return ScheduleList(items=items)


async def get_schedule(session: AsyncSession, audit: EventSink, schedule_id: int) -> ScheduleOut:
    audit.describe(target_type="report_schedule", target_id=str(schedule_id))
    return schedule_out(await _schedule(session, schedule_id))


async def update_schedule(
    session: AsyncSession, audit: EventSink, schedule_id: int, data: ScheduleUpdate
) -> ScheduleOut:
    audit.describe(
        target_type="report_schedule", target_id=str(schedule_id), setting="report_schedule"
    )
    schedule = await _schedule(session, schedule_id)
    before = schedule_out(schedule)
    changes = {name: getattr(data, name) for name in data.model_fields_set}
    now = utcnow()
    for name, value in changes.items():
        setattr(schedule, name, value)
    retimed = any(changes.get(n, getattr(before, n)) != getattr(before, n) for n in _TIMING)
    # Re-enabled: what fell due while it was off is not sent in a burst now.
    if retimed or (changes.get("enabled") is True and not before.enabled):
        schedule.effective_from = now
    schedule.updated_at, schedule.updated_by = now, audit.actor.name
    await session.flush()
    after = schedule_out(schedule, now)
    audit.describe(
        description=f"Changed report schedule {after.id} '{after.name}'",
        **config_change(before=before.public(), after=after.public()),
    )
    return after


async def delete_schedule(session: AsyncSession, audit: EventSink, schedule_id: int) -> None:
    audit.describe(
        target_type="report_schedule", target_id=str(schedule_id), setting="report_schedule"
    )
    schedule = await _schedule(session, schedule_id)
    before = schedule_out(schedule)
    await repo.delete_schedule(session, schedule)
    audit.describe(
        description=f"Deleted report schedule {before.id} '{before.name}'",
        **config_change(before=before.public(), after=None),
    )


def _run_out(run: ReportRun, schedule: ReportSchedule) -> RunOut:
    tz = ZoneInfo(schedule.tz)
    return RunOut(
        id=run.id,
        schedule_id=run.schedule_id,
        period=PeriodOut(
            start=run.period_start.astimezone(tz),
            end=run.period_end.astimezone(tz),
            tz=schedule.tz,
        ),
        status=run.status,
        attempts=run.attempts,
        next_attempt_at=run.next_attempt_at if run.status == repo.PENDING else None,
        watermark=run.watermark,
        events=run.events,
        size=run.size,
        error=run.error,
        created_at=run.created_at,
        sent_at=run.sent_at,
    )


async def list_runs(
    session: AsyncSession, audit: EventSink, schedule_id: int, limit: int
) -> RunList:
    audit.describe(target_type="report_schedule", target_id=str(schedule_id))
    schedule = await _schedule(session, schedule_id)
    runs = await repo.runs_of(session, schedule_id, limit)
    audit.describe(returned=len(runs))
    return RunList(items=[_run_out(r, schedule) for r in runs])


# --- building a report -----------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """What a report covers, whether or not a schedule stands behind it."""

    kind: Kind
    tz: str
    scope: ReportScope
    schedule_id: int | None = None

    @classmethod
    def of(cls, s: ReportSchedule) -> Spec:
        return cls(_kind(s), s.tz, ReportScope(s.tenant_id, s.source, s.module), s.id)

    def period(self, start_day: date) -> ReportPeriod:
        start, end = periods.bounds(self.kind, start_day, ZoneInfo(self.tz))
        return ReportPeriod(kind=self.kind, start=start, end=end, tz=self.tz)


@dataclass(frozen=True)
class Built:
    period: ReportPeriod
    rendered: Rendered
    events: int
    summary: dict[str, object]
    watermark: int


async def build(session: AsyncSession, spec: Spec, start_day: date, settings: Settings) -> Built:
    period = spec.period(start_day)
    earlier: list[Reported] = []
    if spec.schedule_id is not None:
        earlier = [
            Reported(start=r.period_start, end=r.period_end, events=r.events or 0)
            for r in await repo.sent_before(session, spec.schedule_id, period.start, EARLIER_RUNS)
        ]
    watermark, _ = await rollup_state(session)
    report = await build_report(
        session,
        period,
        spec.scope,
        failed_login_threshold=settings.report_failed_login_threshold,
        earlier=earlier,
    )
    return Built(
        period=period,
        rendered=render(report, public_url=settings.public_url),
        events=report.figures.events,
        summary=report.model_dump(mode="json"),
        watermark=watermark,
    )


def _message(settings: Settings, built: Built, recipients: list[str], message_id: str | None):  # type: ignore[no-untyped-def]
    return email.new_message(
        settings,
        to=recipients,
        subject=built.rendered.subject,
        text=built.rendered.text,
        html=built.rendered.html,
        message_id=message_id,
    )


def _period_of(built: Built) -> PeriodOut:
    tz = ZoneInfo(built.period.tz)
    return PeriodOut(
        start=built.period.start.astimezone(tz),
        end=built.period.end.astimezone(tz),
        tz=built.period.tz,
    )


async def _spec_for_preview(session: AsyncSession, data: PreviewIn) -> Spec:
    if data.schedule_id is not None:
        spec = Spec.of(await _schedule(session, data.schedule_id))
        overrides = {n: getattr(data, n) for n in ("kind", "tz") if getattr(data, n) is not None}
        scope = ReportScope(
            data.tenant_id or spec.scope.tenant_id,
            data.source or spec.scope.source,
            data.module or spec.scope.module,
        )
        return Spec(
            overrides.get("kind", spec.kind), overrides.get("tz", spec.tz), scope, spec.schedule_id
        )
    if data.kind is None:
        message = "give a schedule_id or a kind (daily, weekly, monthly)"
        raise ValidationFailed(
            message, errors=[FieldError(loc=["body", "kind"], msg=message, type="missing")]
        )
    return Spec(data.kind, data.tz or "UTC", ReportScope(data.tenant_id, data.source, data.module))


def _start_day(spec: Spec, day: date | None) -> date:
    if day is None:
        return periods.last_complete(spec.kind, ZoneInfo(spec.tz), utcnow())
    return periods.period_start_day(spec.kind, day)


async def preview(
    session: AsyncSession, audit: EventSink, data: PreviewIn, settings: Settings
) -> PreviewOut:
    spec = await _spec_for_preview(session, data)
    built = await build(session, spec, _start_day(spec, data.day), settings)
    audit.describe(
        target_type="report_schedule" if spec.schedule_id else None,
        target_id=str(spec.schedule_id) if spec.schedule_id else None,
        description=f"Previewed a {spec.kind} report",
        kind=spec.kind,
        period_start=built.period.start.isoformat(),
        period_end=built.period.end.isoformat(),
        tz=spec.tz,
    )
    return PreviewOut(
        period=_period_of(built),
        subject=built.rendered.subject,
        html=built.rendered.html,
        text=built.rendered.text,
        report=built.summary,
    )


def _sent_metadata(built: Built, recipients: list[str], size: int) -> dict[str, Any]:
    return {
        "recipients": recipients,
        "period_start": built.period.start.isoformat(),
        "period_end": built.period.end.isoformat(),
        "tz": built.period.tz,
        "kind": built.period.kind,
        "size": size,
        "events": built.events,
        "watermark": built.watermark,
    }


async def send_now(
    session: AsyncSession, audit: EventSink, schedule_id: int, settings: Settings
) -> SendOut:
    """The schedule's latest complete period, sent now, outside the schedule (its own
    period runs are not touched). Recorded as `report.sent` or `report.failed`."""
    audit.describe(target_type="report_schedule", target_id=str(schedule_id), trigger="manual")
    schedule = await _schedule(session, schedule_id)
    spec = Spec.of(schedule)
    recipients = list(schedule.recipients)
    if not email.configured(settings):
        audit.describe(
            action="report.failed", outcome="failure", error=email.NO_SMTP, recipients=recipients
        )
        raise ServiceUnavailable(email.NO_SMTP)
    built = await build(session, spec, _start_day(spec, None), settings)
    message = _message(settings, built, recipients, None)
    size = len(message.as_bytes())
    try:
        refused = await email.send(settings, message)
    except email.MailError as exc:
        audit.describe(
            action="report.failed",
            outcome="failure",
            error=str(exc),
            **_sent_metadata(built, recipients, size),
        )
        raise MailFailed(f"The report was not sent: {exc}") from None
    audit.describe(
        action="report.sent",
        description=f"Sent {spec.kind} report of schedule {schedule.id} '{schedule.name}'",
        refused=refused,
        **_sent_metadata(built, recipients, size),
    )
    return SendOut(
        period=_period_of(built),
        recipients=recipients,
        subject=built.rendered.subject,
        size=size,
        refused=refused,
    )


# --- the scheduler ---------------------------------------------------------------------------

Fence = Callable[[AsyncSession], Awaitable[None]]


async def plan_runs(session: AsyncSession, now: datetime) -> int:
    """Add a run for every period an enabled schedule owes by `now` (missed ones after
    downtime too, oldest first). Returns how many periods were owed."""
    owed = 0
    for s in await repo.list_schedules(session, enabled_only=True):
        tz = ZoneInfo(s.tz)
        since = s.effective_from
        latest = await repo.latest_run(session, s.id)
        if latest is not None:
            last_day = latest.period_start.astimezone(tz).date()
            since = max(
                since,
                periods.send_time(_kind(s), last_day, s.send_at, tz) + timedelta(microseconds=1),
            )
        days = list(periods.due(_kind(s), s.send_at, tz, since=since, now=now))
        await repo.add_runs(session, s.id, [periods.bounds(_kind(s), d, tz) for d in days], now)
        owed += len(days)
    return owed


def _backoff(settings: Settings, attempts: int) -> timedelta:
    return timedelta(seconds=min(3600.0, settings.report_retry_base * 2 ** max(0, attempts - 1)))


async def send_due(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    fence: Fence,
    *,
    limit: int = 100,
) -> int:
    """Claim and send due runs one at a time until none is left (or `limit`); returns how
    many were sent."""
    sent = 0
    for _ in range(limit):
        async with sessionmaker() as session:
            now = utcnow()
            run_id = await repo.claim_next(session, now, now + CLAIM)
            if run_id is None:
                return sent
            await fence(session)
            await session.commit()
        if await _send_run(sessionmaker, settings, fence, run_id):
            sent += 1
    return sent


async def _send_run(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, fence: Fence, run_id: int
) -> bool:
    async with sessionmaker() as session:
        run = await repo.get_run(session, run_id)
        schedule = await repo.get_schedule(session, run.schedule_id) if run else None
        if run is None or schedule is None:
            return False  # the schedule was deleted meanwhile (its runs with it)
        spec = Spec.of(schedule)
        tz = ZoneInfo(spec.tz)
        start_day = run.period_start.astimezone(tz).date()
        due_at = periods.send_time(spec.kind, start_day, schedule.send_at, tz)
        recipients = list(schedule.recipients)
        attempts = run.attempts
        label = f"{spec.kind} report of schedule {schedule.id} '{schedule.name}'"
        now = utcnow()
        _, lag = await rollup_state(session)
        behind = lag is not None and now - timedelta(seconds=lag) < run.period_end
        if behind and now - due_at < FRESHNESS_WAIT:
            # The statistics still miss events from before the period's end.
            await repo.finish_run(
                session,
                run_id,
                status=repo.PENDING,
                attempts=attempts - 1,
                next_attempt_at=now + FRESHNESS_RETRY,
            )
            await fence(session)
            await session.commit()
            return False
        built: Built | None = None
        error: email.MailError | None = None
        size = 0
        try:
            built = await build(session, spec, start_day, settings)
        except Exception as exc:
            error = email.MailError(
                f"building the report failed: {describe_error(exc)}", retryable=True
            )
        await session.rollback()  # building only read: end that transaction before sending
    refused: list[str] = []
    if built is not None:
        message = _message(settings, built, recipients, _message_id(run_id, settings))
        size = len(message.as_bytes())
        try:
            refused = await email.send(settings, message)
        except email.MailError as exc:
            error = exc
    async with sessionmaker() as session:
        sink = SessionEventSink(session, SYSTEM, "report.sent", "reports")
        sink.describe(target_type="report_schedule", target_id=str(spec.schedule_id), run_id=run_id)
        now = utcnow()
        if error is None:
            assert built is not None
            await repo.finish_run(
                session,
                run_id,
                status=repo.SENT,
                sent_at=now,
                watermark=built.watermark,
                events=built.events,
                summary=built.summary,
                size=size,
                error=None,
            )
            sink.describe(
                description=f"Sent {label}",
                refused=refused,
                attempts=attempts,
                **_sent_metadata(built, recipients, size),
            )
            outcome = "success"
        elif error.retryable and attempts < settings.report_max_attempts:
            await repo.finish_run(
                session,
                run_id,
                status=repo.PENDING,
                next_attempt_at=now + _backoff(settings, attempts),
                error=str(error)[:ERROR_LENGTH],
            )
            log.warning("report run %s: attempt %s failed: %s", run_id, attempts, error)
            await fence(session)
            await session.commit()
            return False
        else:
            await repo.finish_run(
                session, run_id, status=repo.FAILED, error=str(error)[:ERROR_LENGTH]
            )
            start, end = periods.bounds(spec.kind, start_day, tz)
            sink.describe(
                action="report.failed",
                description=f"Not sent: {label}: {error}",
                error=str(error),
                attempts=attempts,
                recipients=recipients,
                period_start=start.isoformat(),
                period_end=end.isoformat(),
                tz=spec.tz,
                kind=spec.kind,
            )
            outcome = "failure"
        await sink.write(outcome=outcome)
        await fence(session)
        await session.commit()
    return error is None


def _message_id(run_id: int, settings: Settings) -> str:
    return f"<report-run-{run_id}@{settings.smtp_from.rpartition('@')[2]}>"
