"""Hardening of POST /events and /events/batch: values the database cannot hold, dates that
overflow, absurd nesting and forged identities are all 422 naming the field, on both dialects."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Harness
from tests.ingestion.helpers import bearer, event, ingested, make_key


def _raw(body: dict[str, Any]) -> bytes:
    import json

    # allow_nan: Python writes NaN/Infinity, which json.loads (and so FastAPI) reads back.
    return json.dumps(body, allow_nan=True).encode()


async def _post(h: Harness, key: str, body: dict[str, Any], *, batch: bool = False) -> Any:
    payload = {"events": [event(), body]} if batch else body
    return await h.client.post(
        "/events/batch" if batch else "/events",
        headers={**bearer(key), "Content-Type": "application/json"},
        content=_raw(payload),
    )


def _locs(r: Any) -> list[list[Any]]:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    return [e["loc"] for e in r.json()["errors"]]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("batch", [False, True])
async def test_non_finite_numbers_in_metadata(h: Harness, value: float, batch: bool) -> None:
    key = await make_key(h)
    body = event(metadata={"score": 1, "nested": [{"deep": [1, value]}]})
    r = await _post(h, key, body, batch=batch)
    where = ["body", "events", 1, "metadata"] if batch else ["body", "metadata"]
    assert where in _locs(r)
    assert await ingested(h) == []


@pytest.mark.parametrize("batch", [False, True])
async def test_ip_longer_than_its_column(h: Harness, batch: bool) -> None:
    key = await make_key(h)
    # A valid scoped IPv6 address whose canonical text is over the 45-character column
    # (and under the 64 characters the field takes as input).
    body = event(ip="fe80::1%" + "z" * 42)
    r = await _post(h, key, body, batch=batch)
    where = ["body", "events", 1, "ip"] if batch else ["body", "ip"]
    assert where in _locs(r)
    assert await ingested(h) == []
    ok = await _post(h, key, event(ip="fe80::1%eth0"))
    assert ok.status_code == 201, ok.text


@pytest.mark.parametrize(
    "occurred_at",
    [
        "0001-01-01T00:00:00+14:00",
        "0001-01-01T13:59:59+14:00",
        "0001-01-01T00:00:00+00:01",
        "9999-12-31T23:59:59-14:00",
        "9999-12-31T23:00:00-01:00",
        "0001-01-01T00:00:00Z",
        "1899-12-31T23:59:59+00:00",
    ],
)
@pytest.mark.parametrize("batch", [False, True])
async def test_occurred_at_edges(h: Harness, occurred_at: str, batch: bool) -> None:
    key = await make_key(h)
    r = await _post(h, key, event(occurred_at=occurred_at), batch=batch)
    where = ["body", "events", 1, "occurred_at"] if batch else ["body", "occurred_at"]
    assert where in _locs(r)
    assert await ingested(h) == []


async def test_occurred_at_early_but_storable(h: Harness) -> None:
    key = await make_key(h)
    r = await _post(h, key, event(occurred_at="1970-01-01T00:00:00+14:00"))
    assert r.status_code == 201, r.text
    (e,) = await ingested(h)
    assert e.occurred_at.year == 1969


@pytest.mark.parametrize("depth", [9, 33, 400, 5000])
@pytest.mark.parametrize("kind", ["list", "dict"])
async def test_deep_nesting_is_refused_quietly(
    h: Harness, depth: int, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    key = await make_key(h)
    text = ('{"a":' * depth + "1" + "}" * depth) if kind == "dict" else "[" * depth + "]" * depth
    for field in ("metadata", "actor_id", "description"):
        body = event()
        raw = _raw(body).decode()
        marker = f'"{field}": '
        if field in body:
            start = raw.index(marker) + len(marker)
            end = raw.index(', "', start) if field != "idempotency_key" else len(raw) - 1
            raw = raw[:start] + (text if field != "metadata" else '{"x":' + text + "}") + raw[end:]
        else:
            raw = raw[:-1] + f', "{field}": {text}}}'
        r = await h.client.post(
            "/events",
            headers={**bearer(key), "Content-Type": "application/json"},
            content=raw.encode(),
        )
        assert r.status_code == 422, (field, r.status_code, r.text[:300])
        assert r.headers["content-type"] == "application/problem+json"
        loc = r.json()["errors"][0]["loc"]
        # Past the JSON parser's own recursion limit the body is refused as a whole (it never
        # becomes a value whose fields could be named).
        assert loc[:2] == ["body", field] if depth < 900 else loc[0] == "body", r.text[:300]
    assert await ingested(h) == []
    assert not [rec for rec in caplog.records if rec.levelname in ("ERROR", "CRITICAL")]
    assert "RecursionError" not in caplog.text


@pytest.mark.parametrize("depth", [400, 5000])
async def test_admin_bodies_nested_deep(h: Harness, depth: int) -> None:
    admin = await h.auth()
    deep = "[" * depth + "]" * depth
    for method, path in (
        ("PUT", "/admin/actions/exam.submitted/schema"),
        ("POST", "/admin/api-keys"),
        ("POST", "/login"),
    ):
        r = await h.client.request(
            method,
            path,
            headers={**admin, "Content-Type": "application/json"},
            content=('{"a": ' + deep + "}").encode(),
        )
        assert r.status_code == 422, (path, r.status_code, r.text[:200])


@pytest.mark.parametrize(
    "overrides,field",
    [
        ({"actor_type": "system"}, "actor_type"),
        ({"actor_id": "audit-service"}, "actor_id"),
        ({"actor_id": " Audit-Service "}, "actor_id"),
        ({"actor_name": "audit-service"}, "actor_name"),
    ],
)
@pytest.mark.parametrize("batch", [False, True])
async def test_cannot_pass_for_the_service_itself(
    h: Harness, overrides: dict[str, Any], field: str, batch: bool
) -> None:
    key = await make_key(h)
    r = await _post(h, key, event(**overrides), batch=batch)
    where = ["body", "events", 1, field] if batch else ["body", field]
    assert where in _locs(r)
    assert await ingested(h) == []


async def test_source_is_shown_in_listings_and_exports(h: Harness) -> None:
    key = await make_key(h)
    r = await _post(h, key, event(action="exam.started"))
    assert r.status_code == 201, r.text
    admin = await h.auth()
    listing = await h.client.get(
        "/admin/activity", headers=admin, params={"action": "exam.started"}
    )
    assert listing.status_code == 200, listing.text
    (item,) = listing.json()["items"]
    assert item["source"] == "exam-platform"
    one = await h.client.get(f"/admin/activity/{item['id']}", headers=admin)
    assert one.json()["source"] == "exam-platform"
    for fmt in ("json", "csv"):
        export = await h.client.get(
            "/admin/activity/export",
            headers=admin,
            params={"action": "exam.started", "format": fmt},
        )
        assert export.status_code == 200, export.text
        assert "exam-platform" in export.text and "source" in export.text
