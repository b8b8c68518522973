"""GET /metrics: Prometheus text with requests by route template and status, the writer's
counters and queue depth, pool use; not recorded; behind AUDIT_METRICS_TOKEN when set."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from audit_service.core.metrics import Metrics, RequestMetricsMiddleware
from tests.conftest import Harness, make_settings, start_harness

harness = asynccontextmanager(start_harness)


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_metrics_count_routes_writer_and_pool(h: Harness) -> None:
    if h.engine.dialect.name == "postgresql":  # the cache's listener connects at start
        for _ in range(500):
            if h.app.state.cache.enabled:
                break
            await asyncio.sleep(0.01)
    headers = await h.auth()
    for _ in range(3):
        assert (await h.client.get("/me", headers=headers)).status_code == 200
    assert (await h.client.get("/admin/users/999999", headers=headers)).status_code == 404
    assert (await h.client.get("/nowhere/12345")).status_code == 404
    assert (await h.client.request("UNSUBSCRIBE", "/me")).status_code in (401, 405, 503)
    before = await h.count_events()

    r = await h.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    s = _samples(r.text)
    assert _value(s, "audit_http_requests_total", method="GET", route="/me", status="200") == 3
    assert (
        _value(
            s,
            "audit_http_requests_total",
            method="GET",
            route="/admin/users/{user_id}",
            status="404",
        )
        == 1
    )
    # no raw paths or client-chosen methods as labels: they would grow without bound
    assert _value(s, "audit_http_requests_total", method="GET", route="<unmatched>", status="404")
    assert not any("/nowhere" in str(labels) for _, labels in s)
    assert not any("UNSUBSCRIBE" in str(labels) for _, labels in s)
    assert (_value(s, "audit_recorder_events_total") or 0) >= 2  # the failed requests' events
    assert (_value(s, "audit_recorder_batches_total") or 0) >= 1
    assert _value(s, "audit_recorder_queue_depth") == 0
    assert _value(s, "audit_db_pool_in_use") is not None
    assert _value(s, "audit_db_pool_size") is not None
    # The cache: never used on SQLite; on PostgreSQL each GET /me looked its user up there.
    assert _value(s, "audit_cache_enabled") == (1 if h.app.state.cache.enabled else 0)
    lookups = (_value(s, "audit_cache_hits_total") or 0) + (
        _value(s, "audit_cache_misses_total") or 0
    )
    if h.engine.dialect.name == "postgresql":
        assert lookups >= 3
    else:
        assert _value(s, "audit_cache_enabled") == 0 and lookups == 0
    # /metrics itself is not recorded
    assert await h.count_events() == before


async def test_batch_callback_feeds_histograms() -> None:
    metrics = Metrics()
    metrics.observe_batch(7, 0.003, True)
    metrics.observe_batch(1, 0.2, False)
    s = _samples(metrics.render().decode())
    assert _value(s, "audit_recorder_batch_events_count") == 2
    assert _value(s, "audit_recorder_batch_events_sum") == 8
    assert _value(s, "audit_recorder_batch_seconds_bucket", le="0.005") == 1
    assert _value(s, "audit_recorder_failed_batches_total") == 1


async def test_metrics_token(db_url: str) -> None:
    token = "metrics-token-" + "m" * 20
    async with harness(make_settings(db_url, metrics_token=token)) as h:
        before = await h.count_events()
        r = await h.client.get("/metrics")
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        bad = {"Authorization": "Bearer wrong"}
        assert (await h.client.get("/metrics", headers=bad)).status_code == 401
        weird = {"Authorization": "Bearer \u00e9\u00e9".encode()}  # non-ASCII: no 500
        assert (await h.client.get("/metrics", headers=weird)).status_code == 401
        r = await h.client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
        assert "audit_http_requests_total" in r.text
        assert await h.count_events() == before  # refused scrapes are not recorded either


async def test_request_counting_overhead_is_a_few_microseconds() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(_message: Any) -> None:
        return None

    async def receive() -> Any:
        return {"type": "http.request"}

    wrapped = RequestMetricsMiddleware(app, Metrics())
    scope = {"type": "http", "method": "GET", "path": "/me"}
    n = 20_000

    async def run(target: Any) -> float:
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(n):
                await target(scope, receive, send)
            best = min(best, (time.perf_counter() - start) / n)
        return best

    await asyncio.sleep(0)
    overhead = await run(wrapped) - await run(app)
    print(f"request metrics overhead: {overhead * 1e6:.2f} µs per request")
    assert overhead < 10e-6
