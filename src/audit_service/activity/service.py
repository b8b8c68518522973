"""Reading the record: pages (offset or keyset), single events, and exports."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from audit_service import __version__
from audit_service.activity import export
from audit_service.activity import repository as activity_repo
from audit_service.activity.schemas import (
    MAX_OFFSET_ROWS,
    ActivityFilters,
    ActivityQuery,
    EventDetail,
    EventOut,
    EventPage,
    ExportQuery,
    RecipientIn,
    RecipientList,
    RecipientOut,
)
from audit_service.audit_log import log, repository
from audit_service.audit_log.context import RequestAudit
from audit_service.audit_log.models import AuditEvent
from audit_service.core.db import snapshot_isolation
from audit_service.core.errors import (
    Conflict,
    FieldError,
    NotFound,
    ServiceUnavailable,
    ValidationFailed,
)
from audit_service.integrity import bundle, bundle_export, note
from audit_service.kit import age
from audit_service.kit.models import utcnow
from audit_service.kit.pagination import (
    InvalidCursor,
    Keyset,
    decode_cursor,
    encode_cursor,
    fingerprint,
)
from audit_service.kit.schemas import config_change


def _keyset(query: ActivityQuery, scope: str, key: str) -> Keyset | None:
    if query.cursor is None:
        return None
    try:
        keyset = decode_cursor(query.cursor, key)
    except InvalidCursor as exc:
        raise _bad_cursor(str(exc)) from None
    if keyset.scope != scope:
        raise _bad_cursor("cursor belongs to a search with other filters")
    return keyset


def _bad_cursor(message: str) -> ValidationFailed:
    return ValidationFailed(
        message, errors=[FieldError(loc=["query", "cursor"], msg=message, type="cursor_invalid")]
    )


async def list_activity(
    session: AsyncSession, audit: RequestAudit, query: ActivityQuery, key: str
) -> EventPage:
    filters = query.to_filters()
    applied = query.applied()
    scope = fingerprint(applied)
    keyset = _keyset(query, scope, key)
    size = query.page_size
    audit.describe(
        filters=applied,
        page=None if keyset or query.last else query.page,
        page_size=size,
        navigation="cursor" if keyset else "last" if query.last else "page",
    )
    # One row more than the page tells whether there is anything beyond it.
    if keyset is not None and keyset.direction == "prev":
        page = repository.PageRequest(size + 1, newer_than=(keyset.occurred_at, keyset.id))
    elif keyset is not None:
        page = repository.PageRequest(size + 1, older_than=(keyset.occurred_at, keyset.id))
    elif query.last:
        page = repository.PageRequest(size + 1, oldest=True)
    else:
        page = repository.PageRequest(size + 1, offset=(query.page - 1) * size)
    rows = await repository.list_events(session, filters, page)
    backwards = page.newer_than is not None or page.oldest
    extra = len(rows) > size
    # Reading backwards the extra row is the newest (first); otherwise the oldest (last).
    rows = rows[1:] if extra and backwards else rows[:size]
    has_older = (not backwards and extra) or page.newer_than is not None
    has_newer = (backwards and extra) or page.older_than is not None or query.page > 1

    def cursor(row: AuditEvent, direction: str) -> str:
        return encode_cursor(Keyset(row.occurred_at, row.id, direction, scope), key)  # type: ignore[arg-type]

    total, estimated = await repository.count_events(session, filters, exact_up_to=MAX_OFFSET_ROWS)
    audit.describe(returned=len(rows), total=total, total_is_estimate=estimated)
    return EventPage(
        items=[EventOut.of(r) for r in rows],
        page=query.page if page.offset or not (keyset or query.last) else None,
        page_size=size,
        total=total,
        total_is_estimate=estimated,
        next_cursor=cursor(rows[-1], "next") if rows and has_older else None,
        prev_cursor=cursor(rows[0], "prev") if rows and has_newer else None,
    )


async def get_activity(
    session: AsyncSession, audit: RequestAudit, event_id: int | uuid.UUID
) -> EventDetail:
    audit.describe(target_type="audit_event", target_id=str(event_id))
    if isinstance(event_id, uuid.UUID):
        event = await repository.get_event_by_uuid(session, event_id)
    else:
        event = await repository.get_event(session, event_id)
    if event is None:
        raise NotFound(f"No event with id {event_id}")
    position = await log.position_of(session, event.id)
    return EventDetail(**EventOut.of(event).model_dump(), log_position=position)


async def surrounding(
    session: AsyncSession, event: EventOut, n: int
) -> tuple[list[EventOut], list[EventOut]]:
    """The `n` events just newer and just older than `event` in the history's order
    (newest first, no filters): what happened around it."""
    at = (event.occurred_at, event.id)
    newer = await repository.list_events(
        session, repository.EventFilters(), repository.PageRequest(n, newer_than=at)
    )
    older = await repository.list_events(
        session, repository.EventFilters(), repository.PageRequest(n, older_than=at)
    )
    return [EventOut.of(e) for e in newer], [EventOut.of(e) for e in older]


@dataclass(frozen=True, slots=True)
class Tailed:
    position: int
    event: EventOut


async def tail_start(session: AsyncSession) -> int:
    """The log position a live tail starting now follows from (the last one sequenced)."""
    return await log.tree_size(session) - 1


async def tail(
    session: AsyncSession, filters: ActivityFilters, after: int, limit: int
) -> tuple[int, list[Tailed]]:
    """The events past log position `after` that match `filters`, in log order, and the
    position to follow from next. Follows the log (never `id > last`), so a tail resumed
    from a position it reported misses nothing and repeats nothing."""
    batch = await log.follow(session, after=after, limit=limit)
    if not batch:
        return after, []
    positions = {int(item.event["id"]): item.position for item in batch if item.event}
    matching: dict[int, AuditEvent] = {}
    if positions:
        conditions = replace(filters.to_filters(), extra=(AuditEvent.id.in_(list(positions)),))
        rows = await repository.list_events(
            session, conditions, repository.PageRequest(len(positions))
        )
        matching = {row.id: row for row in rows}
    found = [
        Tailed(positions[pk], EventOut.of(matching[pk]))
        for pk in sorted(matching, key=positions.__getitem__)
    ]
    return batch[-1].position, found


EXPORT_RETRY_AFTER = 5  # seconds: exports of a normal size finish in about that


class ExportSlots:
    """How many exports this process streams at once. Each holds a pooled connection for as
    long as its client reads: forty slow downloads would otherwise take the whole pool and
    every other request would wait for a connection. Refusing (503 + Retry-After) at once
    beats queueing: a queued export would hold its HTTP request open for nobody's benefit.
    Only touched from the event loop, so a plain counter is enough."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0

    def take(self) -> None:
        if self.in_use >= self.limit:
            raise ServiceUnavailable(
                f"{self.limit} export(s) are already running on this instance; try again shortly",
                headers={"Retry-After": str(EXPORT_RETRY_AFTER)},
            )
        self.in_use += 1

    def give_back(self) -> None:
        self.in_use -= 1


