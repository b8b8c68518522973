"""Post audit events to audit-service from another service.

Installed on its own as the `audit-service-client` distribution (needs only httpx):

    from audit_service_client import AuditClient

(`from audit_service.client import …` is the same module, for code written against the
server package, which bundles it.)

    with AuditClient("https://audit.internal", api_key) as audit:
        audit.send({"action": "exam.submitted", "actor_id": "student-1042"})  # now, one event
        audit.send_batch(events)                                              # now, many
        audit.record(action="exam.started", actor_id="student-7")            # buffered

`AsyncAuditClient` is the same for asyncio (`await audit.send(…)`, `await audit.record(…)`).

Delivery is at-least-once on the wire and exactly-once in the record: every event gets an
`idempotency_key` before its first attempt, so a retry after a lost response is answered with
the stored event (`duplicate=True`), never stored twice. The key (and a defaulted
`occurred_at`) is *written back* into each dict you pass to `send`/`send_batch`, so calling
again with the same list after a failure reuses them and stores no duplicates; an event that
is not a mutable mapping gets a fresh key per call unless it carries its own.

`send_batch` splits more than 1,000 events (or 4.5 MiB) into several requests, each atomic.
If one fails, the error raised carries `stored` (the results of the earlier requests, whose
events are in the record) and `offset` (the list index from which nothing was stored), and a
422's `rejected_indexes()` are positions in the whole list. Connection errors, 429 (honouring
`Retry-After`) and 5xx are retried with capped exponential backoff and full jitter; other 4xx
are the caller's mistake and raise `AuditRejected` at once.

The buffer behind `record()` is flushed by a background thread (or task) when it holds
`batch_size` events or `flush_interval` seconds have passed, and on `flush()`/`close()`.
Events the service refuses (422) are handed to `on_error` and the rest of their batch is
delivered; events that cannot be delivered yet stay buffered for the next flush. A 401/403
(a revoked or mistyped key) is a configuration fault, not a bad event: the events stay
buffered, `flush()`/`close()` raise `AuditUnavailable`, and so does `record()` (after
buffering its event) until a flush succeeds again. Events still buffered when the interpreter
exits without `close()` are flushed by an `atexit` hook, for at most `exit_timeout` seconds.

This module only needs httpx and the standard library.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import email.utils
import json
import logging
import random
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import TracebackType
from typing import Any, Self

import httpx

__all__ = [
    "CONFIGURATION_FAULTS",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_EVENTS",
    "AsyncAuditClient",
    "AuditClient",
    "AuditError",
    "AuditRejected",
    "AuditUnavailable",
    "BatchResult",
    "RetryPolicy",
    "SendResult",
    "prepare",
    "retryable",
]

log = logging.getLogger("audit_service.client")

MAX_BATCH_EVENTS = 1000
# Under the service's 5 MiB per batch, leaving room for the envelope.
MAX_BATCH_BYTES = 4 * 1024 * 1024 + 512 * 1024


def retryable(status: int) -> bool:
    """429 and every 5xx: the request may succeed later (and retrying cannot duplicate)."""
    return status == 429 or status >= 500


# Configuration mistakes, not outages: retrying cannot help.
_FATAL_TRANSPORT = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)

Event = Mapping[str, Any]
ErrorHandler = Callable[[dict[str, Any], "AuditError"], None]


class AuditError(Exception):
    """Base class of this client's errors.

    Raised by `send_batch`, `stored` holds what earlier requests of the call stored (their
    events are in the record) and `offset` the first list index of the request that failed:
    events from there on were not stored by this call."""

    stored: BatchResult | None = None
    offset: int = 0


class AuditRejected(AuditError):
    """The service refused the request (a 4xx other than 429): fix the input or the key."""

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        self.status = status
        self.problem = dict(problem)
        self.errors: list[dict[str, Any]] = list(problem.get("errors") or [])
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}")

    def _shift(self, offset: int) -> None:
        """Make the batch positions in `errors` relative to the caller's whole list."""
        for error in self.errors:
            loc = error.get("loc")
            if (
                isinstance(loc, list)
                and loc[:2] == ["body", "events"]
                and len(loc) > 2
                and isinstance(loc[2], int)
            ):
                error["loc"] = [*loc[:2], loc[2] + offset, *loc[3:]]
        self.problem["errors"] = self.errors

    def rejected_indexes(self) -> set[int]:
        """Batch positions named by a 422 (`errors[].loc = ["body", "events", i, …]`)."""
        return {
            e["loc"][2]
            for e in self.errors
            if len(e.get("loc", ())) > 2
            and e["loc"][:2] == ["body", "events"]
            and isinstance(e["loc"][2], int)
        }


