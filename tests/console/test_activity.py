"""The activity page: the same rows as `/admin/activity` for the same parameters (both
dialects), paging and keyset navigation, XSS as inert text, bad input as pages, exports,
the detail drawer and permalink, and the live tail's stream."""

from __future__ import annotations

import csv
import io
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from audit_service.console import service as console_service
from tests.conftest import Harness
from tests.console.support import https_client, nav_links, row_ids, signed_in
from tests.integrity.helpers import seal
from tests.stats.helpers import post_events

NOW = datetime.now(UTC).replace(microsecond=0)
HOSTILE = [
    "<img src=x onerror=alert(1)>",
    '"><svg onload=alert(2)>',
    "javascript:alert(3)",
    "\u202etxt.exe",
    '"><script>alert(4)</script>',
]


def _event(i: int, **fields: Any) -> dict[str, Any]:
    return {
        "action": ("exam.submitted", "exam.graded", "course.viewed")[i % 3],
        "actor_id": f"u{i % 4}",
        "actor_name": f"user {i % 4}",
        "actor_role": ("student", "teacher")[i % 2],
        "outcome": ("success", "failure", "denied")[i % 3],
        "description": f"event number {i}" + (" urgent" if i % 5 == 0 else ""),
        "target_type": "exam" if i % 2 else "course",
        "target_id": str(i % 3),
        "ip": f"10.0.{i % 2}.{i}",
        "tenant_id": ("t1", "t2")[i % 2],
        "occurred_at": (NOW - timedelta(minutes=i)).isoformat(),
        **fields,
    }


async def _seed(h: Harness, n: int = 36) -> None:
    await post_events(h, "lms", [_event(i) for i in range(n)])
    await post_events(h, "hr", [_event(i, action="staff.hired") for i in range(n, n + 6)])


