"""Alert channels (the admin API's rules: validation per kind, write-only secrets,
`config.changed` with before/after) and `notify`, which detections calls in its own
transaction for every alert change. Sending is in `delivery.py`."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.audit_log.sink import EventSink
from audit_service.core.config import Settings
from audit_service.core.errors import Conflict, FieldError, NotFound, ValidationFailed
from audit_service.kit import outbound
from audit_service.kit.models import utcnow
from audit_service.kit.schemas import config_change
from audit_service.kit.webhooks import new_secret
from audit_service.notifications import delivery
from audit_service.notifications import repository as repo
from audit_service.notifications.models import AlertChannel
from audit_service.notifications.schemas import (
    SEVERITIES,
    AlertNotice,
    ChannelCreated,
    ChannelIn,
    ChannelList,
    ChannelOut,
    ChannelTestOut,
    ChannelUpdate,
    DeliveryStatus,
)


def _invalid(loc: list[str | int], message: str) -> ValidationFailed:
    return ValidationFailed(message, errors=[FieldError(loc=loc, msg=message, type="value_error")])


def _host_allowed(settings: Settings, host: str) -> bool:
    """A literal private address or localhost is refused at once unless allow-listed (names
    are resolved and checked again at every send)."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return outbound.address_allowed(settings, "127.0.0.1")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return outbound.address_allowed(settings, host)


def _check(
    settings: Settings, kind: str, recipients: list[str] | None, url: str | None, secrets: Any
) -> None:
    if kind == "email":
        if not recipients:
            raise _invalid(["body", "recipients"], "an email channel needs recipients")
        if url is not None:
            raise _invalid(["body", "url"], "url is for webhook channels")
        if secrets:
            raise _invalid(["body", "secrets"], "secrets are for webhook channels")
        return
    if recipients is not None:
        raise _invalid(["body", "recipients"], "recipients are for email channels")
    if url is None:
        raise _invalid(["body", "url"], "a webhook channel needs a url")
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not _host_allowed(settings, host):
        raise _invalid(
            ["body", "url"],
            "private and loopback targets are refused (AUDIT_FORWARD_ALLOW_PRIVATE)",
        )
    if parts.scheme == "http" and not outbound.plain_http_allowed(settings, host):
        raise _invalid(
            ["body", "url"], "must be https:// (http only to allow-listed private hosts)"
        )


def channel_out(c: AlertChannel) -> ChannelOut:
    count = len((c.secrets or {}).get("webhook_secrets") or [])
    return ChannelOut(
        id=c.id,
        name=c.name,
        kind=c.kind,
        recipients=c.config.get("recipients"),
        url=c.config.get("url"),
        secret_set=count > 0,
        secrets_count=count,
        min_severity=c.min_severity,
        rules=list(c.rules),
        tenants=list(c.tenants),
        enabled=c.enabled,
        created_at=c.created_at,
        created_by=c.created_by,
        updated_at=c.updated_at,
        updated_by=c.updated_by,
    )


async def _channel(session: AsyncSession, channel_id: int) -> AlertChannel:
    c = await repo.get_channel(session, channel_id)
    if c is None:
        raise NotFound(f"No alert channel with id {channel_id}")
    return c


def _describe(audit: EventSink, channel_id: int | None = None) -> None:
    audit.describe(
        target_type="alert_channel",
        target_id=None if channel_id is None else str(channel_id),
        setting="alert_channel",
    )


async def create_channel(
    session: AsyncSession, audit: EventSink, settings: Settings, data: ChannelIn
) -> ChannelCreated:
    _describe(audit)
    _check(settings, data.kind, data.recipients, data.url, data.secrets)
    generated = None
    secrets: dict[str, Any] = {}
    if data.kind == "webhook":
        if data.secrets:
            secrets["webhook_secrets"] = list(data.secrets)
        else:
            generated = new_secret()
            secrets["webhook_secrets"] = [generated]
    if await repo.name_taken(session, data.name):
        raise Conflict(f"An alert channel named '{data.name}' exists already")
    now = utcnow()
    config: dict[str, Any] = (
        {"recipients": list(data.recipients or [])} if data.kind == "email" else {"url": data.url}
    )
    c = await repo.add_channel(
        session,
        name=data.name,
        kind=data.kind,
        config=config,
        secrets=secrets,
        min_severity=data.min_severity,
        rules=list(data.rules),
        tenants=list(data.tenants),
        enabled=data.enabled,
        created_at=now,
        created_by=audit.actor.name,
        updated_at=now,
        updated_by=audit.actor.name,
    )
    out = channel_out(c)
    audit.describe(
        target_id=str(c.id),
        description=f"Created {c.kind} alert channel {c.id} '{c.name}'",
        **config_change(before=None, after=out.public()),
    )
    return ChannelCreated(**out.model_dump(), generated_secret=generated)


