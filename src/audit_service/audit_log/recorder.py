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

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
)
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from audit_service.audit_log import repository
from audit_service.core.db import session_wrote
from audit_service.core.errors import problem_response
from audit_service.core.request_context import client_ip, request_id, user_agent
from audit_service.kit.models import utcnow
from audit_service.kit.net import canonical_ip_key

log = logging.getLogger(__name__)
_T = TypeVar("_T")

NATIVE_SOURCE = "audit-service"
UNRECORDED_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
AUDIT_ACTION_KEY = "x-audit-action"
AUDIT_MODULE_KEY = "x-audit-module"
# Requests that never reached an endpoint.
_UNROUTED = {404: "http.not_found", 405: "http.method_not_allowed", 413: "http.payload_too_large"}


def audited(action: str, module: str) -> dict[str, Any]:
    """Route `openapi_extra` naming the event a route records (also documented in OpenAPI)."""
    return {AUDIT_ACTION_KEY: action, AUDIT_MODULE_KEY: module}


@dataclass(frozen=True, slots=True)
class Actor:
    type: str = "anonymous"
    id: str | None = None
    name: str | None = None
    role: str | None = None


ANONYMOUS = Actor()
SYSTEM = Actor(type="system", id="audit-service", name="audit-service", role=None)


def outcome_for(status: int) -> str:
    if status in (401, 403, 429):
        return "denied"
    if status >= 500:
        return "error"
    if status >= 400:
        return "failure"
    return "success"


