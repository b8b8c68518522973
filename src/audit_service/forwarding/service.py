"""Forwarding destinations: the rules of the admin API (validation per kind, write-only
secrets, `config.changed` with before/after), status, test sends, dead letters, replays.
Delivery itself is in `delivery.py`."""

from __future__ import annotations

import ipaddress
import ssl
import time
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.audit_log import log as event_log
from audit_service.audit_log.sink import EventSink
from audit_service.core.config import Settings
from audit_service.core.errors import Conflict, FieldError, NotFound, ValidationFailed
from audit_service.forwarding import delivery, senders
from audit_service.forwarding import repository as repo
from audit_service.forwarding.models import ERROR_LENGTH, ForwardDestination, ForwardReplay
from audit_service.forwarding.schemas import (
    DeadLetterList,
    DeadLetterOut,
    DestinationCreated,
    DestinationIn,
    DestinationList,
    DestinationOut,
    DestinationUpdate,
    ReplayIn,
    ReplayList,
    ReplayOut,
    RetryOut,
    StatusOut,
    TestOut,
)
from audit_service.kit import outbound
from audit_service.kit.models import utcnow
from audit_service.kit.schemas import config_change
from audit_service.kit.webhooks import new_secret

_FIELDS = {
    "webhook": {"url", "headers", "batch_size", "batch"},
    "splunk_hec": {
        "url",
        "batch_size",
        "index",
        "sourcetype",
        "hec_host",
        "hec_ack",
        "hec_channel",
    },
    "syslog": {"host", "port", "transport", "ca_file", "server_name", "batch_size"},
}
_REQUIRED = {"webhook": ("url",), "splunk_hec": ("url",), "syslog": ("host", "port")}
_SECRETS = {"webhook": {"webhook_secrets"}, "splunk_hec": {"hec_token"}, "syslog": set()}


def _invalid(loc: list[str | int], message: str) -> ValidationFailed:
    return ValidationFailed(message, errors=[FieldError(loc=loc, msg=message, type="value_error")])