async def list_channels(session: AsyncSession, audit: EventSink) -> ChannelList:
    items = [channel_out(c) for c in await repo.list_channels(session)]
    audit.describe(target_type="alert_channel", returned=len(items))
    return ChannelList(items=items)


async def get_channel(session: AsyncSession, audit: EventSink, channel_id: int) -> ChannelOut:
    audit.describe(target_type="alert_channel", target_id=str(channel_id))
    c = await _channel(session, channel_id)
    pending, failing = await repo.channel_counts(session, c.id)
    out = channel_out(c)
    out.delivery = DeliveryStatus(
        last_success_at=c.last_success_at,
        last_error=c.last_error,
        last_error_at=c.last_error_at,
        pending_groups=pending,
        failing_groups=failing,
    )
    return out


async def update_channel(
    session: AsyncSession,
    audit: EventSink,
    settings: Settings,
    channel_id: int,
    data: ChannelUpdate,
) -> ChannelOut:
    _describe(audit, channel_id)
    c = await _channel(session, channel_id)
    before = channel_out(c)
    given = data.model_fields_set
    config, secrets = dict(c.config), dict(c.secrets)
    if "recipients" in given:
        config["recipients"] = list(data.recipients or [])
    if "url" in given:
        config["url"] = data.url
    _check(
        settings,
        c.kind,
        config.get("recipients"),
        config.get("url"),
        data.secrets if "secrets" in given else None,
    )
    if "secrets" in given:
        secrets["webhook_secrets"] = list(data.secrets or [])
    if data.name is not None and await repo.name_taken(session, data.name, except_id=c.id):
        raise Conflict(f"An alert channel named '{data.name}' exists already")
    if data.name is not None:
        c.name = data.name.strip()
    if data.min_severity is not None:
        c.min_severity = data.min_severity
    if data.rules is not None:
        c.rules = list(data.rules)
    if data.tenants is not None:
        c.tenants = list(data.tenants)
    if data.enabled is not None:
        c.enabled = data.enabled
    c.config, c.secrets = config, secrets
    c.updated_at, c.updated_by = utcnow(), audit.actor.name
    await session.flush()
    await repo.reset_backoff(session, c.id)
    after = channel_out(c)
    audit.describe(
        description=f"Changed alert channel {c.id} '{c.name}'",
        secrets_changed="secrets" in given,
        **config_change(before=before.public(), after=after.public()),
    )
    return after


async def delete_channel(session: AsyncSession, audit: EventSink, channel_id: int) -> None:
    _describe(audit, channel_id)
    c = await _channel(session, channel_id)
    before = channel_out(c)
    await repo.delete_channel(session, c)
    audit.describe(
        description=f"Deleted alert channel {before.id} '{before.name}'",
        **config_change(before=before.public(), after=None),
    )


async def test_channel(
    session: AsyncSession, audit: EventSink, settings: Settings, channel_id: int
) -> ChannelTestOut:
    """Send a synthetic notification now, to this channel only, and say what happened."""
    audit.describe(target_type="alert_channel", target_id=str(channel_id))
    c = await _channel(session, channel_id)
    started = time.perf_counter()
    target = delivery.Target.of(c)
    await session.rollback()  # no transaction held open while we wait for the receiver
    result = await delivery.send_test(settings, target)
    elapsed = round((time.perf_counter() - started) * 1000, 3)
    audit.describe(
        description=f"Test notification sent to alert channel {target.id} '{target.name}'",
        delivered=result.ok,
        status_code=result.status,
        error=result.error,
        outcome="success" if result.ok else "failure",
    )
    return ChannelTestOut(
        delivered=result.ok, status_code=result.status, elapsed_ms=elapsed, error=result.error
    )


