"""The live tail's stream: server-sent events, one per matching event, each with its log
position as the SSE `id`.

Each poll reads in a short session of its own (never the request's, which the recorder
has committed and closed when the stream started), so a tail holds no connection while it
waits. The stream ends after `TAIL_SECONDS` (the browser reconnects with Last-Event-ID and
misses nothing), or as soon as its session is revoked or signed out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.responses import StreamingResponse

from audit_service.console import service as console_service
from audit_service.console.templating import environment
from audit_service.core.security import TokenClaims

KEEPALIVE = 15.0


def _message(data: str | None, *, id: int | None = None, event: str | None = None) -> bytes:
    lines = []
    if event:
        lines.append(f"event: {event}")
    if id is not None:
        lines.append(f"id: {id}")
    if data is not None:
        lines += [f"data: {line}" for line in data.splitlines() or [""]]
    return ("\n".join(lines) + "\n\n").encode()


async def _events(
    request: Request,
    sessions: async_sessionmaker[AsyncSession],
    state: console_service.TailState,
    token: str,
    claims: TokenClaims,
) -> AsyncIterator[bytes]:
    row_template = environment().get_template("_row.html")
    started = checked = sent_at = time.monotonic()
    last_id = state.after
    # Reconnect after a second; the id says where this stream starts.
    yield b"retry: 1000\n" + _message(None, id=state.after)
    while True:
        now = time.monotonic()
        async with sessions() as session:
            rows = await console_service.tail_next(session, state)
            if now - checked >= console_service.TAIL_RECHECK:
                checked = now
                if not await console_service.still_signed_in(session, token, claims):
                    yield _message("Your session has ended. Sign in again.", event="end")
                    return
        for item in rows:
            html = row_template.render(row=item.row)
            yield _message(html, id=item.position, event="row")
            last_id, sent_at = item.position, time.monotonic()
        if state.after > last_id:
            # Positions the filters skipped: the id alone moves the browser's resume point.
            last_id = state.after
            yield _message(None, id=last_id)
        if now - sent_at >= KEEPALIVE:
            sent_at = now
            yield b": keepalive\n\n"
        if now - started >= console_service.TAIL_SECONDS or await request.is_disconnected():
            return
        await asyncio.sleep(console_service.TAIL_POLL)


def tail_response(
    request: Request,
    sessions: async_sessionmaker[AsyncSession],
    state: console_service.TailState,
    token: str,
    claims: TokenClaims,
) -> StreamingResponse:
    return StreamingResponse(
        _events(request, sessions, state, token, claims),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