def export_slots(app: Any) -> ExportSlots:
    """The app's ExportSlots, made on first use from its settings."""
    slots: ExportSlots | None = getattr(app.state, "export_slots", None)
    if slots is None:
        slots = app.state.export_slots = ExportSlots(app.state.settings.max_concurrent_exports)
    return slots


@dataclass(frozen=True, slots=True)
class BundlePlan:
    """What a bundle export proves against and signs with, fixed before the first byte."""

    checkpoint: bundle_export.SignedCheckpoint
    signer: note.Signer
    not_in_bundle: int  # matching events the checkpoint does not cover yet


class OpenExport:
    """A counted, consistent export: the rows it streams are exactly the `row_count` it
    announced (one snapshot), and its connection is released however the response ends."""

    def __init__(
        self,
        conn: AsyncConnection,
        query: ExportQuery,
        meta: export.ExportMeta,
        slots: ExportSlots,
        *,
        bundle: BundlePlan | None = None,
        recipient: activity_repo.Recipient | None = None,
    ):
        self._conn = conn
        self._query = query
        self.meta = meta
        self._slots: ExportSlots | None = slots
        self._bundle = bundle
        self._recipient = recipient

    def chunks(self) -> AsyncIterator[bytes]:
        body = self._bundle_body(self._bundle) if self._bundle else self._body()
        if self._query.gzip:
            body = export.gzipped(body)
        if self._recipient is not None:
            body = age.encrypt_stream(body, self._recipient.public_key)
        return body

    async def _bundle_body(self, plan: BundlePlan) -> AsyncIterator[bytes]:
        size = plan.checkpoint.size
        batches = repository.stream_sequenced(
            self._conn, self._query.to_filters(), size, batch=bundle.CHUNK_EVENTS
        )
        meta = self.meta
        info = {
            "exported_by": meta.exported_by,
            "exported_at": meta.exported_at.isoformat(),
            "service_version": meta.service_version,
            "filters": meta.filters,
            "not_in_bundle": plan.not_in_bundle,
            "coverage": f"the events matching the filters at log positions below {size} "
            f"(the checkpoint's tree); {plan.not_in_bundle} matching event(s) recorded "
            "after it are not in this bundle",
        }
        body = bundle_export.bundle_chunks(
            self._conn,
            plan.checkpoint,
            batches,
            plan.signer,
            info,
            exported_at=meta.exported_at,
            readable=self._query.rows,
        )
        try:
            async for chunk in body:
                yield chunk
        finally:
            # As in _body(): close the writer, then the server-side cursor, on our connection.
            await export.aclose(body)
            await export.aclose(batches)

    async def _body(self) -> AsyncIterator[bytes]:
        query, filters = self._query, self._query.to_filters()
        if query.format == "csv":
            yield export.csv_preamble(self.meta, bom=query.bom, comments=query.comments)
        # Postgres writes CSV and JSON lines itself (COPY); elsewhere Python formats rows.
        copied = repository.copy_export(
            self._conn, filters, "ndjson" if query.format == "json" else query.format
        )
        source: AsyncIterator[Any]
        if copied is None:
            source = repository.stream_export(self._conn, filters)
            body = export.WRITERS[query.format](self.meta, source)
        elif query.format == "json":
            source = copied
            body = export.json_from_lines(self.meta, copied)
        else:
            source = body = copied
        try:
            async for chunk in body:
                yield chunk
        finally:
            # Closing this generator does not close the ones it iterates: close them here,
            # writer first, then the source (which ends a COPY or a server-side cursor on
            # this connection) while the connection is still ours.
            await export.aclose(body)
            if source is not body:
                await export.aclose(source)

    @property
    def filename(self) -> str:
        stamp = self.meta.exported_at.strftime("%Y%m%dT%H%M%SZ")
        extension = "tar" if self._query.format == "bundle" else self._query.format
        return (
            f"activity-{stamp}.{extension}"
            + (".gz" if self._query.gzip else "")
            + (".age" if self._recipient is not None else "")
        )

    @property
    def media_type(self) -> str:
        if self._recipient is not None:
            return "application/octet-stream"  # age has no registered media type
        return "application/gzip" if self._query.gzip else export.MEDIA_TYPES[self._query.format]

    async def close(self) -> None:
        try:
            await self._conn.close()
        finally:
            if self._slots is not None:  # once only, however often close() is called
                self._slots.give_back()
                self._slots = None