class AuditUnavailable(AuditError):
    """Still failing after every retry (connection errors, 429 or 5xx)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class SendResult:
    id: int
    event_id: str
    duplicate: bool
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class BatchResult:
    inserted: int
    duplicates: int
    results: list[SendResult]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter; a server's Retry-After wins if longer."""

    max_attempts: int = 6
    base_delay: float = 0.2
    max_delay: float = 10.0
    max_retry_after: float = 60.0

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        # `random` is fine here: jitter spreads retries out, it guards no secret.
        backoff = random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (retry - 1)))  # noqa: S311
        if retry_after is not None:
            return min(max(retry_after, backoff), self.max_retry_after)
        return backoff


def prepare(event: Event | None = None, **fields: Any) -> dict[str, Any]:
    """A copy ready to send: an idempotency key (kept across retries), `occurred_at` as ISO
    8601 (now, if not given), and datetimes in `metadata` turned into text.

    When `event` is a mutable mapping (a dict) the key and a defaulted `occurred_at` are
    also written back into it, so sending the same object again is recognised as a retry."""
    prepared = {**(event or {}), **fields}
    prepared.setdefault("idempotency_key", uuid.uuid4().hex)
    prepared.setdefault("occurred_at", datetime.now(UTC))
    if isinstance(event, MutableMapping):
        event.setdefault("idempotency_key", prepared["idempotency_key"])
        event.setdefault("occurred_at", prepared["occurred_at"])
    occurred = prepared["occurred_at"]
    if isinstance(occurred, datetime):
        if occurred.tzinfo is None:
            raise ValueError("occurred_at must be timezone-aware (e.g. datetime.now(UTC))")
        prepared["occurred_at"] = occurred.isoformat()
    return prepared


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _dumps(value: Any) -> bytes:
    return json.dumps(value, default=_json_default, separators=(",", ":")).encode()


def _chunks(events: Sequence[dict[str, Any]]) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """(offset, events) pieces within the service's per-batch count and size limits."""
    start, size = 0, 0
    chunk: list[dict[str, Any]] = []
    for index, event in enumerate(events):
        event_size = len(_dumps(event)) + 1
        if chunk and (len(chunk) == MAX_BATCH_EVENTS or size + event_size > MAX_BATCH_BYTES):
            yield start, chunk
            start, size = index, 0
            chunk = []
        chunk.append(event)
        size += event_size
    if chunk:
        yield start, chunk


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"title": response.reason_phrase, "detail": response.text[:500]}
    return body if isinstance(body, dict) else {"detail": str(body)[:500]}


def _single(event: dict[str, Any], body: Mapping[str, Any]) -> SendResult:
    return SendResult(body["id"], body["event_id"], body["duplicate"], event["idempotency_key"])


def _batch(events: Sequence[dict[str, Any]], body: Mapping[str, Any]) -> BatchResult:
    results = [
        SendResult(r["id"], r["event_id"], r["duplicate"], events[r["index"]]["idempotency_key"])
        for r in body["results"]
    ]
    return BatchResult(body["inserted"], body["duplicates"], results)


def _merge(parts: Sequence[BatchResult]) -> BatchResult:
    return BatchResult(
        sum(p.inserted for p in parts),
        sum(p.duplicates for p in parts),
        [r for p in parts for r in p.results],
    )


def _partial(exc: AuditError, parts: Sequence[BatchResult], offset: int) -> AuditError:
    exc.stored, exc.offset = _merge(parts), offset
    if isinstance(exc, AuditRejected):
        exc._shift(offset)
    return exc


# 401/403: the key is revoked, mistyped or lacks the scope. No event is at fault; retrying
# cannot help until someone fixes the configuration, and dropping them would lose them.
CONFIGURATION_FAULTS = (401, 403)