async def _api_ids(h: Harness, headers: dict[str, str], params: Any) -> dict[str, Any]:
    r = await h.client.get("/admin/activity", params=params, headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# Every request is recorded, so only filters that leave out the newest native events (the
# page's and the API call's own) can compare exactly; `last=true` covers "no filter".
FILTERS: list[list[tuple[str, str]]] = [
    [("source", "lms")],
    [("actor", "u1")],
    [("actor", "user 2")],
    [("action", "exam.submitted"), ("action", "exam.graded")],
    [("module", "exam")],
    [("outcome", "failure")],
    [("source", "hr")],
    [("tenant_id", "t2")],
    [("ip", "10.0.1.0/24")],
    [("ip", "10.0.0.4")],
    [("q", "URGENT")],
    [("target_type", "exam"), ("target_id", "1")],
    [("since", (NOW - timedelta(minutes=10)).isoformat()), ("until", NOW.isoformat())],
    [("source", "lms"), ("outcome", "success"), ("page_size", "10"), ("page", "2")],
    [("page_size", "10"), ("last", "true")],
]


async def test_the_page_shows_exactly_the_apis_rows_for_every_filter(h: Harness) -> None:
    await _seed(h)
    headers = await h.auth()
    async with https_client(h) as c:
        await signed_in(c)
        for params in FILTERS:
            page = await c.get("/console/activity", params=params)
            assert page.status_code == 200, (params, page.text)
            api = await _api_ids(h, headers, params)
            assert row_ids(page.text) == [e["id"] for e in api["items"]], params
            assert row_ids(page.text), params
            shown = re.search(r'id="showing">[^<]* of (\u2248?)([\d,]+)<', page.text)
            assert shown, params
            # Exact counts have a time budget on PostgreSQL (a loaded machine may estimate):
            # compare when both counted exactly. `last` counts the native events too.
            exact = not shown.group(1) and not api["total_is_estimate"]
            if exact and ("last", "true") not in params:
                assert int(shown.group(2).replace(",", "")) == api["total"], params


async def test_empty_form_fields_mean_not_given(h: Harness) -> None:
    await _seed(h, 6)
    async with https_client(h) as c:
        await signed_in(c)
        blank = "actor=&module=&outcome=&source=lms&tenant_id=&since=&until=&ip=&q=&page_size=20"
        a = await c.get("/console/activity?" + blank)
        b = await c.get("/console/activity?source=lms")
        assert a.status_code == 200
        assert row_ids(a.text) == row_ids(b.text)


async def test_pages_and_keyset_walks_match_the_api(h: Harness) -> None:
    await _seed(h, 50)
    headers = await h.auth()
    async with https_client(h) as c:
        await signed_in(c)
        # Older: five pages forward from the first, following the page's own links.
        seen: list[int] = []
        url = "/console/activity?source=lms&page_size=10"
        api_params: dict[str, Any] = {"source": "lms", "page_size": 10}
        api_seen: list[int] = []
        for _ in range(5):
            page = await c.get(url)
            seen += row_ids(page.text)
            api = await _api_ids(h, headers, api_params)
            api_seen += [e["id"] for e in api["items"]]
            api_params = {"source": "lms", "page_size": 10, "cursor": api["next_cursor"]}
            if "next" not in nav_links(page.text):
                break
            url = nav_links(page.text)["next"]
        assert seen == api_seen and len(seen) == len(set(seen)) == 50
        # Newer: from the last page back, by keyset cursors.
        page = await c.get("/console/activity?source=lms&page_size=10&last=true")
        back = row_ids(page.text)
        while "prev" in nav_links(page.text) and nav_links(page.text)["prev"] != "":
            link = nav_links(page.text)["prev"]
            assert "cursor=" in link
            page = await c.get(link)
            back = row_ids(page.text) + back
        assert back == seen


async def test_showing_and_jump_to_page(h: Harness) -> None:
    await _seed(h, 30)
    async with https_client(h) as c:
        await signed_in(c)
        page = await c.get("/console/activity?source=lms&page_size=10&page=2")
        assert "Showing 11\u201320 of 30" in page.text
        assert 'name="page" type="number" min="1" max="3"' in page.text
        assert '<input type="hidden" name="source" value="lms">' in page.text


async def test_hostile_values_render_as_inert_text(h: Harness) -> None:
    long_agent = "Mozilla/5.0 " + "A" * 10_000
    events = [
        _event(
            i,
            actor_name=bad[:200],
            description=bad,
            target_id=bad[:200],
            user_agent=bad + long_agent if i == 0 else bad,
            metadata={"note": bad, bad[:50]: [bad]},
            action="exam.submitted",
        )
        for i, bad in enumerate(HOSTILE)
    ]
    await post_events(h, "lms", events)
    # And through the recorder: a hostile User-Agent of a real request.
    await h.client.get("/healthz")
    await h.client.get("/me", headers={"User-Agent": '"><script>alert(5)</script>'})
    async with https_client(h) as c:
        await signed_in(c)
        pages = [await c.get("/console/activity")]
        for e in await h.events(source="lms"):
            pages.append(await c.get(f"/console/activity/{e.id}"))
            pages.append(await c.get(f"/console/activity/{e.id}/drawer"))
        native = (await h.events(action="auth.profile_viewed"))[-1]
        pages.append(await c.get(f"/console/activity/{native.id}"))
        for page in pages:
            assert page.status_code == 200, page.text
            html = page.text
            for raw in ("<img src=x", "<svg onload", "<script>alert", 'href="javascript:'):
                assert raw not in html, (raw, page.url)
        detail = pages[1].text
        assert "&lt;img src=x onerror=alert(1)&gt;" in detail or "&lt;" in detail
        assert "&lt;script&gt;alert(5)&lt;/script&gt;" in pages[-1].text


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("colour=red", "colour"),
        ("since=yesterday", "since"),
        ("cursor=forged-cursor", "cursor"),
        ("page_size=7", "page_size"),
        ("ip=10.0.0.999", "ip"),
    ],
)
async def test_bad_input_is_a_page_with_the_apis_problem(
    h: Harness, query: str, field: str
) -> None:
    headers = await h.auth()
    api = await h.client.get("/admin/activity?" + query, headers=headers)
    assert api.status_code == 422
    async with https_client(h) as c:
        await signed_in(c)
        page = await c.get("/console/activity?" + query)
        assert page.status_code == 422
        assert page.headers["content-type"].startswith("text/html")
        assert "Validation Error" in page.text and f"query.{field}" in page.text
        assert "Traceback" not in page.text
        api_fields = {".".join(map(str, e["loc"])) for e in api.json()["errors"]}
        assert f"query.{field}" in api_fields