# --- the outbox ----------------------------------------------------------------------------------


def group_key(notice: AlertNotice) -> str:
    """Alerts of one rule and tenant are told together."""
    return f"{notice.rule_id}|{notice.tenant_id or ''}"[:200]


def _wants(c: AlertChannel, n: AlertNotice) -> bool:
    if n.status == "resolved":
        # Wherever the alert was told (checked by _enqueue), whatever the filters or
        # `enabled` say now: a disabled channel sends the resolution once it is enabled.
        return True
    if not c.enabled:
        return False
    if n.severity not in SEVERITIES or c.min_severity not in SEVERITIES:
        return False
    if SEVERITIES.index(n.severity) < SEVERITIES.index(c.min_severity):
        return False
    if c.rules and n.rule_id not in c.rules:
        return False
    return not (c.tenants and (n.tenant_id or "") not in c.tenants)


def _state(n: AlertNotice) -> dict[str, Any]:
    return {
        "id": n.alert_id,
        "rule_id": n.rule_id,
        "severity": n.severity,
        "status": n.status,
        "change": n.change,
        "title": n.title,
        "tenant_id": n.tenant_id,
        "source": n.source,
        "count": n.count,
        "entity": dict(n.entity),
        "first_seen_at": n.first_seen_at.isoformat(),
        "last_seen_at": n.last_seen_at.isoformat(),
        "activity_url": n.activity_url,
        "summary": dict(n.summary),
    }


async def notify(session: AsyncSession, notices: Sequence[AlertNotice]) -> int:
    """Put alert changes in the outbox of every channel that wants them, in the caller's
    transaction (so a change and its notification commit together). Returns how many
    channel x alert subjects were enqueued."""
    if not notices:
        return 0
    channels = await repo.list_channels(session)
    if not channels:
        return 0
    now = utcnow()
    work = sorted(
        ((c, n) for c in channels for n in notices if _wants(c, n)),
        key=lambda cn: (cn[0].id, group_key(cn[1]), cn[1].alert_id),
    )
    done = 0
    for c, n in work:
        if await _enqueue(session, c.id, n, now):
            done += 1
    return done


async def _enqueue(session: AsyncSession, channel_id: int, n: AlertNotice, now: datetime) -> bool:
    # Locks are taken group first, then subject — the order the deliverer takes them in.
    key = group_key(n)
    if n.status == "resolved" and not await repo.subject_exists(session, channel_id, n.alert_id):
        return False  # never told this channel it was open: nothing to resolve there
    await _touch_group(session, channel_id, key, now)
    inserted = await repo.insert_subject(
        session,
        channel_id=channel_id,
        alert_id=n.alert_id,
        group_key=key,
        status=n.status,
        state=_state(n),
        version=1,
        pending=True,
        pending_since=now,
        updated_at=now,
    )
    if not inserted:
        subject = await repo.get_subject(session, channel_id, n.alert_id)
        if subject is not None:
            subject.status, subject.state = n.status, _state(n)
            subject.version += 1
            subject.pending_since = subject.pending_since or now
            subject.pending = True
            subject.updated_at = now
    await session.flush()
    return True


async def _touch_group(session: AsyncSession, channel_id: int, key: str, now: datetime) -> None:
    """A change in the group: the version moves, and a group not pending becomes pending
    now (when it is due is the deliverer's business: group_wait after this for a group
    never sent, group_interval after the last send otherwise)."""
    created = await repo.insert_group(
        session,
        channel_id=channel_id,
        group_key=key,
        version=1,
        sent_version=0,
        sends=0,
        pending=True,
        pending_since=now,
        attempts=0,
        created_at=now,
    )
    if created:
        return
    g = await repo.get_group(session, channel_id, key, lock=True)
    if g is None:  # deleted meanwhile with its channel
        return
    g.version += 1
    if not g.pending:
        g.pending, g.pending_since = True, now
