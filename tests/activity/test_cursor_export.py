"""Keyset cursors, estimated totals and streaming exports (issue: query at scale)."""

from __future__ import annotations

import csv
import gzip
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from openpyxl import load_workbook
from sqlalchemy import text

from audit_service.activity import export
from audit_service.audit_log import repository
from audit_service.audit_log.context import system_event
from audit_service.kit.net import ip_key, parse_ip
from tests.conftest import Harness, make_settings, start_harness

BASE = datetime(2026, 1, 1, tzinfo=UTC)


async def seed(h: Harness, n: int, **overrides: Any) -> None:
    rows = []
    for i in range(n):
        row = system_event("seed.event", "seed", f"event number {i}")
        ip = f"10.0.{i // 250}.{i % 250}"
        row.update(
            occurred_at=BASE + timedelta(minutes=i // 2),
            actor_id=str(i % 7),
            actor_name=f"user{i % 7}",
            ip=ip,
            ip_bytes=ip_key(parse_ip(ip)),
            target_id=str(i),
        )
        row.update(overrides)
        rows.append(row)
    async with h.app.state.sessionmaker() as session:
        for start in range(0, n, 500):
            await repository.insert_events(session, rows[start : start + 500])
        await session.commit()


async def _walk(h: Harness, headers: dict[str, str], params: str) -> list[int]:
    seen: list[int] = []
    r = await h.client.get(f"/admin/activity?{params}", headers=headers)
    while True:
        assert r.status_code == 200, r.text
        body = r.json()
        seen += [e["target_id"] for e in body["items"]]
        if not body["next_cursor"]:
            return seen
        r = await h.client.get(
            f"/admin/activity?{params}&cursor={body['next_cursor']}", headers=headers
        )


async def test_cursor_walk_matches_offset_order_without_gaps(h: Harness) -> None:
    headers = await h.auth()
    await seed(h, 95)  # occurred_at ties in pairs: the id breaks them
    ids = await _walk(h, headers, "action=seed.event&page_size=10")
    assert ids == [str(i) for i in range(94, -1, -1)]
    # By actor (id or name, merged from two index scans), same guarantees.
    ids = await _walk(h, headers, "action=seed.event&actor=user3&page_size=10")
    assert ids == [str(i) for i in range(94, -1, -1) if i % 7 == 3]


async def test_prev_cursor_goes_back_and_last_page_is_the_oldest(h: Harness) -> None:
    headers = await h.auth()
    await seed(h, 45)
    first = (
        await h.client.get("/admin/activity?action=seed.event&page_size=10", headers=headers)
    ).json()
    assert first["prev_cursor"] is None and first["page"] == 1
    second = (
        await h.client.get(
            f"/admin/activity?action=seed.event&page_size=10&cursor={first['next_cursor']}",
            headers=headers,
        )
    ).json()
    assert second["page"] is None
    back = (
        await h.client.get(
            f"/admin/activity?action=seed.event&page_size=10&cursor={second['prev_cursor']}",
            headers=headers,
        )
    ).json()
    assert [e["id"] for e in back["items"]] == [e["id"] for e in first["items"]]
    assert back["prev_cursor"] is None
    last = (
        await h.client.get(
            "/admin/activity?action=seed.event&page_size=10&last=true", headers=headers
        )
    ).json()
    assert [e["target_id"] for e in last["items"]] == [str(i) for i in range(9, -1, -1)]
    assert last["next_cursor"] is None and last["prev_cursor"]
    assert last["total"] == 45 and last["total_is_estimate"] is False
    event = await h.last_event()
    assert event.event_metadata["navigation"] == "last"


@pytest.mark.parametrize("cursor", ["garbage", "abc.def", "x" * 300])
async def test_forged_cursors_are_refused(h: Harness, cursor: str) -> None:
    headers = await h.auth()
    r = await h.client.get(f"/admin/activity?cursor={cursor}", headers=headers)
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["query", "cursor"]


async def test_cursor_is_bound_to_its_filters_and_signature(h: Harness) -> None:
    headers = await h.auth()
    await seed(h, 30)
    body = (
        await h.client.get("/admin/activity?action=seed.event&page_size=10", headers=headers)
    ).json()
    token = body["next_cursor"]
    r = await h.client.get(f"/admin/activity?action=auth.login&cursor={token}", headers=headers)
    assert r.status_code == 422 and "other filters" in r.json()["detail"]
    payload, signature = token.split(".")
    tampered = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + signature
    r = await h.client.get(f"/admin/activity?action=seed.event&cursor={tampered}", headers=headers)
    assert r.status_code == 422


@pytest.mark.parametrize(
    "params",
    ["page=1001&page_size=10", "page=1000000000", "page=2&last=true", "last=true&cursor=abc"],
)
async def test_deep_offsets_and_mixed_navigation_are_refused(h: Harness, params: str) -> None:
    headers = await h.auth()
    r = await h.client.get(f"/admin/activity?{params}", headers=headers)
    assert r.status_code == 422, r.text


async def test_total_is_exact_up_to_the_cap(h: Harness) -> None:
    headers = await h.auth()
    await seed(h, 120)
    body = (await h.client.get("/admin/activity?action=seed.event", headers=headers)).json()
    assert (body["total"], body["total_is_estimate"]) == (120, False)


async def test_total_becomes_an_estimate_past_the_cap_on_postgres(pg_only_url: str) -> None:
    async for h in start_harness(make_settings(pg_only_url)):
        await seed(h, 10_050)
        async with h.engine.begin() as conn:
            await conn.execute(text("ANALYZE audit_event"))
        headers = await h.auth()
        body = (await h.client.get("/admin/activity?action=seed.event", headers=headers)).json()
        assert body["total_is_estimate"] is True
        assert 10_001 <= body["total"] <= 20_000
        narrow = (await h.client.get("/admin/activity?actor=user3", headers=headers)).json()
        assert (narrow["total"], narrow["total_is_estimate"]) == (1436, False)


def _export_headers(r: Any) -> dict[str, str]:
    return {k: v for k, v in r.headers.items() if k.startswith("x-export-")}


async def test_csv_export_neutralizes_formulas_and_carries_metadata(h: Harness) -> None:
    headers = await h.auth("ann", role="auditor")
    await seed(h, 3, description='=HYPERLINK("http://evil","x")')
    await seed(h, 2, description='-2+3, with "quotes"\nand a newline')
    r = await h.client.get(
        "/admin/activity/export?action=seed.event&format=csv&bom=true", headers=headers
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    meta = _export_headers(r)
    assert meta["x-export-row-count"] == "5" and meta["x-export-exported-by"] == "ann"
    assert json.loads(meta["x-export-filters"]) == {"action": ["seed.event"]}
    assert r.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert len(rows) == 5
    descriptions = {row["description"] for row in rows}
    assert descriptions == {
        '\'=HYPERLINK("http://evil","x")',
        '\'-2+3, with "quotes"\nand a newline',
    }
    header = r.content.decode("utf-8-sig").split("\n", 1)[0]
    assert header == ",".join(repository.EXPORT_COLUMNS)
    event = await h.last_event()
    assert (event.action, event.event_metadata["row_count"], event.actor_name) == (
        "activity.exported",
        5,
        "ann",
    )


async def test_csv_comment_block_and_gzip(h: Harness) -> None:
    headers = await h.auth()
    await seed(h, 4)
    r = await h.client.get(
        "/admin/activity/export?action=seed.event&comments=true&gzip=true", headers=headers
    )
    assert r.headers["content-type"] == "application/gzip"
    assert r.headers["content-disposition"].endswith('.csv.gz"')
    text = gzip.decompress(r.content).decode()
    comment_lines = [line for line in text.splitlines() if line.startswith("#")]
    assert any("row_count: 4" in line for line in comment_lines)
    body = [line for line in text.splitlines() if not line.startswith("#")]
    assert body[0].startswith("id,event_id,occurred_at") and len(body) == 5


async def test_json_and_ndjson_exports(h: Harness) -> None:
    headers = await h.auth()
    await seed(h, 7)
    r = await h.client.get("/admin/activity/export?action=seed.event&format=json", headers=headers)
    document = r.json()
    assert document["export"]["row_count"] == 7 and document["export"]["exported_by"] == "admin"
    assert [e["target_id"] for e in document["events"]] == [str(i) for i in range(6, -1, -1)]
    assert document["events"][0]["metadata"] == {}
    r = await h.client.get(
        "/admin/activity/export?action=seed.event&format=ndjson", headers=headers
    )
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert len(lines) == 7 and lines[-1]["target_id"] == "0"
    assert _export_headers(r)["x-export-row-count"] == "7"
    empty = await h.client.get("/admin/activity/export?action=nothing&format=json", headers=headers)
    assert empty.json()["events"] == []


async def test_xlsx_export_has_metadata_sheet_and_text_not_formulas(h: Harness) -> None:
    headers = await h.auth()
    await seed(h, 3, description="=1+1")
    r = await h.client.get("/admin/activity/export?action=seed.event&format=xlsx", headers=headers)
    assert r.status_code == 200
    book = load_workbook(io.BytesIO(r.content))
    assert book.sheetnames == ["metadata", "events"]
    meta = {row[0]: row[1] for row in book["metadata"].iter_rows(values_only=True)}
    assert meta["row_count"] == "3"
    events = list(book["events"].iter_rows(values_only=True))
    header = events[0]
    assert len(events) == 4
    assert events[1][header.index("description")] == "=1+1"  # a string cell, not a formula
    assert book["events"].cell(row=2, column=header.index("description") + 1).data_type == "s"


async def test_export_permissions_and_bad_input(h: Harness) -> None:
    assert (await h.client.get("/admin/activity/export")).status_code == 401
    user = await h.auth("bob", role="user")
    assert (await h.client.get("/admin/activity/export", headers=user)).status_code == 403
    assert (await h.last_event()).outcome == "denied"
    admin = await h.auth()
    for params in (
        "format=pdf",
        "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
        "ip=10.0.0.0/99",
        "page=2",
    ):
        r = await h.client.get(f"/admin/activity/export?{params}", headers=admin)
        assert r.status_code == 422, params


async def test_xlsx_continues_on_a_next_sheet_past_the_row_limit(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export, "XLSX_MAX_ROWS", 3)  # header + 2 rows a sheet
    headers = await h.auth()
    await seed(h, 5)
    r = await h.client.get("/admin/activity/export?action=seed.event&format=xlsx", headers=headers)
    book = load_workbook(io.BytesIO(r.content))
    assert book.sheetnames == ["metadata", "events", "events 2", "events 3"]
    rows = [row for name in book.sheetnames[1:] for row in book[name].iter_rows(values_only=True)]
    header = rows[0]
    data = [row for row in rows if row != header]
    assert [row[header.index("target_id")] for row in data] == ["4", "3", "2", "1", "0"]


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
async def test_unfiltered_export_announces_exactly_the_rows_it_sends(h: Harness, fmt: str) -> None:
    """Count and stream read one snapshot, on SQLite too: the export's own
    `activity.exported` event, committed before the body streams, is in neither."""
    headers = await h.auth()
    await seed(h, 3)
    for _ in range(2):
        r = await h.client.get(f"/admin/activity/export?format={fmt}", headers=headers)
        assert r.status_code == 200
        lines = [line for line in r.text.splitlines() if line]
        sent = len(lines) - (1 if fmt == "csv" else 0)
        assert int(_export_headers(r)["x-export-row-count"]) == sent
