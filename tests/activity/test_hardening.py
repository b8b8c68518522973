"""Issue 7 (hardening) for the activity room: the UUID lookup, bad input that used to be a
500 or silently misread, CORS, offline docs and the export cap."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select
from starlette.requests import ClientDisconnect

from audit_service.activity import service
from audit_service.activity.endpoints import ExportResponse
from audit_service.activity.schemas import ActivityExport, ExportQuery
from audit_service.audit_log.models import AuditEvent
from audit_service.kit.pagination import InvalidCursor, _sign, decode_cursor
from tests.activity.test_cursor_export import seed
from tests.conftest import Harness, make_settings, start_harness

# --- GET /admin/activity/{event_id}: the public UUID --------------------------------------


async def test_single_event_by_its_public_uuid_and_by_id(h: Harness) -> None:
    headers = await h.auth()
    await seed(h, 3)
    async with h.app.state.sessionmaker() as session:
        row = (
            await session.scalars(select(AuditEvent).filter_by(action="seed.event", target_id="1"))
        ).one()
    by_uuid = await h.client.get(f"/admin/activity/{row.event_id}", headers=headers)
    assert by_uuid.status_code == 200, by_uuid.text
    assert by_uuid.json()["id"] == row.id and by_uuid.json()["target_id"] == "1"
    # Upper case is the same UUID; the integer id keeps working.
    upper = await h.client.get(f"/admin/activity/{str(row.event_id).upper()}", headers=headers)
    assert upper.json()["id"] == row.id
    by_id = await h.client.get(f"/admin/activity/{row.id}", headers=headers)
    assert by_id.json()["event_id"] == str(row.event_id)
    unknown = await h.client.get(
        "/admin/activity/00000000-0000-4000-8000-000000000000", headers=headers
    )
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    bad = await h.client.get("/admin/activity/not-a-uuid-nor-id", headers=headers)
    assert bad.status_code == 422
    assert [e["loc"] for e in bad.json()["errors"]] == [["path", "event_id"]]


# --- cursors: forged, oversized, mistyped -------------------------------------------------


def _signed(body: Any, key: str) -> str:
    """A cursor with a valid signature around any payload: what a leaked key (or a bug of
    ours) could produce, so decoding must survive whatever is inside."""
    payload = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    return f"{payload}.{_sign(payload, key)}"


@pytest.mark.parametrize(
    "cursor",
    ["é", "abc.dé", "ü.ü", "\u2603x.y", "a.\U0001f600"],
    ids=["e-acute", "accent-in-signature", "both", "snowman", "emoji"],
)
async def test_non_ascii_forged_cursor_is_422(h: Harness, cursor: str) -> None:
    headers = await h.auth()
    r = await h.client.get("/admin/activity", params={"cursor": cursor}, headers=headers)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == ["query", "cursor"]


@pytest.mark.parametrize(
    "body",
    [
        ["2026-01-01T00:00:00+00:00", 2**63, "next", "s"],
        ["2026-01-01T00:00:00+00:00", 10**30, "next", "s"],
        ["2026-01-01T00:00:00+00:00", 0, "next", "s"],
        ["2026-01-01T00:00:00+00:00", True, "next", "s"],
        ["2026-01-01T00:00:00+00:00", "12", "next", "s"],
        ["2026-01-01T00:00:00+00:00", 1.5, "next", "s"],
        ["2026-01-01T00:00:00+00:00", None, "next", "s"],
        [20260101, 1, "next", "s"],
        ["0001-01-01T00:00:00+14:00", 1, "next", "s"],
        ["2026-01-01T00:00:00+00:00", 1, "next", ["not", "a", "scope"]],
        {"a": 1},
        "text",
    ],
)
async def test_signed_cursor_with_bad_contents_is_422(h: Harness, body: Any) -> None:
    key = h.app.state.signing_key
    with pytest.raises(InvalidCursor):
        decode_cursor(_signed(body, key), key)
    headers = await h.auth()
    r = await h.client.get(
        "/admin/activity", params={"cursor": _signed(body, key)}, headers=headers
    )
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == ["query", "cursor"]


# --- since / until ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["1700000000", "1700000000.5", "-1", "0", "1e9", " 1700000000 ", "+17"]
)
@pytest.mark.parametrize("field", ["since", "until"])
async def test_unix_numbers_are_not_dates(h: Harness, field: str, value: str) -> None:
    headers = await h.auth()
    for path in ("/admin/activity", "/admin/activity/export"):
        r = await h.client.get(path, params={field: value}, headers=headers)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["errors"][0]["loc"] == ["query", field]


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("0001-01-01T00:00:00+00:00", 200),
        ("0001-01-01T00:00:00Z", 200),
        ("9999-12-31T23:59:59.999999Z", 200),
        ("9999-12-31T23:59:59+14:00", 200),
        ("0001-01-01T00:00:00+14:00", 422),  # before year 1 in UTC
        ("9999-12-31T23:59:59-14:00", 422),  # after year 9999 in UTC
        ("2026-02-30T00:00:00Z", 422),
        ("2026-01-01T24:00:01Z", 422),
    ],
)
@pytest.mark.parametrize("field", ["since", "until"])
async def test_occurred_at_edges_in_filters(
    h: Harness, field: str, value: str, status: int
) -> None:
    headers = await h.auth()
    await seed(h, 3)
    r = await h.client.get("/admin/activity", params={field: value}, headers=headers)
    assert r.status_code == status, r.text
    if status == 200:
        seeded = [e for e in r.json()["items"] if e["action"] == "seed.event"]
        # Year 1 is before every row and year 9999 after every row.
        assert len(seeded) == (3 if (field == "since") == value.startswith("0001") else 0)
    else:
        assert r.json()["errors"][0]["loc"] == ["query", field]


# --- CORS -----------------------------------------------------------------------------------

ORIGIN = "https://console.example.com"
PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "GET",
    "Access-Control-Request-Headers": "authorization",
}


async def test_cors_is_off_by_default(h: Harness) -> None:
    headers = await h.auth()
    r = await h.client.get("/admin/activity", headers={**headers, "Origin": ORIGIN})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers
    r = await h.client.options("/admin/activity", headers=PREFLIGHT)
    assert r.status_code == 405


async def test_cors_preflight_is_answered_and_not_recorded(db_url: str) -> None:
    settings = make_settings(db_url, cors_origins=f"{ORIGIN}, http://localhost:5173")
    async for h in start_harness(settings):
        headers = await h.auth()
        before = await h.count_events()
        r = await h.client.options("/admin/activity", headers=PREFLIGHT)
        assert r.status_code == 200, r.text
        assert r.headers["access-control-allow-origin"] == ORIGIN
        assert "GET" in r.headers["access-control-allow-methods"]
        assert await h.count_events() == before  # no 405 event for the preflight
        # The real request carries the CORS headers and is recorded as usual.
        r = await h.client.get("/admin/activity", headers={**headers, "Origin": ORIGIN})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == ORIGIN
        assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
        assert (await h.last_event()).action == "activity.viewed"
        # Another origin gets nothing that lets a browser read the answer.
        other = await h.client.options(
            "/admin/activity", headers={**PREFLIGHT, "Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize(
    "bad", ["console.example.com", "https://x.example/", "ftp://x", "https://"]
)
def test_cors_origins_must_be_origins(bad: str) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        make_settings("sqlite+aiosqlite:///:memory:", cors_origins=bad)


# --- /docs without a CDN ----------------------------------------------------------------------


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_reference_no_external_url_and_their_assets_load(h: Harness, page: str) -> None:
    r = await h.client.get(page)
    assert r.status_code == 200
    html = r.text
    assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.I), html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(assets) >= 2, html
    for url in assets:
        asset = await h.client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000, url
    if page == "/docs":
        assert "/docs/assets/swagger-ui-bundle.js" in assets
        assert (await h.client.get("/docs/oauth2-redirect")).status_code == 200
    # Static files are not activity: loading the docs records nothing.
    assert not [e.path for e in await h.events() if (e.path or "").startswith("/docs")]


# --- exports: a cap per process, and a clean close ---------------------------------------------


async def _hold_export(h: Harness, headers: dict[str, str]) -> tuple[asyncio.Task[None], Any]:
    """Start an export through the real app whose client stops reading after the response
    start: it holds its slot and its connection until `release` is set."""
    release = asyncio.Event()
    started = asyncio.Event()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/admin/activity/export",
        "raw_path": b"/admin/activity/export",
        "root_path": "",
        "query_string": b"format=csv",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        + [(b"host", b"testserver")],
        "client": ("203.0.113.7", 40001),
        "server": ("testserver", 80),
        "app": h.app,
    }

    async def receive() -> dict[str, Any]:
        await release.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 200
            started.set()
            await release.wait()

    task = asyncio.create_task(h.app(scope, receive, send))
    await asyncio.wait_for(started.wait(), 10)
    return task, release


async def test_concurrent_exports_are_capped_with_retry_after(db_url: str) -> None:
    async for h in start_harness(make_settings(db_url, max_concurrent_exports=2)):
        headers = await h.auth()
        await seed(h, 5)
        held = [await _hold_export(h, headers) for _ in range(2)]
        r = await h.client.get("/admin/activity/export", headers=headers)
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert int(r.headers["retry-after"]) >= 1
        assert "export" in r.json()["detail"]
        # Other requests still get a connection while the exports hold theirs.
        assert (await h.client.get("/admin/activity", headers=headers)).status_code == 200
        assert await h.events(action="activity.exported", status_code=503), "refusal recorded"
        for task, release in held:
            release.set()
            await asyncio.wait_for(task, 10)
        # The slots come back once the held exports end.
        assert service.export_slots(h.app).in_use == 0
        r = await h.client.get("/admin/activity/export", headers=headers)
        assert r.status_code == 200 and r.text.count("\n") >= 6


async def test_export_closes_its_body_before_its_connection(h: Harness) -> None:
    """A client gone mid-stream: the generators are closed (their cleanup runs now, on the
    export's own connection), not left for the garbage collector after the connection has
    gone back to the pool."""
    await seed(h, 3000)
    closed_order: list[str] = []
    opened = await service.open_export(
        h.engine,
        _NoAudit(),  # type: ignore[arg-type]
        ExportQuery(format="csv"),
        "tester",
        service.ExportSlots(1),
    )
    real_close = opened.close

    async def close() -> None:
        closed_order.append(
            "body still open" if response.body_iterator.ag_frame is not None else "body closed"
        )
        await real_close()

    opened.close = close  # type: ignore[method-assign]
    response = ExportResponse(opened)
    sent: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            sent.append(len(message.get("body", b"")))
            if len(sent) == 2:
                raise OSError("client gone")

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    scope = {"type": "http", "asgi": {"spec_version": "2.4"}, "method": "GET"}
    with pytest.raises(ClientDisconnect):
        await response(scope, receive, send)
    assert closed_order == ["body closed"]
    assert isinstance(response.body_iterator, AsyncIterator)


class _NoAudit:
    """open_export only describes the event; this test calls the service directly."""

    def describe(self, **_: Any) -> None:
        pass


def test_export_slots_are_given_back_once() -> None:
    slots = service.ExportSlots(1)
    slots.take()
    with pytest.raises(Exception, match="already running") as refused:
        slots.take()
    assert refused.value.headers["Retry-After"] == str(service.EXPORT_RETRY_AFTER)  # type: ignore[attr-defined]
    slots.give_back()
    slots.take()
    assert slots.in_use == 1


# Filtered to the seeded rows: an unfiltered SQLite export also counts its own event
# (the snapshot item of another workstream), which is not what this test is about.
@pytest.mark.parametrize(
    "params",
    [
        {"format": "json", "action": "seed.event"},
        {"format": "json", "action": "seed.event", "ip": "10.0.0.0/8"},
    ],
)
async def test_json_export_matches_its_declared_schema(h: Harness, params: dict[str, str]) -> None:
    headers = await h.auth()
    await seed(h, 4)
    r = await h.client.get("/admin/activity/export", params=params, headers=headers)
    assert r.status_code == 200, r.text
    document = ActivityExport.model_validate_json(r.content, strict=False)
    assert document.export.row_count == len(document.events) == 4
    assert int(r.headers["x-export-row-count"]) == document.export.row_count