async def open_export(
    engine: AsyncEngine,
    audit: RequestAudit,
    query: ExportQuery,
    exported_by: str,
    slots: ExportSlots,
    signer: note.Signer | None = None,
) -> OpenExport:
    """Count what the export will send (and, for a bundle, fix its checkpoint) in one
    snapshot, describe the export event, and hand back the stream to send after it.
    `signer` (the log's key) signs a bundle's manifest; other formats need none."""
    filters = query.to_filters()
    slots.take()
    try:
        conn = await engine.connect()
    except BaseException:
        slots.give_back()
        raise
    plan: BundlePlan | None = None
    try:
        await conn.execution_options(isolation_level=snapshot_isolation(engine))
        await conn.begin()
        recipient = None
        if query.recipient is not None:
            recipient = await activity_repo.get_recipient(conn, query.recipient)
            if recipient is None:
                raise _unknown_recipient(query.recipient)
        row_count = await repository.count_exact(conn, filters)
        if query.format == "bundle":
            if signer is None:
                raise ValueError("a bundle export needs the log's signing key")
            checkpoint = await bundle_export.newest_checkpoint(conn)
            if checkpoint is None:
                raise Conflict(
                    "The log has no signed checkpoint yet, so there is nothing a bundle could "
                    "prove against: the log job signs one within seconds of the first event "
                    "(see GET /admin/jobs)"
                )
            covered = await repository.count_sequenced(conn, filters, checkpoint.size)
            plan = BundlePlan(checkpoint, signer, row_count - covered)
            row_count = covered
    except BaseException:
        try:
            await conn.close()
        finally:
            slots.give_back()
        raise
    columns = tuple(c.name for c in repository.export_statement(filters).selected_columns)
    meta = export.ExportMeta(
        exported_by=exported_by,
        exported_at=utcnow(),
        filters=query.applied(),
        row_count=row_count,
        service_version=__version__,
        format=query.format,
        columns=columns,
    )
    audit.describe(
        filters=query.applied(),
        format=query.format,
        gzip=query.gzip,
        row_count=row_count,
        description=f"Exported {row_count} event(s) as {query.format}"
        + (f", encrypted to recipient {recipient.id}" if recipient else ""),
    )
    if plan is not None:
        audit.describe(
            checkpoint_size=plan.checkpoint.size,
            checkpoint_root=base64.b64encode(plan.checkpoint.root_hash).decode(),
            not_in_bundle=plan.not_in_bundle,
            readable_rows=query.rows,
        )
    if recipient is not None:
        audit.describe(
            recipient_id=recipient.id,
            recipient_name=recipient.name,
            recipient_fingerprint=recipient.fingerprint,
        )
    return OpenExport(conn, query, meta, slots, bundle=plan, recipient=recipient)


