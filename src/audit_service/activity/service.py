"""Reading the record: pages (offset or keyset), single events, and exports."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from audit_service import __version__
from audit_service.activity import export
from audit_service.activity.schemas import (
    MAX_OFFSET_ROWS,
    ActivityQuery,
    EventOut,
    EventPage,
    ExportQuery,
)
from audit_service.audit_log import repository
from audit_service.audit_log.context import RequestAudit
from audit_service.audit_log.models import AuditEvent
from audit_service.core.db import snapshot_isolation
from audit_service.core.errors import FieldError, NotFound, ValidationFailed
from audit_service.kit.models import utcnow
from audit_service.kit.pagination import (
    InvalidCursor,
    Keyset,
    decode_cursor,
    encode_cursor,
    fingerprint,
)


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


async def get_activity(session: AsyncSession, audit: RequestAudit, event_id: int) -> EventOut:
    audit.describe(target_type="audit_event", target_id=str(event_id))
    event = await repository.get_event(session, event_id)
    if event is None:
        raise NotFound(f"No event with id {event_id}")
    return EventOut.of(event)


class OpenExport:
    """A counted, consistent export: the rows it streams are exactly the `row_count` it
    announced (one snapshot), and its connection is released however the response ends."""

    def __init__(self, conn: AsyncConnection, query: ExportQuery, meta: export.ExportMeta):
        self._conn = conn
        self._query = query
        self.meta = meta

    def chunks(self) -> AsyncIterator[bytes]:
        body = self._body()
        return export.gzipped(body) if self._query.gzip else body

    async def _body(self) -> AsyncIterator[bytes]:
        query, filters = self._query, self._query.to_filters()
        if query.format == "csv":
            yield export.csv_preamble(self.meta, bom=query.bom, comments=query.comments)
        # Postgres writes CSV and JSON lines itself (COPY); elsewhere Python formats rows.
        copied = repository.copy_export(
            self._conn, filters, "ndjson" if query.format == "json" else query.format
        )
        if copied is None:
            batches = repository.stream_export(self._conn, filters)
            body = export.WRITERS[query.format](self.meta, batches)
        elif query.format == "json":
            body = export.json_from_lines(self.meta, copied)
        else:
            body = copied
        async for chunk in body:
            yield chunk

    @property
    def filename(self) -> str:
        stamp = self.meta.exported_at.strftime("%Y%m%dT%H%M%SZ")
        return f"activity-{stamp}.{self._query.format}" + (".gz" if self._query.gzip else "")

    @property
    def media_type(self) -> str:
        return "application/gzip" if self._query.gzip else export.MEDIA_TYPES[self._query.format]

    async def close(self) -> None:
        await self._conn.close()


async def open_export(
    engine: AsyncEngine, audit: RequestAudit, query: ExportQuery, exported_by: str
) -> OpenExport:
    filters = query.to_filters()
    conn = await engine.connect()
    try:
        await conn.execution_options(isolation_level=snapshot_isolation(engine))
        await conn.begin()
        row_count = await repository.count_exact(conn, filters)
    except BaseException:
        await conn.close()
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
        description=f"Exported {row_count} event(s) as {query.format}",
    )
    return OpenExport(conn, query, meta)
