"""Streaming export writers: CSV, JSON, NDJSON and XLSX, with optional gzip.

Each writer turns batches of rows (from a server-side cursor) into bytes as they arrive,
so memory stays flat whatever the size. XLSX is the exception that cannot stream (the file
is a zip whose directory comes last): it is built in a temporary file, in constant-memory
mode, off the event loop, and then streamed.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import tempfile
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import xlsxwriter

# Spreadsheets run cells starting with these as formulas (OWASP "CSV injection").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
XLSX_MAX_ROWS = 1_048_576  # Excel's limit per sheet, header included
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "bundle": "application/x-tar",  # integrity/bundle.py
}

Batches = AsyncIterator[Sequence[Sequence[Any]]]


@dataclass(frozen=True, slots=True)
class ExportMeta:
    exported_by: str
    exported_at: datetime
    filters: dict[str, Any]
    row_count: int
    service_version: str
    format: str
    columns: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "exported_by": self.exported_by,
            "exported_at": self.exported_at.isoformat(),
            "filters": self.filters,
            "row_count": self.row_count,
            "service_version": self.service_version,
            "format": self.format,
            "order": "newest first",
        }

    def headers(self) -> dict[str, str]:
        """The same facts as HTTP headers (ASCII-safe), for formats without a metadata slot."""
        return {
            "X-Export-Exported-By": json.dumps(self.exported_by)[1:-1],
            "X-Export-Exported-At": self.exported_at.isoformat(),
            "X-Export-Filters": json.dumps(self.filters, separators=(",", ":")),
            "X-Export-Row-Count": str(self.row_count),
            "X-Export-Service-Version": self.service_version,
        }


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)  # spaced like PostgreSQL's jsonb text
    return str(value)


def neutralize(value: str) -> str:
    """Prefix a quote so a spreadsheet shows the text instead of evaluating it."""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    if value is None or isinstance(value, int | float | str | bool | dict | list):
        return value
    return str(value)


def csv_preamble(meta: ExportMeta, *, bom: bool, comments: bool) -> bytes:
    """What precedes the header row: a BOM for Excel, and the optional `# key: value` block."""
    lines = [f"# {key}: {_text(value)}\n" for key, value in meta.as_dict().items()]
    return (("\ufeff" if bom else "") + ("".join(lines) if comments else "")).encode()


async def csv_chunks(meta: ExportMeta, batches: Batches) -> AsyncIterator[bytes]:
    """RFC 4180 quoting (minimal), LF line ends: the same bytes PostgreSQL's COPY writes."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(meta.columns)
    yield buffer.getvalue().encode()
    async for rows in batches:
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(
            [neutralize(v) if isinstance(v, str) else _text(v) for v in row] for row in rows
        )
        yield buffer.getvalue().encode()


async def ndjson_chunks(meta: ExportMeta, batches: Batches) -> AsyncIterator[bytes]:
    columns = meta.columns
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_jsonable).encode
    async for rows in batches:
        yield "".join(dumps(dict(zip(columns, row, strict=True))) + "\n" for row in rows).encode()


def json_prefix(meta: ExportMeta) -> bytes:
    return ('{"export":' + json.dumps(meta.as_dict(), ensure_ascii=False) + ',"events":[').encode()


async def json_from_lines(meta: ExportMeta, lines: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """NDJSON bytes (one object per line, any chunking) → the JSON document."""
    yield json_prefix(meta)
    pending = b""
    first = True
    async for data in lines:
        pending += data
        cut = pending.rfind(b"\n")
        if cut < 0:
            continue
        complete, pending = pending[:cut], pending[cut + 1 :]
        yield (b"\n" if first else b",\n") + complete.replace(b"\n", b",\n")
        first = False
    if pending.strip():
        yield (b"\n" if first else b",\n") + pending
    yield b"\n]}\n"


async def json_chunks(meta: ExportMeta, batches: Batches) -> AsyncIterator[bytes]:
    """`{"export": {...}, "events": [...]}`: the metadata first, then the events."""
    columns = meta.columns
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_jsonable).encode
    yield json_prefix(meta)
    first = True
    async for rows in batches:
        parts = [dumps(dict(zip(columns, row, strict=True))) for row in rows]
        if parts:
            yield (("\n" if first else ",\n") + ",\n".join(parts)).encode()
            first = False
    yield b"\n]}\n"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _XlsxBuilder:
    """Rows into a constant-memory workbook; a new sheet every 1,048,575 rows."""

    def __init__(self, meta: ExportMeta) -> None:
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the caller
        self.book = xlsxwriter.Workbook(
            self.file,
            {
                "constant_memory": True,
                # Never turn text into formulas, numbers or links: what was recorded is shown.
                "strings_to_formulas": False,
                "strings_to_numbers": False,
                "strings_to_urls": False,
            },
        )
        self.columns = meta.columns
        info = self.book.add_worksheet("metadata")
        for r, (key, value) in enumerate(meta.as_dict().items()):
            info.write_string(r, 0, key)
            info.write_string(r, 1, _text(value))
        self.sheet: Any = None
        self.sheets = 0
        self.row = XLSX_MAX_ROWS

    def _new_sheet(self) -> None:
        self.sheets += 1
        name = "events" if self.sheets == 1 else f"events {self.sheets}"
        self.sheet = self.book.add_worksheet(name)
        self.sheet.write_row(0, 0, self.columns)
        self.row = 1

    def add(self, rows: Sequence[Sequence[Any]]) -> None:
        # Typed writers instead of write_row's per-cell type sniffing (~25% faster), and no
        # cell at all for NULL: xlsxwriter's per-cell cost is what bounds this format.
        for row in rows:
            if self.row >= XLSX_MAX_ROWS:
                self._new_sheet()
            write_string, write_number, r = (
                self.sheet.write_string,
                self.sheet.write_number,
                self.row,
            )
            for c, value in enumerate(row):
                if value is None:
                    continue
                if _is_number(value):
                    write_number(r, c, value)
                else:
                    write_string(r, c, _text(value))
            self.row += 1

    def finish(self) -> None:
        if self.sheet is None:
            self._new_sheet()
        self.book.close()
        self.file.seek(0)


async def xlsx_chunks(
    meta: ExportMeta, batches: Batches, chunk: int = 1 << 16
) -> AsyncIterator[bytes]:
    builder = await asyncio.to_thread(_XlsxBuilder, meta)
    try:
        async for rows in batches:
            await asyncio.to_thread(builder.add, rows)
        await asyncio.to_thread(builder.finish)
        while data := await asyncio.to_thread(builder.file.read, chunk):
            yield data
    finally:
        builder.file.close()


async def aclose(iterator: object) -> None:
    """Close an async generator now (a no-op for other iterators)."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


async def gzipped(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: a gzip container
    try:
        async for data in chunks:
            if out := compressor.compress(data):
                yield out
        yield compressor.flush()
    finally:
        await aclose(chunks)  # the export body it wraps: see OpenExport._body


Writer = Callable[[ExportMeta, Batches], AsyncIterator[bytes]]
WRITERS: dict[str, Writer] = {
    "csv": csv_chunks,
    "json": json_chunks,
    "ndjson": ndjson_chunks,
    "xlsx": xlsx_chunks,
}