def _fault(exc: AuditRejected) -> AuditUnavailable:
    error = AuditUnavailable(
        f"the service refused the API key ({exc}); events are kept buffered", exc.status
    )
    error.__cause__ = exc
    return error


def _raise_fault(fault: AuditUnavailable | None, pending: int) -> None:
    if fault is not None:
        raise AuditUnavailable(
            f"event buffered ({pending} pending), but the last flush failed: {fault}",
            fault.status,
        )


def _log_error(event: dict[str, Any], error: AuditError) -> None:
    log.error(
        "audit event %s (%s) was not accepted: %s",
        event.get("idempotency_key"),
        event.get("action"),
        error,
    )


class _Attempts:
    """Bookkeeping shared by both clients: what to do with one attempt's outcome."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.retry = 0

    def next_delay(self, outcome: httpx.Response | Exception) -> float:
        """Seconds to wait before the next attempt; raises when there is none."""
        self.retry += 1
        if isinstance(outcome, httpx.Response):
            status: int | None = outcome.status_code
            why = f"HTTP {outcome.status_code}"
            retry_after = _retry_after(outcome) if outcome.status_code in (429, 503) else None
        else:
            status, why, retry_after = None, f"{type(outcome).__name__}: {outcome}", None
        if self.retry >= self.policy.max_attempts:
            raise AuditUnavailable(f"gave up after {self.retry} attempts ({why})", status)
        return self.policy.delay(self.retry, retry_after)


@dataclass
class _Options:
    base_url: str
    api_key: str
    timeout: float
    retry: RetryPolicy
    batch_size: int
    flush_interval: float
    max_buffer: int
    on_error: ErrorHandler
    headers: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_BATCH_EVENTS:
            raise ValueError(f"batch_size must be 1 to {MAX_BATCH_EVENTS}")
        if self.max_buffer < self.batch_size:
            raise ValueError("max_buffer must be at least batch_size")
        self.headers = {
            "Authorization": f"Bearer {self.api_key}",
            "Content-Type": "application/json",
            "User-Agent": "audit-service-client/1",
        }


class AuditClient:
    """Blocking client; `record()` buffers and a daemon thread flushes."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_buffer: int = 10_000,
        on_error: ErrorHandler = _log_error,
        exit_timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._o = _Options(
            base_url,
            api_key,
            timeout,
            retry or RetryPolicy(),
            batch_size,
            flush_interval,
            max_buffer,
            on_error,
        )
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._worker: threading.Thread | None = None
        self._fault: AuditUnavailable | None = None
        self.exit_timeout = exit_timeout
        self.attempts = 0  # HTTP requests made, retries included (for monitoring and tests)
        _open_clients.add(self)

    # -- sending now --

    def _post(self, path: str, payload: Any) -> dict[str, Any]:
        body, tries = _dumps(payload), _Attempts(self._o.retry)
        while True:
            self.attempts += 1
            outcome: httpx.Response | Exception
            try:
                outcome = self._http.post(path, content=body, headers=self._o.headers)
            except _FATAL_TRANSPORT:
                raise
            except httpx.TransportError as exc:
                outcome = exc
            if isinstance(outcome, httpx.Response) and not retryable(outcome.status_code):
                if outcome.is_success:
                    result: dict[str, Any] = outcome.json()
                    return result
                raise AuditRejected(outcome.status_code, _problem(outcome))
            time.sleep(tries.next_delay(outcome))

    def send(self, event: Event | None = None, /, **fields: Any) -> SendResult:
        """Store one event now (retrying as needed); returns its ids."""
        prepared = prepare(event, **fields)
        return _single(prepared, self._post("/events", prepared))

    def send_batch(self, events: Sequence[Event]) -> BatchResult:
        """Store many events now, 1,000 (and < 5 MiB) per request; results in input order.

        On failure the error carries `stored`/`offset` (see `AuditError`); list indexes in
        it are positions in `events`."""
        prepared = [prepare(e) for e in events]
        parts: list[BatchResult] = []
        for offset, chunk in _chunks(prepared):
            try:
                parts.append(_batch(chunk, self._post("/events/batch", {"events": chunk})))
            except AuditError as exc:
                raise _partial(exc, parts, offset) from None
        return _merge(parts)

    # -- buffering --

    def record(self, event: Event | None = None, /, **fields: Any) -> None:
        """Buffer an event; it is sent within `flush_interval` seconds or `batch_size` events.

        When the buffer is full (the service has been unreachable for a while) this flushes
        in the caller's thread, so a producer slows down instead of losing events.
        """
        if self._closed:
            raise RuntimeError("the client is closed")
        prepared = prepare(event, **fields)
        with self._lock:
            self._buffer.append(prepared)
            pending = len(self._buffer)
        if self._worker is None:
            self._start_worker()
        if pending >= self._o.max_buffer:
            self.flush()
        elif pending >= self._o.batch_size:
            self._wake.set()
        _raise_fault(self._fault, pending)

    def _start_worker(self) -> None:
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._run, name="audit-client-flush", daemon=True
                )
                self._worker.start()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self._o.flush_interval)
            self._wake.clear()
            if self._closed:
                break
            try:
                self.flush()
            except AuditError as exc:  # kept in the buffer; the next flush tries again
                log.warning("audit events not delivered yet (%d buffered): %s", self.pending, exc)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._buffer)

    def flush(self) -> None:
        """Send everything buffered; raises AuditUnavailable (events kept) if it cannot."""
        with self._flushing:
            while True:
                with self._lock:
                    chunk = self._buffer[: self._o.batch_size]
                    del self._buffer[: len(chunk)]
                if not chunk:
                    self._fault = None
                    return
                try:
                    self._deliver(chunk)
                except AuditUnavailable as exc:
                    with self._lock:
                        self._buffer[:0] = chunk
                    if exc.status in CONFIGURATION_FAULTS:
                        self._fault = exc
                    raise

    def _deliver(self, chunk: list[dict[str, Any]]) -> None:
        try:
            self.send_batch(chunk)
        except AuditRejected as exc:
            if exc.status in CONFIGURATION_FAULTS:
                raise _fault(exc) from exc
            bad = exc.rejected_indexes() if exc.status == 422 else set()
            if not bad:  # nothing in particular is wrong (a revoked key, …): none can go
                bad = set(range(len(chunk)))
            for index in sorted(bad):
                self._o.on_error(chunk[index], exc)
            rest = [e for i, e in enumerate(chunk) if i not in bad]
            if rest:
                self._deliver(rest)

    def close(self) -> None:
        """Flush what is buffered, stop the flusher and close connections."""
        if self._closed:
            return
        self._closed = True
        _open_clients.discard(self)
        self._wake.set()
        if self._worker is not None:
            self._worker.join()
        try:
            self.flush()
        finally:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncAuditClient:
    """The asyncio twin of `AuditClient`; `record()` buffers and a task flushes."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_buffer: int = 10_000,
        on_error: ErrorHandler = _log_error,
        exit_timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._o = _Options(
            base_url,
            api_key,
            timeout,
            retry or RetryPolicy(),
            batch_size,
            flush_interval,
            max_buffer,
            on_error,
        )
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)
        self._buffer: list[dict[str, Any]] = []
        self._flushing = asyncio.Lock()
        self._wake = asyncio.Event()
        self._closed = False
        self._worker: asyncio.Task[None] | None = None
        self._fault: AuditUnavailable | None = None
        self.exit_timeout = exit_timeout
        self.attempts = 0
        _open_clients.add(self)

    async def _post(self, path: str, payload: Any) -> dict[str, Any]:
        body, tries = _dumps(payload), _Attempts(self._o.retry)
        while True:
            self.attempts += 1
            outcome: httpx.Response | Exception
            try:
                outcome = await self._http.post(path, content=body, headers=self._o.headers)
            except _FATAL_TRANSPORT:
                raise
            except httpx.TransportError as exc:
                outcome = exc
            if isinstance(outcome, httpx.Response) and not retryable(outcome.status_code):
                if outcome.is_success:
                    result: dict[str, Any] = outcome.json()
                    return result
                raise AuditRejected(outcome.status_code, _problem(outcome))
            await asyncio.sleep(tries.next_delay(outcome))

    async def send(self, event: Event | None = None, /, **fields: Any) -> SendResult:
        """Store one event now (retrying as needed); returns its ids."""
        prepared = prepare(event, **fields)
        return _single(prepared, await self._post("/events", prepared))

    async def send_batch(self, events: Sequence[Event]) -> BatchResult:
        """Store many events now, 1,000 (and < 5 MiB) per request; results in input order."""
        prepared = [prepare(e) for e in events]
        parts: list[BatchResult] = []
        for offset, chunk in _chunks(prepared):
            try:
                parts.append(_batch(chunk, await self._post("/events/batch", {"events": chunk})))
            except AuditError as exc:
                raise _partial(exc, parts, offset) from None
        return _merge(parts)

    async def record(self, event: Event | None = None, /, **fields: Any) -> None:
        """Buffer an event (see `AuditClient.record`); awaits a flush when the buffer is full."""
        if self._closed:
            raise RuntimeError("the client is closed")
        self._buffer.append(prepare(event, **fields))
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="audit-client-flush")
        if len(self._buffer) >= self._o.max_buffer:
            await self.flush()
        elif len(self._buffer) >= self._o.batch_size:
            self._wake.set()
        _raise_fault(self._fault, len(self._buffer))

    async def _run(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._o.flush_interval)
            self._wake.clear()
            if self._closed:
                break
            try:
                await self.flush()
            except AuditError as exc:
                log.warning("audit events not delivered yet (%d buffered): %s", self.pending, exc)

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def flush(self) -> None:
        """Send everything buffered; raises AuditUnavailable (events kept) if it cannot."""
        async with self._flushing:
            while self._buffer:
                chunk = self._buffer[: self._o.batch_size]
                del self._buffer[: len(chunk)]
                try:
                    await self._deliver(chunk)
                except AuditUnavailable as exc:
                    self._buffer[:0] = chunk
                    if exc.status in CONFIGURATION_FAULTS:
                        self._fault = exc
                    raise
            self._fault = None

    async def _deliver(self, chunk: list[dict[str, Any]]) -> None:
        try:
            await self.send_batch(chunk)
        except AuditRejected as exc:
            if exc.status in CONFIGURATION_FAULTS:
                raise _fault(exc) from exc
            bad = exc.rejected_indexes() if exc.status == 422 else set()
            if not bad:
                bad = set(range(len(chunk)))
            for index in sorted(bad):
                self._o.on_error(chunk[index], exc)
            rest = [e for i, e in enumerate(chunk) if i not in bad]
            if rest:
                await self._deliver(rest)

    async def aclose(self) -> None:
        """Flush what is buffered, stop the flusher and close connections."""
        if self._closed:
            return
        self._closed = True
        _open_clients.discard(self)
        self._wake.set()
        if self._worker is not None:
            await self._worker
        try:
            await self.flush()
        finally:
            await self._http.aclose()

    close = aclose

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


# --- at interpreter exit -----------------------------------------------------------------

# Clients not closed yet. Weak, so an abandoned client can still be garbage-collected.
_open_clients: weakref.WeakSet[AuditClient | AsyncAuditClient] = weakref.WeakSet()


def _exit_flush(client: AuditClient | AsyncAuditClient) -> None:
    """Deliver what `client` still buffers, for at most its `exit_timeout` seconds."""
    if isinstance(client, AsyncAuditClient):
        # Its event loop is gone by now: hand the events to a blocking client.
        if not client._buffer:
            return
        o = client._o
        sync = AuditClient(
            o.base_url,
            o.api_key,
            timeout=o.timeout,
            retry=o.retry,
            batch_size=o.batch_size,
            max_buffer=max(o.max_buffer, len(client._buffer)),
            on_error=o.on_error,
        )
        _open_clients.discard(sync)
        sync._buffer = client._buffer
        client._buffer = []
        client = sync
    elif client.pending == 0 and client._worker is None:
        return
    buffered = client.pending
    errors: list[BaseException] = []

    def close() -> None:
        try:
            client.close()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=close, name="audit-client-exit", daemon=True)
    thread.start()
    thread.join(client.exit_timeout)
    if thread.is_alive() or errors:
        why = f"not done after {client.exit_timeout} s" if thread.is_alive() else errors[0]
        lost = client.pending if errors else buffered
        log.error("audit events lost at exit (%d buffered): %s", lost, why)


@atexit.register
def _flush_open_clients() -> None:
    for client in list(_open_clients):
        _exit_flush(client)