def _host_allowed(settings: Settings, host: str) -> bool:
    """A literal private address or localhost is refused at once unless allow-listed (names
    are checked again, resolved, at every send)."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return outbound.address_allowed(settings, "127.0.0.1")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return outbound.address_allowed(settings, host)


def _check(settings: Settings, kind: str, config: dict[str, Any], secrets: dict[str, Any]) -> None:
    for name in config:
        if name not in _FIELDS[kind]:
            raise _invalid(["body", "config", name], f"{name} is not a setting of {kind}")
    for name in _REQUIRED[kind]:
        if config.get(name) is None:
            raise _invalid(["body", "config", name], f"{kind} needs config.{name}")
    for name, value in secrets.items():
        if name not in _SECRETS[kind] and value is not None:
            raise _invalid(["body", "secrets", name], f"{name} is not a secret of {kind}")
    if kind in ("webhook", "splunk_hec"):
        from urllib.parse import urlsplit

        parts = urlsplit(str(config["url"]))
        host = parts.hostname or ""
        if not _host_allowed(settings, host):
            raise _invalid(
                ["body", "config", "url"],
                "private and loopback targets are refused (AUDIT_FORWARD_ALLOW_PRIVATE)",
            )
        if parts.scheme == "http" and not outbound.plain_http_allowed(settings, host):
            raise _invalid(
                ["body", "config", "url"],
                "must be https:// (http only to allow-listed private hosts)",
            )
    if kind == "splunk_hec" and not secrets.get("hec_token"):
        raise _invalid(["body", "secrets", "hec_token"], "splunk_hec needs secrets.hec_token")
    if kind == "syslog":
        if not _host_allowed(settings, str(config["host"])):
            raise _invalid(
                ["body", "config", "host"],
                "private and loopback targets are refused (AUDIT_FORWARD_ALLOW_PRIVATE)",
            )
        transport = config.get("transport") or "tls"
        if transport != "tls" and (config.get("ca_file") or config.get("server_name")):
            raise _invalid(["body", "config", "ca_file"], "ca_file and server_name are for tls")
        if config.get("ca_file"):
            try:
                ssl.create_default_context(cafile=str(config["ca_file"]))
            except (OSError, ssl.SSLError, ValueError):
                raise _invalid(
                    ["body", "config", "ca_file"],
                    "the CA file cannot be read as PEM certificates",
                ) from None


def destination_out(d: ForwardDestination) -> DestinationOut:
    secrets = d.secrets or {}
    count = len(secrets.get("webhook_secrets") or [])
    return DestinationOut(
        id=d.id,
        name=d.name,
        kind=d.kind,
        format=d.format,
        config=dict(d.config),
        secret_set=bool(count or secrets.get("hec_token")),
        secrets_count=count,
        filter=dict(d.filter),
        state=d.state,
        cursor=d.cursor,
        created_at=d.created_at,
        created_by=d.created_by,
        updated_at=d.updated_at,
        updated_by=d.updated_by,
    )


async def _destination(session: AsyncSession, destination_id: int) -> ForwardDestination:
    d = await repo.get_destination(session, destination_id)
    if d is None:
        raise NotFound(f"No forwarding destination with id {destination_id}")
    return d


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


async def create_destination(
    session: AsyncSession, audit: EventSink, settings: Settings, data: DestinationIn
) -> DestinationCreated:
    audit.describe(target_type="forward_destination", setting="forward_destination")
    config = _clean(data.config.model_dump())
    secrets = _clean(data.secrets.model_dump())
    generated = None
    if data.kind == "webhook" and not secrets.get("webhook_secrets"):
        generated = new_secret()
        secrets["webhook_secrets"] = [generated]
    _check(settings, data.kind, config, secrets)
    if await repo.name_taken(session, data.name):
        raise Conflict(f"A forwarding destination named '{data.name}' exists already")
    now = utcnow()
    start = -1 if data.start == "beginning" else await event_log.tree_size(session) - 1
    d = await repo.add_destination(
        session,
        name=data.name,
        kind=data.kind,
        format=data.format,
        config=config,
        secrets=secrets,
        filter=data.filter.model_dump(exclude_defaults=True),
        state=repo.PAUSED if data.paused else repo.ACTIVE,
        cursor=start,
        attempts=0,
        delivered=0,
        failed=0,
        created_at=now,
        created_by=audit.actor.name,
        updated_at=now,
        updated_by=audit.actor.name,
    )
    out = destination_out(d)
    audit.describe(
        target_id=str(d.id),
        description=f"Created {d.kind} forwarding destination {d.id} '{d.name}'",
        **config_change(before=None, after=out.public()),
    )
    return DestinationCreated(**out.model_dump(), generated_secret=generated)


async def list_destinations(session: AsyncSession, audit: EventSink) -> DestinationList:
    items = [destination_out(d) for d in await repo.list_destinations(session)]
    audit.describe(target_type="forward_destination", returned=len(items))
    return DestinationList(items=items)


async def get_destination(
    session: AsyncSession, audit: EventSink, destination_id: int
) -> DestinationOut:
    audit.describe(target_type="forward_destination", target_id=str(destination_id))
    return destination_out(await _destination(session, destination_id))


async def update_destination(
    session: AsyncSession,
    audit: EventSink,
    settings: Settings,
    destination_id: int,
    data: DestinationUpdate,
) -> DestinationOut:
    audit.describe(
        target_type="forward_destination",
        target_id=str(destination_id),
        setting="forward_destination",
    )
    d = await _destination(session, destination_id)
    before = destination_out(d)
    config, secrets = dict(d.config), dict(d.secrets)
    if data.config is not None:
        config = _clean({**config, **data.config.model_dump(exclude_unset=True)})
    if data.secrets is not None:
        secrets = _clean({**secrets, **data.secrets.model_dump(exclude_unset=True)})
    _check(settings, d.kind, config, secrets)
    if data.name is not None and await repo.name_taken(session, data.name, except_id=d.id):
        raise Conflict(f"A forwarding destination named '{data.name}' exists already")
    if data.name is not None:
        d.name = data.name.strip()
    if data.format is not None:
        d.format = data.format
    if data.filter is not None:
        d.filter = data.filter.model_dump(exclude_defaults=True)
    d.config, d.secrets = config, secrets
    # A different batch (format, filter, size) after a failure: the pinned batch is let go.
    d.inflight_last = None
    d.updated_at, d.updated_by = utcnow(), audit.actor.name
    await session.flush()
    after = destination_out(d)
    audit.describe(
        description=f"Changed forwarding destination {d.id} '{d.name}'",
        secrets_changed=data.secrets is not None,
        **config_change(before=before.public(), after=after.public()),
    )
    return after


async def set_state(
    session: AsyncSession, audit: EventSink, destination_id: int, *, paused: bool
) -> DestinationOut:
    audit.describe(
        target_type="forward_destination",
        target_id=str(destination_id),
        setting="forward_destination",
    )
    d = await _destination(session, destination_id)
    before = destination_out(d)
    if paused:
        d.state = repo.PAUSED
    else:
        d.state = repo.ACTIVE
        d.attempts, d.next_attempt_at, d.failing_since = 0, None, None
    d.updated_at, d.updated_by = utcnow(), audit.actor.name
    await session.flush()
    after = destination_out(d)
    verb = "Paused" if paused else "Resumed"
    audit.describe(
        description=f"{verb} forwarding destination {d.id} '{d.name}'",
        **config_change(before=before.public(), after=after.public()),
    )
    return after


async def delete_destination(session: AsyncSession, audit: EventSink, destination_id: int) -> None:
    audit.describe(
        target_type="forward_destination",
        target_id=str(destination_id),
        setting="forward_destination",
    )
    d = await _destination(session, destination_id)
    before = destination_out(d)
    await repo.delete_destination(session, d)
    audit.describe(
        description=f"Deleted forwarding destination {before.id} '{before.name}'",
        **config_change(before=before.public(), after=None),
    )


async def status(session: AsyncSession, audit: EventSink, destination_id: int) -> StatusOut:
    audit.describe(target_type="forward_destination", target_id=str(destination_id))
    d = await _destination(session, destination_id)
    size = await event_log.tree_size(session)
    oldest = await repo.oldest_after(session, d.cursor)
    lag = 0.0 if oldest is None else max(0.0, (utcnow() - oldest).total_seconds())
    return StatusOut(
        id=d.id,
        state=d.state,
        cursor=d.cursor,
        log_size=size,
        backlog=max(0, size - d.cursor - 1),
        lag_seconds=round(lag, 3),
        delivered=d.delivered,
        failed=d.failed,
        dead_letters=await repo.count_dead_letters(session, d.id),
        attempts=d.attempts,
        last_success_at=d.last_success_at,
        last_error=d.last_error,
        failing_since=d.failing_since,
        next_attempt_at=d.next_attempt_at,
    )


async def _send_one(
    settings: Settings, d: ForwardDestination, event: dict[str, Any], msg_id: str
) -> senders.Sent:
    target = delivery.Target.of(d)
    item = delivery.Item(-1, event, senders.render_one(d.format, event))
    async with outbound.http_client(settings) as client:
        return await delivery.send_items(settings, target, [item], msg_id, client)


async def test_destination(
    session: AsyncSession, audit: EventSink, settings: Settings, destination_id: int
) -> TestOut:
    audit.describe(target_type="forward_destination", target_id=str(destination_id))
    d = await _destination(session, destination_id)
    event = delivery.synthetic_event()
    started = time.perf_counter()
    sent = await _send_one(settings, d, event, f"fwd_{d.id}_test_{event['event_id']}")
    elapsed = sent.elapsed_ms or round((time.perf_counter() - started) * 1000, 3)
    audit.describe(
        description=f"Test event sent to forwarding destination {d.id} '{d.name}'",
        delivered=sent.verdict == "ok",
        status_code=sent.status,
        error=sent.error,
        outcome="success" if sent.verdict == "ok" else "failure",
    )
    return TestOut(
        delivered=sent.verdict == "ok",
        status_code=sent.status,
        elapsed_ms=elapsed,
        error=sent.error,
        event_id=str(event["event_id"]),
    )


async def list_dead_letters(
    session: AsyncSession, audit: EventSink, destination_id: int, limit: int
) -> DeadLetterList:
    audit.describe(target_type="forward_destination", target_id=str(destination_id))
    await _destination(session, destination_id)
    rows = await repo.dead_letters(session, destination_id, limit)
    known = await repo.events_by_pk(session, [r.event_pk for r in rows])
    audit.describe(returned=len(rows))
    return DeadLetterList(
        items=[
            DeadLetterOut(
                id=r.id,
                destination_id=r.destination_id,
                position=r.position,
                event_pk=r.event_pk,
                event_id=known.get(r.event_pk, (None, None))[0],
                action=known.get(r.event_pk, (None, None))[1],
                reason=r.reason,
                attempts=r.attempts,
                created_at=r.created_at,
                updated_at=r.updated_at,
            )
            for r in rows
        ]
    )


async def retry_dead_letter(
    session: AsyncSession,
    audit: EventSink,
    settings: Settings,
    destination_id: int,
    dead_letter_id: int,
) -> RetryOut:
    audit.describe(
        target_type="forward_dead_letter", target_id=str(dead_letter_id), destination=destination_id
    )
    d = await _destination(session, destination_id)
    row = await repo.get_dead_letter(session, destination_id, dead_letter_id)
    if row is None:
        raise NotFound(f"No dead letter {dead_letter_id} of destination {destination_id}")
    event = await repo.event_at(session, row.position)
    if event is None:
        raise NotFound(f"The event at position {row.position} is no longer retained")
    sent = await _send_one(settings, d, event, f"fwd_{d.id}_{row.position}")
    now = utcnow()
    if sent.verdict == "ok":
        await repo.delete_dead_letter(session, row)
        await repo.set_values(session, d.id, delivered=d.delivered + 1, last_success_at=now)
    else:
        row.attempts += 1
        row.reason = (sent.error or sent.verdict)[:ERROR_LENGTH]
        row.updated_at = now
        await session.flush()
    audit.describe(
        description=f"Retried dead letter {dead_letter_id} of destination {d.id}",
        position=row.position,
        delivered=sent.verdict == "ok",
        status_code=sent.status,
        outcome="success" if sent.verdict == "ok" else "failure",
    )
    return RetryOut(delivered=sent.verdict == "ok", status_code=sent.status, error=sent.error)


async def discard_dead_letter(
    session: AsyncSession, audit: EventSink, destination_id: int, dead_letter_id: int
) -> None:
    audit.describe(
        target_type="forward_dead_letter", target_id=str(dead_letter_id), destination=destination_id
    )
    await _destination(session, destination_id)
    row = await repo.get_dead_letter(session, destination_id, dead_letter_id)
    if row is None:
        raise NotFound(f"No dead letter {dead_letter_id} of destination {destination_id}")
    audit.describe(
        description=f"Discarded dead letter {dead_letter_id} of destination {destination_id}",
        position=row.position,
        event_pk=row.event_pk,
    )
    await repo.delete_dead_letter(session, row)


def replay_out(r: ForwardReplay) -> ReplayOut:
    total = r.to_position - r.from_position + 1
    done = max(0, min(total, r.cursor - r.from_position + 1))
    return ReplayOut(
        id=r.id,
        destination_id=r.destination_id,
        from_position=r.from_position,
        to_position=r.to_position,
        cursor=r.cursor,
        state=r.state,
        delivered=r.delivered,
        progress=round(done / total, 4) if total > 0 else 1.0,
        last_error=r.last_error,
        created_at=r.created_at,
        created_by=r.created_by,
        finished_at=r.finished_at,
    )


async def start_replay(
    session: AsyncSession, audit: EventSink, destination_id: int, data: ReplayIn
) -> ReplayOut:
    audit.describe(target_type="forward_destination", target_id=str(destination_id))
    d = await _destination(session, destination_id)
    size = await event_log.tree_size(session)
    if data.from_position is not None and data.to_position is not None:
        first, last = data.from_position, data.to_position
        if first > last:
            raise _invalid(["body", "to_position"], "to_position must not be before from_position")
        if last >= size:
            raise _invalid(
                ["body", "to_position"],
                f"beyond the log: it holds positions 0 to {size - 1}"
                if size
                else "beyond the log: it is empty",
            )
    else:
        assert data.since is not None and data.until is not None
        since: datetime = data.since
        until: datetime = data.until
        if since >= until:
            raise _invalid(["body", "until"], "until must be after since")
        if since > utcnow():
            raise _invalid(["body", "since"], "beyond the log: since is in the future")
        found = await repo.positions_between(session, since, until)
        if found[0] is None or found[1] is None:
            raise _invalid(["body", "since"], "no logged events were recorded in that range")
        first, last = found[0], found[1]
    now = utcnow()
    r = await repo.add_replay(
        session,
        destination_id=d.id,
        from_position=first,
        to_position=last,
        cursor=first - 1,
        state=repo.RUNNING,
        delivered=0,
        attempts=0,
        created_at=now,
        created_by=audit.actor.name,
        updated_at=now,
    )
    audit.describe(
        description=f"Replay of positions {first} to {last} to destination {d.id} '{d.name}'",
        replay_id=r.id,
        from_position=first,
        to_position=last,
    )
    return replay_out(r)


async def list_replays(
    session: AsyncSession, audit: EventSink, destination_id: int, limit: int
) -> ReplayList:
    audit.describe(target_type="forward_destination", target_id=str(destination_id))
    await _destination(session, destination_id)
    rows = await repo.replays_of(session, destination_id, limit)
    audit.describe(returned=len(rows))
    return ReplayList(items=[replay_out(r) for r in rows])