async def test_missing_event_is_a_404_page(h: Harness) -> None:
    async with https_client(h) as c:
        await signed_in(c)
        for ref in ("999999", str(uuid.uuid4())):
            page = await c.get(f"/console/activity/{ref}")
            assert page.status_code == 404 and "No event with id" in page.text
        page = await c.get("/console/activity/not-an-id")
        assert page.status_code == 422 and "Validation Error" in page.text


async def test_detail_has_every_field_pivots_surroundings_and_proof_status(h: Harness) -> None:
    await _seed(h, 45)
    events = await h.events(source="lms")
    middle = sorted(events, key=lambda e: (e.occurred_at, e.id))[22]
    async with https_client(h) as c:
        await signed_in(c)
        page = await c.get(f"/console/activity/{middle.id}")
        html = page.text
        assert page.status_code == 200
        for value in (str(middle.event_id), middle.action, middle.actor_name, middle.ip):
            assert str(value) in html
        assert "not yet sequenced" in html
        assert "?actor=" in html and "?ip=" in html and "target_type=" in html
        ids = [int(i) for i in re.findall(r'data-id="(\d+)"', html)]
        assert len(ids) == 40 and middle.id not in ids
        assert '<pre class="json">' in html
        await seal(h)
        page = await c.get(f"/console/activity/{middle.id}/drawer")
        assert "Included at log position" in page.text
        assert 'id="drawer-title"' in page.text
    viewed = (await h.events(action="activity.viewed"))[-1]
    assert viewed.target_id == str(middle.id) and viewed.event_metadata["via"] == "console"


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "json", "xlsx"])
async def test_export_streams_the_current_filters_like_the_api(h: Harness, fmt: str) -> None:
    await _seed(h, 12)
    headers = await h.auth()
    async with https_client(h) as c:
        await signed_in(c)
        page = await c.get("/console/activity?source=lms&outcome=failure")
        link = next(
            href.replace("&amp;", "&")
            for href in re.findall(r'href="(/console/activity/export\?[^"]+)"', page.text)
            if f"format={fmt}" in href
        )
        r = await c.get(link)
        assert r.status_code == 200, r.text
        api = await h.client.get(
            "/admin/activity/export",
            params={"source": "lms", "outcome": "failure", "format": fmt},
            headers=headers,
        )
        assert r.headers["x-export-row-count"] == api.headers["x-export-row-count"] == "4"
        if fmt == "csv":
            assert len(list(csv.DictReader(io.StringIO(r.text)))) == 4
    exported = (await h.events(action="activity.exported"))[-2]
    assert exported.actor_name == "admin" and exported.event_metadata["via"] == "console"
    assert exported.event_metadata["row_count"] == 4


async def test_live_tail_resumes_with_no_gap_or_duplicate(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console_service, "TAIL_SECONDS", 0.0)
    await _seed(h, 3)
    await seal(h)
    async with https_client(h) as c:
        await signed_in(c)
        page = await c.get("/console/activity?source=lms")
        after = int(re.search(r'data-after="(-?\d+)"', page.text).group(1))  # type: ignore[union-attr]
        await post_events(h, "lms", [_event(i, description=f"new {i}") for i in range(5)])
        await post_events(h, "hr", [_event(9, description="other source")])
        await seal(h)

        async def stream(**headers: str) -> list[tuple[int, str]]:
            r = await c.get(f"/console/activity/stream?source=lms&after={after}", headers=headers)
            assert r.status_code == 200, r.text
            assert r.headers["content-type"].startswith("text/event-stream")
            out = []
            for block in r.text.split("\n\n"):
                fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
                if fields.get("event") == "row":
                    out.append((int(fields["id"]), fields["data"]))
            return out

        first = await stream()
        assert len(first) == 5 and all("other source" not in d for _, d in first)
        # A reconnect from the third event: exactly the two after it.
        resumed = await stream(**{"Last-Event-ID": str(first[2][0])})
        assert [p for p, _ in resumed] == [p for p, _ in first[3:]]
        bad = await c.get("/console/activity/stream", headers={"Last-Event-ID": "x"})
        assert bad.status_code == 422
