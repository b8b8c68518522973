"""Prometheus metrics: one registry per app, served at GET /metrics.

What is counted on the request path is kept to a dictionary lookup and an increment (the
`RequestMetricsMiddleware`); everything else (writer queue depth and counters, the database
pool) is read only when Prometheus scrapes, through a collector.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# A client chooses the method: anything else is folded so it cannot grow label cardinality.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_UNMATCHED = "<unmatched>"  # 404s: never the raw path, which a client can vary forever


class _LiveCollector(Collector):
    """Values read at scrape time from the writer and the engine (attributes looked up with
    defaults, so a writer or pool lacking one reports nothing rather than failing)."""

    def __init__(self) -> None:
        self.writer: Any = None
        self.engine: Any = None
        self.cache: Any = None

    def collect(self) -> Iterator[Metric]:
        writer = self.writer
        if writer is not None:
            depth = getattr(writer, "queue_depth", None)
            if depth is None:
                queue = getattr(writer, "_queue", None)
                depth = queue.qsize() if queue is not None else None
            if depth is not None:
                yield GaugeMetricFamily(
                    "audit_recorder_queue_depth",
                    "Events waiting for the group-commit writer",
                    value=depth,
                )
            for attr, name, doc in (
                ("batches", "audit_recorder_batches", "Batches the writer committed"),
                ("events", "audit_recorder_events", "Events the writer committed"),
                ("failures", "audit_recorder_failures", "Events the writer could not store"),
            ):
                value = getattr(writer, attr, None)
                if isinstance(value, int):
                    yield CounterMetricFamily(name, doc, value=value)
        cache = self.cache
        if cache is not None:
            yield GaugeMetricFamily(
                "audit_cache_enabled",
                "1 while this process hears the database's change notices and caches",
                value=int(bool(getattr(cache, "enabled", False))),
            )
            for attr, name, doc in (
                ("hits", "audit_cache_hits", "Cache lookups answered from memory"),
                ("misses", "audit_cache_misses", "Cache lookups that went to the database"),
            ):
                value = getattr(cache, attr, None)
                if isinstance(value, int):
                    yield CounterMetricFamily(name, doc, value=value)
        pool = getattr(getattr(self.engine, "sync_engine", None), "pool", None)
        if pool is not None and callable(getattr(pool, "checkedout", None)):
            yield GaugeMetricFamily(
                "audit_db_pool_in_use", "Connections checked out", value=pool.checkedout()
            )
            size = getattr(pool, "size", None)
            if callable(size):
                yield GaugeMetricFamily(
                    "audit_db_pool_size", "Connections the pool keeps", value=size()
                )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "audit_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.batch_events = Histogram(
            "audit_recorder_batch_events",
            "Events per group-commit batch",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "audit_recorder_batch_seconds",
            "Time to store one group-commit batch",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry,
        )
        self.failed_batches = Counter(
            "audit_recorder_failed_batches",
            "Group-commit batches that could not be stored",
            registry=self.registry,
        )
        self._live = _LiveCollector()
        self.registry.register(self._live)
        self._children: dict[tuple[str, str, int], Any] = {}

    def watch(self, *, writer: Any = None, engine: Any = None, cache: Any = None) -> None:
        """Report this writer's, engine's and cache's state (made in the app's lifespan)."""
        self._live.writer = writer
        self._live.engine = engine
        self._live.cache = cache

    def observe_batch(self, rows: int, seconds: float, ok: bool) -> None:
        """The writer's `on_batch` callback."""
        self.batch_events.observe(rows)
        self.batch_seconds.observe(seconds)
        if not ok:
            self.failed_batches.inc()

    def count_request(self, method: str, route: str, status: int) -> None:
        key = (method, route, status)
        child = self._children.get(key)
        if child is None:
            # labels() parses and locks: do it once per distinct series, not per request
            child = self._children[key] = self.requests.labels(method, route, str(status))
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetricsMiddleware:
    """Counts each HTTP response by method, route template and the status the client got."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            route = scope.get("route")
            method = scope["method"]
            self.metrics.count_request(
                method if method in _METHODS else "OTHER",
                getattr(route, "path", None) or _UNMATCHED,
                status,
            )
