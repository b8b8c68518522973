"""The request's audit context: who acts (Actor), the event a request will be recorded as
(RequestAudit), events not tied to a request (system_event), and fitting values to columns.

Services and the CLI import from here; nothing in this module touches the network or the writer.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from sqlalchemy import String
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.routing import BaseRoute

from audit_service.kit.ids import new_event_id
from audit_service.kit.models import utcnow
from audit_service.kit.net import canonical_ip_key

log = logging.getLogger(__name__)
_T = TypeVar("_T")

NATIVE_SOURCE = "audit-service"
UNRECORDED_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
# Static assets of the offline API docs and of the console: files, not activity.
UNRECORDED_PREFIXES = ("/docs/assets/", "/console/static/")
AUDIT_ACTION_KEY = "x-audit-action"
AUDIT_MODULE_KEY = "x-audit-module"
# Requests that never reached an endpoint.
_UNROUTED = {
    404: "http.not_found",
    405: "http.method_not_allowed",
    413: "http.payload_too_large",
    431: "http.headers_too_large",
}


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


def apply_description(
    event: Any,
    *,
    action: str | None,
    module: str | None,
    outcome: str | None,
    description: str | None,
    target_type: str | None,
    target_id: str | None,
    metadata: dict[str, Any],
) -> None:
    """`describe()` of every event sink: set the fields given, merge the metadata."""
    for name, value in (
        ("action", action),
        ("module", module),
        ("outcome", outcome),
        ("description", description),
        ("target_type", target_type),
        ("target_id", target_id),
    ):
        if value is not None:
            setattr(event, name, value)
    event.metadata.update(metadata)


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
    # The caller's own X-Request-ID when well-formed (for their tracing); never our key.
    client_request_id: str | None = None
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
        apply_description(
            self,
            action=action,
            module=module,
            outcome=outcome,
            description=description,
            target_type=target_type,
            target_id=target_id,
            metadata=metadata,
        )

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
        ip = fit_ip(self.ip)
        return fit_row(
            {
                "event_id": new_event_id(),
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
                "ip": ip,
                "ip_bytes": canonical_ip_key(ip) if ip else None,
                "user_agent": self.user_agent,
                "request_id": self.request_id,
                "client_request_id": self.client_request_id,
                "method": self.method,
                "path": route_path if status != 405 else self.path,
                "status_code": status,
                "latency_ms": round((time.perf_counter() - self.started) * 1000, 3),
                "metadata": self.metadata,
                "idempotency_key": None,
            }
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        # Without a transaction a session holds no connection and no state worth closing.
        if session is not None and session.in_transaction():
            try:
                await session.close()
            except Exception as exc:
                # A connection that died with its database: closing it must not turn an
                # answered request into a server error. Discard it instead of pooling it.
                log.warning("request %s: session close failed: %s", self.request_id, exc)
                with contextlib.suppress(Exception):
                    await session.invalidate()


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


@functools.cache
def column_widths() -> dict[str, int]:
    """Every bounded text column of audit_event and its width, read from the model itself,
    so a column widened by a migration is fitted to its new width with no second list."""
    from audit_service.audit_log.models import AuditEvent

    return {
        column.name: column.type.length
        for column in AuditEvent.__table__.columns
        if isinstance(column.type, String) and column.type.length
    }


def fit_ip(ip: str | None) -> str | None:
    """An address that fits `ip`: a scoped IPv6 (fe80::1%<zone>) loses its zone id, which
    only means something on the host that wrote it; anything still too long is dropped
    rather than cut, because a cut address is a different, wrong address."""
    if ip is None:
        return None
    width = column_widths()["ip"]
    if len(ip) > width:
        ip = ip.split("%", 1)[0]
    return ip if len(ip) <= width else None


def fit_row(row: dict[str, Any]) -> dict[str, Any]:
    """The one place a native event is made storable before it is queued: NUL replaced in
    every string (metadata included) and each bounded column cut to its width. A value the
    database would refuse would otherwise fail the row (and, before the writer isolated
    failures, its whole batch); which fields were cut is kept in metadata["truncated"]."""
    fitted = _without_nul(row)
    cut = []
    for name, width in column_widths().items():
        value = fitted.get(name)
        if isinstance(value, str) and len(value) > width:
            fitted[name] = value[:width]
            cut.append(name)
    if cut:
        fitted["metadata"] = {**(fitted.get("metadata") or {}), "truncated": cut}
    return fitted


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
    return fit_row(
        {
            "event_id": new_event_id(),
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
            "client_request_id": None,
            "method": None,
            "path": None,
            "status_code": None,
            "latency_ms": None,
            "metadata": metadata,
            "idempotency_key": None,
        }
    )
