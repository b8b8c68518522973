"""The anonymise step: after `AUDIT_IP_ANONYMIZE_AFTER_DAYS` the stored IP becomes its /24
(IPv4) or /48 (IPv6) network address, after `AUDIT_USER_AGENT_ANONYMIZE_AFTER_DAYS` the user
agent its family, and that UTC day's commitment key is destroyed.

A day is processed once the first of the two (enabled) periods has passed for it: its key
proves both fields, so once it is gone a later, separate pass could prove nothing. Each day
is one transaction: a `retention.anonymized` event (the day, which fields, counts), every row
of the day with an IP or a user agent rewritten through the restricted path (the commitments
computed from the clear values with the day key are kept first, in `integrity_commitment`),
then the key destroyed. Before that, `verify` checks the full IP and user agent against the
leaf's commitments; after it, the kept commitments stand for them and the prefix (which is
in the leaf) is still checked. Leaves never change, so every proof stays valid.

A day with a held event (an active legal hold covers one of its rows with an IP or user
agent) or with rows not yet sequenced is skipped whole and reported; a later run takes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from audit_service.audit_log.context import SYSTEM, system_event
from audit_service.audit_log.sequencer import no_fence
from audit_service.core.config import Settings
from audit_service.integrity.entry import (
    DOMAIN_IP,
    DOMAIN_USER_AGENT,
    commit,
    event_salt,
    forget_keys,
)
from audit_service.retention import forget_repository as repo
from audit_service.retention import repository as policy_repo
from audit_service.retention.privacy_agent import family

Fence = Callable[[AsyncSession], Awaitable[None]]
DAYS_PER_RUN = 62


@dataclass
class AnonymizeReport:
    days: list[str] = field(default_factory=list)
    events: int = 0
    held_days: list[str] = field(default_factory=list)
    unsequenced_days: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "days": self.days,
            "events": self.events,
            "held_days": self.held_days,
            "unsequenced_days": self.unsequenced_days,
        }


def first_day_kept(settings: Settings, now: datetime) -> tuple[str | None, bool, bool]:
    """(the first UTC day not yet due, or None when both are off; rewrite ip; rewrite ua).
    Days before the returned one are processed."""
    periods = [
        d
        for d in (settings.ip_anonymize_after_days, settings.user_agent_anonymize_after_days)
        if d > 0
    ]
    if not periods:
        return None, False, False
    # A day is due once all of it is older than the period.
    first = (now - timedelta(days=min(periods))).date().isoformat()
    return first, settings.ip_anonymize_after_days > 0, settings.user_agent_anonymize_after_days > 0


async def run_anonymize(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    now: datetime,
    *,
    fence: Fence = no_fence,
    dry_run: bool = False,
) -> AnonymizeReport:
    report = AnonymizeReport()
    before, do_ip, do_ua = first_day_kept(settings, now)
    if before is None:
        return report
    async with sessionmaker() as session:
        days = await repo.day_keys_before(session, before, DAYS_PER_RUN)
    for day in days:
        async with sessionmaker() as session:
            held = await policy_repo.held_clause(session)
            n_held, unsequenced = await repo.day_blockers(session, day, held)
            if n_held:
                report.held_days.append(day)
                continue
            if unsequenced:
                report.unsequenced_days.append(day)
                continue
            if dry_run:
                report.days.append(day)
                continue
            n = await _anonymize_day(session, settings, day, do_ip, do_ua)
            await fence(session)
            await session.commit()
        forget_keys()
        report.days.append(day)
        report.events += n
    return report


async def _anonymize_day(
    session: AsyncSession, settings: Settings, day: str, do_ip: bool, do_ua: bool
) -> int:
    key = await repo.day_key(session, day)
    count = await repo.day_count(session, day)
    event_pk = await repo.insert_event(
        session,
        system_event(
            repo.ANONYMIZED,
            "retention",
            f"Retention: IPs and user agents of {day} anonymised, the day's key destroyed",
            actor=SYSTEM,
            target_type="integrity_key",
            target_id=f"day:{day}",
            days=[day],
            count=count,
            ip=do_ip,
            user_agent=do_ua,
            ip_after_days=settings.ip_anonymize_after_days,
            user_agent_after_days=settings.user_agent_anonymize_after_days,
        ),
    )
    total = 0
    after = 0
    while True:
        rows = await repo.day_rows(session, day, after, settings.retention_batch)
        if not rows:
            break
        after = rows[-1]["id"]
        batch: list[repo.Rewrite] = []
        for r in rows:
            ip_c = ua_c = None
            if key is not None:
                salt = event_salt(key, r["event_id"])
                if r["ip"] is not None and r["kept_ip"] is None:
                    ip_c = commit(DOMAIN_IP, salt, r["ip"])
                if r["user_agent"] is not None and r["kept_ua"] is None:
                    ua_c = commit(DOMAIN_USER_AGENT, salt, r["user_agent"])
            ua = r["user_agent"]
            batch.append(
                repo.Rewrite(
                    id=r["id"],
                    user_agent=family(ua) if ua is not None and do_ua else ua,
                    ip=ip_c,
                    ua=ua_c,
                    actor_id=None,
                    actor_name=None,
                )
            )
        total += await repo.rewrite(session, "anonymize", event_pk, batch)
    await repo.forget_key(session, event_pk, "day", day)
    return total
