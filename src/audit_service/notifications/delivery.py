"""Sending the outbox: each due group (channel x rule + tenant) as ONE e-mail (text + HTML,
autoescaped) or ONE signed webhook POST.

A deliverer claims a group (a conditional UPDATE: one deliverer per group at a time), reads
the group's version and alerts, sends without holding a transaction, and then marks the
version sent — only if its claim still holds, and per alert only where the alert's version is
the one it sent (a change made meanwhile stays pending). A crash between the send and that
commit leaves the claim to expire: the group is sent again (at least once), with the same
`webhook-id` / `Message-ID`, so receivers can drop the copy. A failure (refused, closed port,
5xx, timeout) is recorded on the group and retried with full-jitter backoff for as long as the
channel exists; nothing is lost and nothing raises out of here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from jinja2 import Environment, StrictUndefined
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from audit_service.audit_log.context import SYSTEM
from audit_service.audit_log.sink import SessionEventSink
from audit_service.core.config import Settings
from audit_service.kit import outbound
from audit_service.kit.models import utcnow
from audit_service.kit.webhooks import sign_headers
from audit_service.notifications import email
from audit_service.notifications import repository as repo
from audit_service.notifications.models import ERROR_LENGTH, AlertChannel, NotificationSubject

logger = logging.getLogger(__name__)
MODULE = "notifications"
BATCH = 100
MAX_ALERTS = 200  # per message; more are counted, not listed


@dataclass(frozen=True, slots=True)
class Target:
    id: int
    name: str
    kind: str
    recipients: tuple[str, ...]
    url: str | None
    secrets: tuple[str, ...]

    @classmethod
    def of(cls, c: AlertChannel) -> Target:
        return cls(
            id=c.id,
            name=c.name,
            kind=c.kind,
            recipients=tuple(c.config.get("recipients") or ()),
            url=c.config.get("url"),
            secrets=tuple((c.secrets or {}).get("webhook_secrets") or ()),
        )


@dataclass(frozen=True, slots=True)
class Result:
    ok: bool
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None


# --- what is sent --------------------------------------------------------------------------------


def message_id(channel_id: int, group_key: str, version: int, sends: int) -> str:
    """Stable for one group version and send number: a retry reuses it, the next send not."""
    digest = hashlib.sha256(group_key.encode()).hexdigest()[:16]
    return f"ntf_{channel_id}_{digest}_{version}_{sends + 1}"


def _absolute(settings: Settings, url: str | None) -> str | None:
    if url and settings.public_url and url.startswith("/"):
        return settings.public_url.rstrip("/") + url
    return url


def payload(
    settings: Settings,
    target: Target,
    group_key: str,
    alerts: Sequence[Mapping[str, Any]],
    msg_id: str,
    *,
    test: bool = False,
) -> dict[str, Any]:
    counts = {"open": 0, "acknowledged": 0, "resolved": 0}
    for a in alerts:
        counts[str(a.get("status"))] = counts.get(str(a.get("status")), 0) + 1
    listed = [
        {
            "id": a["id"],
            "rule_id": a["rule_id"],
            "severity": a["severity"],
            "status": a["status"],
            "change": a.get("change"),
            "title": a["title"],
            "tenant_id": a.get("tenant_id"),
            "source": a.get("source"),
            "entity": a.get("entity") or {},
            "count": a.get("count"),
            "first_seen_at": a.get("first_seen_at"),
            "last_seen_at": a.get("last_seen_at"),
            "activity_url": _absolute(settings, a.get("activity_url")),
            "summary": a.get("summary") or {},
        }
        for a in alerts[:MAX_ALERTS]
    ]
    return {
        "type": "alert.test" if test else "alert.notification",
        "id": msg_id,
        "channel": {"id": target.id, "name": target.name},
        "group_key": group_key,
        "status": "resolved" if counts["open"] + counts["acknowledged"] == 0 else "firing",
        "counts": counts,
        "total": len(alerts),
        "alerts": listed,
        "sent_at": utcnow().isoformat(),
    }


def email_subject(body: Mapping[str, Any]) -> str:
    alerts = body["alerts"]
    first = alerts[0] if alerts else {"title": "no alerts", "severity": "info"}
    status = "RESOLVED" if body["status"] == "resolved" else str(first["severity"]).upper()
    prefix = "[audit-service TEST] " if body["type"] == "alert.test" else "[audit-service] "
    more = f" (+{body['total'] - 1} more)" if body["total"] > 1 else ""
    subject = f"{prefix}[{status}] {first['title']}{more}"
    return " ".join(subject.split())[:250]


def email_text(body: Mapping[str, Any]) -> str:
    """The text part (the HTML part is the same, autoescaped)."""
    lines = []
    if body["type"] == "alert.test":
        lines += ["This is a test notification from audit-service.", ""]
    c = body["counts"]
    lines.append(
        f"Group {body['group_key']}: {c['open']} open, {c['acknowledged']} acknowledged, "
        f"{c['resolved']} resolved."
    )
    for a in body["alerts"]:
        lines += [
            "",
            f"Alert {a['id']} [{a['severity']}] {a['status']}: {a['title']}",
            f"  rule: {a['rule_id']}   tenant: {a.get('tenant_id') or '-'}   "
            f"source: {a.get('source') or '-'}",
            f"  {(a.get('entity') or {}).get('kind', 'entity')}: "
            f"{(a.get('entity') or {}).get('value', '-')}",
            f"  seen {a.get('count')} times, first {a.get('first_seen_at')}, "
            f"last {a.get('last_seen_at')}",
        ]
        if a.get("activity_url"):
            lines.append(f"  activity: {a['activity_url']}")
    if body["total"] > len(body["alerts"]):
        lines += ["", f"… and {body['total'] - len(body['alerts'])} more alerts."]
    lines += ["", f"Notification {body['id']}"]
    return "\n".join(" ".join(line.split("\r")) for line in lines) + "\n"


_HTML = """<!doctype html>
<html><body style="font-family: sans-serif">
{% if body.type == "alert.test" %}<p>This is a test notification from audit-service.</p>{% endif %}
<p>Group <code>{{ body.group_key }}</code>: {{ body.counts.open }} open,
{{ body.counts.acknowledged }} acknowledged, {{ body.counts.resolved }} resolved.</p>
<table cellpadding="4" style="border-collapse: collapse">
<tr><th align="left">Alert</th><th align="left">Severity</th><th align="left">Status</th>
<th align="left">Title</th><th align="left">Seen</th><th align="left"></th></tr>
{% for a in body.alerts %}
<tr><td>{{ a.id }}</td><td>{{ a.severity }}</td><td>{{ a.status }}</td>
<td>{{ a.title }}<br><small>{{ a.rule_id }} · {{ a.tenant_id or "-" }} ·
{{ a.source or "-" }}{% if a.entity %} · {{ a.entity.kind }}
{{ a.entity.value }}{% endif %}</small></td>
<td>{{ a.count }}&times;, {{ a.first_seen_at }} &ndash; {{ a.last_seen_at }}</td>
<td>{% if a.activity_url %}<a href="{{ a.activity_url }}">activity</a>{% endif %}</td></tr>
{% endfor %}
</table>
{% if body.total > body.alerts|length %}
<p>… and {{ body.total - body.alerts|length }} more alerts.</p>
{% endif %}
<p><small>Notification {{ body.id }}</small></p>
</body></html>
"""
# Autoescape on: every value comes from events (user names, titles) and is shown as text.
_ENV = Environment(autoescape=True, undefined=StrictUndefined)
_HTML_TEMPLATE = _ENV.from_string(_HTML)


def email_html(body: Mapping[str, Any]) -> str:
    return _HTML_TEMPLATE.render(body=body)


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


async def send_webhook(
    client: httpx.AsyncClient, settings: Settings, target: Target, msg_id: str, body: bytes
) -> Result:
    if not target.url or not target.secrets:
        return Result(False, error="the channel has no URL or secret")
    headers = {"Content-Type": "application/json"}
    headers.update(sign_headers(list(target.secrets), msg_id, body))
    try:
        await outbound.check_url(settings, target.url)
        response = await client.post(target.url, content=body, headers=headers)
    except outbound.TargetRefused as exc:
        return Result(False, error=str(exc))
    except (httpx.HTTPError, OSError, ValueError) as exc:
        return Result(False, error=outbound.describe_failure(exc))
    status = response.status_code
    if 200 <= status < 300:
        return Result(True, status=status)
    if 300 <= status < 400:
        return Result(False, status=status, error=f"HTTP {status}: redirects are not followed")
    detail = " ".join(response.text[:200].split())
    return Result(
        False,
        status=status,
        error=f"HTTP {status}" + (f": {detail}" if detail else ""),
        retry_after=outbound.retry_after(response.headers.get("retry-after")),
    )


async def send_email(
    settings: Settings, target: Target, msg_id: str, body: Mapping[str, Any]
) -> Result:
    domain = settings.smtp_from.rpartition("@")[2] or socket.gethostname()
    message = email.new_message(
        settings,
        to=list(target.recipients),
        subject=email_subject(body),
        text=email_text(body),
        html=email_html(body),
        message_id=f"<{msg_id}@{domain}>",
    )
    try:
        refused = await email.send(settings, message)
    except email.MailError as exc:
        return Result(False, error=str(exc))
    if refused:
        logger.warning("alert e-mail: the server refused %d of the recipients", len(refused))
    return Result(True)


async def send(
    client: httpx.AsyncClient,
    settings: Settings,
    target: Target,
    msg_id: str,
    body: dict[str, Any],
) -> Result:
    try:
        if target.kind == "email":
            return await send_email(settings, target, msg_id, body)
        return await send_webhook(client, settings, target, msg_id, _compact(body))
    except Exception as exc:
        logger.exception("alert notification to channel %s failed unexpectedly", target.id)
        return Result(False, error=outbound.describe_failure(exc))


async def send_test(settings: Settings, target: Target) -> Result:
    now = utcnow().isoformat()
    alert = {
        "id": 0,
        "rule_id": "test",
        "severity": "info",
        "status": "open",
        "change": "opened",
        "title": "Test notification",
        "tenant_id": None,
        "source": "audit-service",
        "entity": {},
        "count": 1,
        "first_seen_at": now,
        "last_seen_at": now,
        "activity_url": "/admin/activity",
    }
    msg_id = f"ntf_{target.id}_test_{uuid.uuid4().hex}"
    body = payload(settings, target, "test", [alert], msg_id, test=True)
    async with outbound.http_client(settings, "alerts") as client:
        return await send(client, settings, target, msg_id, body)


# --- the deliverer -------------------------------------------------------------------------------


def backoff(settings: Settings, attempts: int, retry_after: float | None, rng: float) -> float:
    """Full jitter: uniform in [0, min(max, base·2^attempts)], at least Retry-After (capped)."""
    ceiling = float(
        min(settings.alert_backoff_max, settings.alert_backoff_base * 2 ** min(attempts, 30))
    )
    delay = rng * ceiling
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.alert_backoff_max))
    return delay


@dataclass(frozen=True, slots=True)
class Claimed:
    target: Target
    group_key: str
    version: int
    sends: int
    attempts: int
    subjects: tuple[tuple[int, int, str, dict[str, Any]], ...]  # alert id, version, status, state


class Deliverer:
    """One process's deliverer; any number may run against one database."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        holder: str | None = None,
        rng: Callable[[], float] = random.random,
        after_send: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.holder = holder or f"{socket.gethostname()[:40]}:{uuid.uuid4().hex[:12]}"
        self.rng = rng
        # Tests: run between the send and its commit (raise there to simulate a crash).
        self.after_send = after_send

    async def run_once(self) -> int:
        """Send every group due now; returns how many sends were attempted."""
        async with self.sessionmaker() as session:
            due = await repo.due_groups(session, utcnow(), *self._timing(), BATCH)
            await session.rollback()
        if not due:
            return 0
        async with outbound.http_client(self.settings, "alerts") as client:
            done = await asyncio.gather(*(self.deliver(cid, key, client) for cid, key in due))
        return sum(done)

    def _timing(self) -> tuple[timedelta, timedelta]:
        return (
            timedelta(seconds=self.settings.alert_group_wait),
            timedelta(seconds=self.settings.alert_group_interval),
        )

    async def _claim(self, channel_id: int, key: str) -> Claimed | None:
        now = utcnow()
        until = now + timedelta(seconds=self.settings.alert_claim_seconds)
        async with self.sessionmaker() as session:
            if not await repo.claim_group(
                session, channel_id, key, now, until, self.holder, *self._timing()
            ):
                await session.rollback()
                return None
            group = await repo.get_group(session, channel_id, key)
            channel = await repo.get_channel(session, channel_id)
            if group is None or channel is None:
                await session.rollback()
                return None
            subjects: Sequence[NotificationSubject] = await repo.group_subjects(
                session, channel_id, key
            )
            claimed = Claimed(
                Target.of(channel),
                key,
                group.version,
                group.sends,
                group.attempts,
                tuple((s.alert_id, s.version, s.status, dict(s.state)) for s in subjects),
            )
            if not subjects:
                await repo.release(session, channel_id, key, self.holder, group.version)
            await session.commit()
        return claimed if subjects else None

    async def deliver(self, channel_id: int, key: str, client: httpx.AsyncClient) -> int:
        try:
            claimed = await self._claim(channel_id, key)
        except Exception:  # a database hiccup: the group stays due, the next round retries
            logger.exception("claiming notification group %s/%s failed", channel_id, key)
            return 0
        if claimed is None:
            return 0
        msg_id = message_id(channel_id, key, claimed.version, claimed.sends)
        body = payload(self.settings, claimed.target, key, [s[3] for s in claimed.subjects], msg_id)
        started = time.perf_counter()
        result = await send(client, self.settings, claimed.target, msg_id, body)
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        if self.after_send is not None:
            await self.after_send()
        await self._record(claimed, msg_id, body, result, elapsed)
        return 1

    async def _record(
        self,
        c: Claimed,
        msg_id: str,
        body: Mapping[str, Any],
        result: Result,
        elapsed_ms: float,
    ) -> None:
        now = utcnow()
        cid, key = c.target.id, c.group_key
        async with self.sessionmaker() as session:
            if result.ok:
                unresolved = any(s[2] != "resolved" for s in c.subjects)
                repeat = timedelta(seconds=self.settings.alert_repeat_interval)
                held = await repo.mark_sent(
                    session,
                    cid,
                    key,
                    self.holder,
                    version=c.version,
                    now=now,
                    repeat_at=now + repeat if unresolved else None,
                )
                if held:
                    await repo.mark_subjects_sent(
                        session, cid, [(s[0], s[1], s[2]) for s in c.subjects], now
                    )
                await repo.channel_outcome(session, cid, ok=True, at=now, error=None)
            else:
                error = (result.error or "failed")[:ERROR_LENGTH]
                delay = backoff(self.settings, c.attempts, result.retry_after, self.rng())
                await repo.mark_failed(
                    session,
                    cid,
                    key,
                    self.holder,
                    error=error,
                    next_attempt_at=now + timedelta(seconds=delay),
                )
                await repo.channel_outcome(session, cid, ok=False, at=now, error=error)
            action = "alert.notified" if result.ok else "alert.notification_failed"
            sink = SessionEventSink(session, SYSTEM, action, MODULE)
            verb = "Sent" if result.ok else "Could not send"
            sink.describe(
                target_type="alert_channel",
                target_id=str(cid),
                description=(
                    f"{verb} {c.target.kind} notification of {len(c.subjects)} alert(s) "
                    f"({key}) to alert channel {cid} '{c.target.name}'"
                ),
                channel_kind=c.target.kind,
                group_key=key,
                group_version=c.version,
                notification_id=msg_id,
                alert_ids=[s[0] for s in c.subjects][:MAX_ALERTS],
                status=body["status"],
                attempt=c.attempts + 1,
                status_code=result.status,
                error=None if result.ok else result.error,
                elapsed_ms=elapsed_ms,
            )
            await sink.write(outcome="success" if result.ok else "failure")
            await session.commit()

    def __repr__(self) -> str:
        return f"Deliverer({self.holder})"