def _unknown_recipient(recipient_id: int) -> ValidationFailed:
    message = f"No export recipient with id {recipient_id} (see GET /admin/export-recipients)"
    return ValidationFailed(
        message,
        errors=[FieldError(loc=["query", "recipient"], msg=message, type="recipient_unknown")],
    )


# --- export recipients ----------------------------------------------------------------


def _recipient_out(r: activity_repo.Recipient) -> RecipientOut:
    return RecipientOut(
        id=r.id,
        name=r.name,
        public_key=r.public_key,
        fingerprint=r.fingerprint,
        created_at=r.created_at,
        created_by=r.created_by,
    )


async def create_recipient(
    session: AsyncSession, audit: RequestAudit, data: RecipientIn
) -> RecipientOut:
    audit.describe(target_type="export_recipient", setting="export_recipient")
    try:
        created = await activity_repo.add_recipient(
            session,
            name=data.name,
            public_key=data.public_key,
            fingerprint=age.fingerprint(data.public_key),
            created_at=utcnow(),
            created_by=audit.actor.name,
        )
    except activity_repo.DuplicateKey:
        existing = await activity_repo.recipient_by_key(session, data.public_key)
        which = f" (recipient {existing.id}, '{existing.name}')" if existing else ""
        raise Conflict(f"This public key is registered already{which}") from None
    out = _recipient_out(created)
    audit.describe(
        target_id=str(out.id),
        description=f"Registered export recipient {out.id} '{out.name}'",
        **config_change(before=None, after=out.public()),
    )
    return out


async def list_recipients(session: AsyncSession, audit: RequestAudit) -> RecipientList:
    items = [_recipient_out(r) for r in await activity_repo.list_recipients(session)]
    audit.describe(target_type="export_recipient", returned=len(items))
    return RecipientList(items=items)


async def delete_recipient(session: AsyncSession, audit: RequestAudit, recipient_id: int) -> None:
    audit.describe(
        target_type="export_recipient", target_id=str(recipient_id), setting="export_recipient"
    )
    deleted = await activity_repo.delete_recipient(session, recipient_id)
    if deleted is None:
        raise NotFound(f"No export recipient with id {recipient_id}")
    before = _recipient_out(deleted)
    audit.describe(
        description=f"Removed export recipient {before.id} '{before.name}'",
        **config_change(before=before.public(), after=None),
    )