@dataclass(slots=True)
class RequestAudit:
    """The event this request will be recorded as. Services fill it through `describe()`."""

    request_id: str
    ip: str | None
    user_agent: str | None
    method: str
    path: str
    occurred_at: Any = field(default_factory=utcnow)
    started: float = field(default_factory=time.perf_counter)
    actor: Actor = ANONYMOUS
    action: str | None = None
    module: str | None = None
    outcome: str | None = None
    description: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # Successful ingestion stores the posted events themselves; the request adds nothing.
    record_on_success: bool = True
    _sessionmaker: async_sessionmaker[AsyncSession] | None = None
    _session: AsyncSession | None = None

    def describe(
        self,
        *,
        action: str | None = None,
        module: str | None = None,
        outcome: str | None = None,
        description: str | None = None,
        target_type: str | None = None,
        target_id: str | None = None,
        **metadata: Any,
    ) -> None:
        for name, value in (
            ("action", action),
            ("module", module),
            ("outcome", outcome),
            ("description", description),
            ("target_type", target_type),
            ("target_id", target_id),
        ):
            if value is not None:
                setattr(self, name, value)
        self.metadata.update(metadata)

    def session(self) -> AsyncSession:
        """The request's one session, opened on first use and closed by the middleware."""
        if self._session is None:
            if self._sessionmaker is None:
                raise RuntimeError("no sessionmaker: the app's lifespan has not run")
            self._session = self._sessionmaker()
        return self._session

    def to_row(self, status: int, route: BaseRoute | None) -> dict[str, Any]:
        extra = getattr(route, "openapi_extra", None) or {}
        route_path: str = getattr(route, "path", None) or self.path
        if status == 405 or route is None:
            default_action, default_module = _UNROUTED.get(status, "http.request"), "system"
        else:
            default_action = extra.get(AUDIT_ACTION_KEY, "http.request")
            default_module = extra.get(AUDIT_MODULE_KEY, "system")
        return _without_nul(
            {
                "event_id": uuid.uuid4(),
                "occurred_at": self.occurred_at,
                "source": NATIVE_SOURCE,
                "tenant_id": None,
                "actor_type": self.actor.type,
                "actor_id": self.actor.id,
                "actor_name": self.actor.name,
                "actor_role": self.actor.role,
                "action": self.action or default_action,
                "module": self.module or default_module,
                "outcome": self.outcome or outcome_for(status),
                "description": self.description,
                "target_type": self.target_type,
                "target_id": self.target_id,
                "ip": self.ip,
                "ip_bytes": canonical_ip_key(self.ip) if self.ip else None,
                "user_agent": self.user_agent,
                "request_id": self.request_id,
                "method": self.method,
                "path": (route_path if status != 405 else self.path)[:512],
                "status_code": status,
                "latency_ms": round((time.perf_counter() - self.started) * 1000, 3),
                "metadata": self.metadata,
                "idempotency_key": None,
            }
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _without_nul(value: _T) -> _T:
    """NUL → U+FFFD in every string. PostgreSQL text and JSONB cannot hold NUL, and a client
    must not make its request unrecordable (a 503, and no trace) with `/x%00` or a user name."""
    cleaned: Any = value
    if isinstance(value, str):
        cleaned = value.replace("\x00", "\ufffd")
    elif isinstance(value, dict):
        cleaned = {_without_nul(k): _without_nul(v) for k, v in value.items()}
    elif isinstance(value, list | tuple):
        cleaned = [_without_nul(v) for v in value]
    return cast(_T, cleaned)


def system_event(
    action: str,
    module: str,
    description: str,
    *,
    actor: Actor = SYSTEM,
    outcome: str = "success",
    target_type: str | None = None,
    target_id: str | None = None,
    **metadata: Any,
) -> dict[str, Any]:
    """An event not tied to an HTTP request (start-up, CLI, background jobs)."""
    return {
        "event_id": uuid.uuid4(),
        "occurred_at": utcnow(),
        "source": NATIVE_SOURCE,
        "tenant_id": None,
        "actor_type": actor.type,
        "actor_id": actor.id,
        "actor_name": actor.name,
        "actor_role": actor.role,
        "action": action,
        "module": module,
        "outcome": outcome,
        "description": description,
        "target_type": target_type,
        "target_id": target_id,
        "ip": None,
        "ip_bytes": None,
        "user_agent": None,
        "request_id": None,
        "method": None,
        "path": None,
        "status_code": None,
        "latency_ms": None,
        "metadata": metadata,
        "idempotency_key": None,
    }


class _ResponseReplaced(Exception):
    pass


class RecordingFailed(Exception):
    """The event could not be made durable; the request must fail closed."""


class GroupCommitWriter:
    """One background task storing queued events; concurrent requests share one commit.

    No timer: while one batch commits, the next accumulates, so batches grow with load and a
    lone request is written at once.
    """

    def __init__(self, engine: AsyncEngine, *, max_batch: int = 1000, timeout: float = 10.0):
        self._engine = engine
        self._max_batch = max_batch
        self._timeout = timeout
        self._queue: asyncio.Queue[tuple[dict[str, Any], asyncio.Future[None]] | None] = (
            asyncio.Queue()
        )
        self._task: asyncio.Task[None] | None = None
        self._conn: AsyncConnection | None = None
        self.batches = 0
        self.events = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-group-commit")

    async def stop(self) -> None:
        """Write whatever is queued, then stop."""
        if self._task is None:
            return
        self._queue.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        await self._drop_connection()

    async def write(self, row: dict[str, Any]) -> None:
        if self._task is None or self._task.done():
            raise RecordingFailed("recorder is not running")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((row, future))
        try:
            await asyncio.wait_for(asyncio.shield(future), self._timeout)
        except TimeoutError as exc:
            raise RecordingFailed("recorder timed out") from exc

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self._max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            await self._flush(batch)

    async def _connection(self) -> AsyncConnection:
        """The writer's own connection, kept across batches: no pool wait, no pre-ping."""
        if self._conn is None:
            conn = await self._engine.connect()
            if conn.dialect.name == "postgresql":
                # A batch is one executemany: one asyncpg pipeline ending in one Sync, so one
                # implicit transaction, atomic and committed when it returns. No BEGIN and
                # COMMIT round trips. (SQLite keeps a real transaction.)
                await conn.execution_options(isolation_level="AUTOCOMMIT")
            self._conn = conn
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()
                await conn.close()

    async def _store(self, rows: list[dict[str, Any]]) -> None:
        for attempt in (1, 2):
            conn = await self._connection()
            try:
                async with conn.begin():
                    await repository.insert_events(conn, rows)
                return
            except DBAPIError as exc:
                await self._drop_connection()
                # The kept connection died (database restart, idle timeout): retry once on a
                # new one, as the pool's pre-ping would have. Should the lost batch have been
                # committed after all, the unique event_id makes the retry fail, not double.
                if attempt == 2 or not exc.connection_invalidated:
                    raise
            except BaseException:
                await self._drop_connection()
                raise

    async def _flush(self, batch: list[tuple[dict[str, Any], asyncio.Future[None]]]) -> None:
        try:
            await self._store([row for row, _ in batch])
        except Exception as exc:
            log.error(
                "audit writer could not store %d event(s): %s", len(batch), type(exc).__name__
            )
            for _, future in batch:
                if not future.done():
                    future.set_exception(RecordingFailed(str(type(exc).__name__)))
            return
        self.batches += 1
        self.events += len(batch)
        for _, future in batch:
            if not future.done():
                future.set_result(None)


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
        if session is not None:
            await session.rollback()
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
        if scope["path"] in UNRECORDED_PATHS:
            await self.app(scope, receive, send)
            return
        recorder: Recorder = state.recorder
        audit = RequestAudit(
            request_id=request_id(scope),
            ip=client_ip(scope, state.settings.trusted_proxy_networks),
            user_agent=user_agent(scope),
            method=scope["method"],
            path=scope["path"],
            _sessionmaker=recorder.sessionmaker,
        )
        scope.setdefault("state", {})["audit"] = audit
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
                    log.error("request %s not recorded: %s", audit.request_id, type(exc).__name__)
                    replaced = True
                    if audit._session is not None:
                        with contextlib.suppress(Exception):
                            await audit._session.rollback()
                    await problem_response(
                        503,
                        detail="The audit record could not be stored; nothing was changed.",
                        request_id=audit.request_id,
                        headers={"X-Request-ID": audit.request_id, "Retry-After": "1"},
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
        except _ResponseReplaced:
            return
        except Exception as exc:
            log.exception("unhandled error in request %s", audit.request_id)
            if started:
                raise
            audit.describe(
                action="system.error", module="system", outcome="error", error=type(exc).__name__
            )
            await problem_response(
                500,
                detail="An unexpected error occurred. It has been recorded.",
                request_id=audit.request_id,
            )(scope, receive, send_recorded)
        finally:
            await audit.close()
