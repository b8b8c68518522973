"""Per-request recording: one event per handled request, committed before the response starts.

The pure-ASGI `RecorderMiddleware` is the request boundary. It creates the request's
`RequestAudit` (the event being written, filled in by auth and services), lazily owns the
request's database session, and when the application emits `http.response.start`:

- success and the session changed data → the event joins that transaction and both commit
  together (atomic with the business change);
- anything else → the session is rolled back and the event goes to the group-commit writer,
  which stores many concurrent requests' events in one transaction;
- if the event cannot be stored, the client gets 503 instead and nothing is committed.

Only then is the start message forwarded, so no byte leaves before the record is durable.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from audit_service.audit_log import repository
from audit_service.audit_log.context import UNRECORDED_PATHS, UNRECORDED_PREFIXES, RequestAudit
from audit_service.audit_log.writer import GroupCommitWriter, RecordingFailed
from audit_service.core.db import describe_error, is_outage, session_wrote
from audit_service.core.errors import problem_response
from audit_service.core.logging import request_id_var
from audit_service.core.request_context import (
    client_ip,
    client_request_id,
    request_id,
    user_agent,
)

log = logging.getLogger(__name__)


class _ResponseReplaced(Exception):
    pass


_UNAVAILABLE_DETAIL = "The database is unavailable; nothing was changed. Try again shortly."
RETRY_AFTER = "1"


@dataclass(slots=True)
class Recorder:
    """What the middleware needs at run time; built in the app's lifespan."""

    sessionmaker: async_sessionmaker[AsyncSession]
    writer: GroupCommitWriter
    enabled: bool = True

    async def finish(self, audit: RequestAudit, status: int, route: BaseRoute | None) -> None:
        session = audit._session
        record = self.enabled and (status >= 400 or audit.record_on_success)
        if status < 400 and session is not None and session_wrote(session):
            if record:
                await repository.insert_events(session, [audit.to_row(status, route)])
            await session.commit()
            return
        # A session that never began a transaction (authentication answered from the cache)
        # holds no connection: nothing to roll back, and skipping the greenlet hop it would
        # cost matters on a cached `GET /me` (bench/request_path.py).
        if session is not None and session.in_transaction():
            try:
                await session.rollback()
            except Exception as exc:
                # The session's connection died (a database restart): nothing of it can be
                # committed anyway, and the writer may still reach the database.
                log.warning(
                    "request %s: rollback failed: %s", audit.request_id, describe_error(exc)
                )
                with contextlib.suppress(Exception):
                    await session.invalidate()
        if record:
            await self.writer.write(audit.to_row(status, route))


class RecorderMiddleware:
    """The request boundary: see the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        path = scope["path"]
        if path in UNRECORDED_PATHS or path.startswith(UNRECORDED_PREFIXES):
            await self.app(scope, receive, send)
            return
        recorder: Recorder = state.recorder
        settings = state.settings
        audit = RequestAudit(
            request_id=request_id(),
            client_request_id=client_request_id(scope),
            ip=client_ip(
                scope, settings.trusted_proxy_networks, header_name=settings.forwarded_header
            ),
            user_agent=user_agent(scope),
            method=scope["method"],
            path=scope["path"],
            _sessionmaker=recorder.sessionmaker,
        )
        scope.setdefault("state", {})["audit"] = audit
        # Every log line written while this request runs carries its id (core/logging.py).
        log_context = request_id_var.set(audit.request_id)
        started = False
        replaced = False

        async def send_recorded(message: Message) -> None:
            nonlocal started, replaced
            if replaced:
                # The client already has the 503: stop the application producing a body
                # (a large export) for nobody.
                raise _ResponseReplaced
            if message["type"] == "http.response.start" and not started:
                started = True
                try:
                    await recorder.finish(audit, message["status"], scope.get("route"))
                except Exception as exc:
                    # Fail closed: the record is missing, so the response must not go out.
                    cause = str(exc) if isinstance(exc, RecordingFailed) else describe_error(exc)
                    log.error("request %s not recorded: %s", audit.request_id, cause)
                    replaced = True
                    if audit._session is not None:
                        with contextlib.suppress(Exception):
                            await audit._session.rollback()
                    await problem_response(
                        503,
                        detail="The audit record could not be stored; nothing was changed.",
                        request_id=audit.request_id,
                        headers={"X-Request-ID": audit.request_id, "Retry-After": RETRY_AFTER},
                    )(scope, receive, send)
                    return
                message = dict(message)
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", audit.request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_recorded)
        except Exception as exc:
            if replaced:
                # Our own _ResponseReplaced, possibly wrapped (an ExceptionGroup from a
                # streaming response's task group) or turned into another error on the way
                # out: the client has its complete 503, so nothing may reach the server,
                # which would log "Exception in ASGI application" and drop the connection.
                return
            outage = is_outage(exc)
            if started:
                if outage:
                    # Mid-body (an export): the status is sent and cannot change. One line,
                    # no traceback; the server closes the unfinished response.
                    log.warning(
                        "request %s: database lost mid-response: %s",
                        audit.request_id,
                        describe_error(exc),
                    )
                    return
                log.exception("unhandled error in request %s", audit.request_id)
                raise
            if outage:
                # The database is down or restarting (refused, reset, "cannot connect now",
                # a dead pooled connection), here or in authentication: a 503 to retry, not
                # a 500 with a traceback. The writer records it if the database is back.
                log.warning(
                    "request %s: database unavailable: %s", audit.request_id, describe_error(exc)
                )
                audit.describe(
                    action="system.unavailable",
                    module="system",
                    outcome="error",
                    error=type(exc).__name__,
                )
                problem = problem_response(
                    503,
                    slug="service-unavailable",
                    detail=_UNAVAILABLE_DETAIL,
                    request_id=audit.request_id,
                    headers={"Retry-After": RETRY_AFTER},
                )
            else:
                log.exception("unhandled error in request %s", audit.request_id)
                audit.describe(
                    action="system.error",
                    module="system",
                    outcome="error",
                    error=type(exc).__name__,
                )
                problem = problem_response(
                    500,
                    detail="An unexpected error occurred. It has been recorded.",
                    request_id=audit.request_id,
                )
            try:
                await problem(scope, receive, send_recorded)
            except _ResponseReplaced:
                # Recording this error response failed too (the database is down) and the
                # client got the recorder's 503 instead: this body has nowhere to go. Raised
                # here, inside the handler, it would escape to the server as "Exception in
                # ASGI application" and drop the connection.
                return
        finally:
            request_id_var.reset(log_context)
            await audit.close()
