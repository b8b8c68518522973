"""The activity pages in a real browser (Debian chromium, one server and one browser for the
module): sign-in with no console error or CSP violation, filters that survive reload,
back/forward and a new context, five pages Older vs the API, the drawer by keyboard, axe on
the activity and detail pages, the live tail (≤ 2 s, and a dropped stream resumes with no gap
or duplicate), an export from the page, and phone / tablet / desktop layouts."""

from __future__ import annotations

import asyncio
import csv
import io
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from audit_service.console import service as console_service
from tests.console.conftest import Api, Browsing, unique

pytestmark = pytest.mark.slow
ROWS = "#event-rows tr.event"


@pytest.fixture(scope="module")
def console_settings_overrides() -> dict[str, Any]:
    # The sequencer must run for the live tail (it follows log positions).
    # The stats rollup feeds the filter dropdowns (facets).
    return {"run_jobs": True, "detections_enabled": False}


async def _ingest(api: Api, source: str, n: int, **fields: Any) -> None:
    # The key's name is the events' source.
    body = {"name": source, "scopes": ["events:write"]}
    key = (await api.request("POST", "/admin/api-keys", json=body, expect=201)).json()["key"]
    now = datetime.now(UTC)
    events = [
        {
            "action": ("exam.submitted", "exam.graded")[i % 2],
            "actor_id": f"{source}-u{i % 3}",
            "description": f"{source} event {i}",
            "occurred_at": (now - timedelta(seconds=n - i)).isoformat(),
            "ip": f"10.1.0.{i % 250}",
            "idempotency_key": uuid.uuid4().hex,
            **fields,
        }
        for i in range(n)
    ]
    r = await api.client.post(
        "/events/batch", headers={"Authorization": f"Bearer {key}"}, json={"events": events}
    )
    assert r.status_code in (200, 201), r.text


async def _ids(b: Browsing) -> list[int]:
    values: list[str] = await b.page.locator(ROWS).evaluate_all(
        "rows => rows.map(r => r.dataset.id)"
    )
    return [int(v) for v in values]


async def _api_ids(api: Api, **params: Any) -> list[int]:
    r = await api.request("GET", "/admin/activity", params=params, expect=200)
    return [e["id"] for e in r.json()["items"]]


async def test_filters_survive_reload_back_forward_and_a_new_context(
    browsing: Browsing, api: Api
) -> None:
    source = unique("flt")
    await _ingest(api, source, 30)
    await browsing.sign_in()
    await browsing.goto("/console/activity")
    for _ in range(50):  # the actions dropdown lists what the rollup has counted
        if await browsing.page.locator("#f-action option[value='exam.graded']").count():
            break
        await browsing.page.wait_for_timeout(200)
        await browsing.page.reload()
    # Fill the plain GET form and submit it.
    await browsing.page.get_by_label("Source").fill(source)
    await browsing.page.get_by_label("Actions").select_option(["exam.graded"])
    async with browsing.page.expect_navigation():
        await browsing.page.get_by_role("button", name="Apply").click()
    filtered_url = browsing.page.url
    assert f"source={source}" in filtered_url and "action=exam.graded" in filtered_url
    assert "actor=" not in filtered_url  # empty fields are left out of the deep link
    expected = await _api_ids(api, source=source, action="exam.graded")
    assert await _ids(browsing) == expected and len(expected) == 15
    await browsing.page.reload()
    assert await _ids(browsing) == expected
    await browsing.goto(f"/console/activity?source={source}&page_size=10")
    assert await _ids(browsing) == await _api_ids(api, source=source, page_size=10)
    await browsing.page.go_back()
    assert browsing.page.url == filtered_url and await _ids(browsing) == expected
    await browsing.page.go_forward()
    assert len(await _ids(browsing)) == 10
    # A new browser context (signed in afresh) on the deep link: the same rows.
    other = await browsing.context.browser.new_context()  # type: ignore[union-attr]
    try:
        page = await other.new_page()
        await page.goto(browsing.url("/console/login"))
        await page.get_by_label("Username").fill("admin")
        await page.get_by_label("Password").fill("admin-password-123")
        async with page.expect_navigation():
            await page.get_by_role("button", name="Sign in").click()
        await page.goto(filtered_url)
        ids = await page.locator(ROWS).evaluate_all("rows => rows.map(r => +r.dataset.id)")
        assert ids == expected
    finally:
        await other.close()


async def test_five_pages_older_match_the_api(browsing: Browsing, api: Api) -> None:
    source = unique("pages")
    await _ingest(api, source, 55)
    await browsing.sign_in()
    await browsing.goto(f"/console/activity?source={source}&page_size=10")
    seen: list[int] = []
    for _ in range(5):
        seen += await _ids(browsing)
        async with browsing.page.expect_navigation():
            await browsing.page.locator("a[data-nav=next]").click()
    seen += await _ids(browsing)
    api_seen: list[int] = []
    params: dict[str, Any] = {"source": source, "page_size": 10}
    while True:
        body = (await api.request("GET", "/admin/activity", params=params, expect=200)).json()
        api_seen += [e["id"] for e in body["items"]]
        if not body["next_cursor"]:
            break
        params = {"source": source, "page_size": 10, "cursor": body["next_cursor"]}
    assert seen == api_seen and len(set(seen)) == 55
    # And back by Newer/Previous from the last page.
    async with browsing.page.expect_navigation():
        await browsing.page.locator("a[data-nav=prev]").click()
    assert await _ids(browsing) == api_seen[40:50]


async def test_drawer_by_keyboard_and_axe_on_activity_and_detail(
    browsing: Browsing, api: Api
) -> None:
    source = unique("axe")
    await _ingest(api, source, 5, metadata={"nested": {"a": [1, 2]}, "note": "<b>x</b>"})
    await browsing.sign_in()
    await browsing.goto(f"/console/activity?source={source}")
    await browsing.assert_accessible("activity")
    row = browsing.page.locator(ROWS).first
    await row.focus()
    await browsing.page.keyboard.press("Enter")
    drawer = browsing.page.locator("#drawer")
    await drawer.locator("#drawer-title").wait_for()
    assert await drawer.is_visible()
    assert "&lt;b&gt;x&lt;/b&gt;" in await drawer.locator("pre.json").inner_html()
    await browsing.assert_accessible("drawer")
    # Focus stays inside the drawer.
    for _ in range(25):
        await browsing.page.keyboard.press("Tab")
        inside = await browsing.page.evaluate(
            "() => document.getElementById('drawer').contains(document.activeElement)"
        )
        assert inside
    await browsing.page.keyboard.press("Escape")
    assert not await drawer.is_visible()
    assert await row.evaluate("r => r === document.activeElement")
    event_id = await row.get_attribute("data-id")
    await browsing.goto(f"/console/activity/{event_id}")
    await browsing.assert_accessible("detail")


async def test_live_tail_shows_new_events_fast_and_resumes_without_gap(
    browsing: Browsing, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Streams end every second (the server is in this process): each reconnect resumes
    # from Last-Event-ID, so events posted across reconnects must each appear exactly once.
    monkeypatch.setattr(console_service, "TAIL_SECONDS", 1.0)
    source = unique("tail")
    await browsing.sign_in()
    await browsing.goto(f"/console/activity?source={source}")
    await browsing.page.get_by_role("button", name="Live tail").click()
    await browsing.page.wait_for_timeout(300)
    started = time.monotonic()
    await _ingest(api, source, 1, description="first live event")
    await browsing.page.locator(ROWS).first.wait_for(timeout=2000)
    assert time.monotonic() - started <= 2.0
    for _ in range(4):  # across several stream reconnects
        await _ingest(api, source, 3)
        await asyncio.sleep(0.7)
    await browsing.page.wait_for_function(
        f"() => document.querySelectorAll('{ROWS}').length >= 13", timeout=5000
    )
    await browsing.page.wait_for_timeout(1500)
    ids = await _ids(browsing)
    expected = await _api_ids(api, source=source, page_size=100)
    # (The tail adds rows in log order; the API sorts by occurred_at: compare the sets.)
    assert sorted(ids) == sorted(expected) and len(ids) == len(set(ids)) == 13
    # Pause: new events wait behind an "N new" badge.
    await browsing.page.get_by_role("button", name="Pause").click()
    await _ingest(api, source, 2)
    badge = browsing.page.locator("#tail-badge")
    await badge.get_by_text("2 new").wait_for(timeout=3000)
    assert len(await _ids(browsing)) == 13
    await browsing.page.get_by_role("button", name="Resume").click()
    assert len(await _ids(browsing)) == 15


async def test_export_from_the_page_matches_the_api_and_is_recorded(
    browsing: Browsing, api: Api
) -> None:
    source = unique("exp")
    await _ingest(api, source, 7)
    await browsing.sign_in()
    await browsing.goto(f"/console/activity?source={source}")
    async with browsing.page.expect_download() as download:
        await browsing.page.get_by_role("link", name="CSV").click()
    path = await (await download.value).path()
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    api_export = await api.request(
        "GET", "/admin/activity/export", params={"source": source}, expect=200
    )
    assert len(rows) == int(api_export.headers["x-export-row-count"]) == 7
    log = await _api_ids(api, action="activity.exported", page_size=100)
    assert log, "the export is not in the log"


@pytest.mark.parametrize(("width", "name"), [(375, "phone"), (768, "tablet"), (1280, "desktop")])
async def test_layouts(browsing: Browsing, api: Api, width: int, name: str) -> None:
    source = unique("wide")
    await _ingest(api, source, 5, description="a rather long description " * 8)
    await browsing.page.set_viewport_size({"width": width, "height": 800})
    await browsing.sign_in()
    await browsing.goto(f"/console/activity?source={source}")
    await browsing.screenshot(f"activity-{name}")
    overflow = await browsing.page.evaluate(
        "() => document.scrollingElement.scrollWidth - window.innerWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways at {width}px"
    is_open = await browsing.page.locator("#filters").evaluate("d => d.open")
    position = await browsing.page.locator("#filters").evaluate("d => getComputedStyle(d).position")
    if name == "phone":
        assert not is_open  # collapsed
        scroll = browsing.page.locator(".table-scroll")
        assert await scroll.evaluate("s => s.scrollWidth > s.clientWidth")  # scrolls in its box
    elif name == "tablet":
        assert is_open and position == "fixed"
    else:
        assert is_open


async def test_histogram_draws_and_a_drag_narrows_the_range_and_rows(
    browsing: Browsing, api: Api
) -> None:
    source = unique("hist")
    # 40 events, one every 3 minutes over the last two hours: minute bars.
    body = {"name": source, "scopes": ["events:write"]}
    key = (await api.request("POST", "/admin/api-keys", json=body, expect=201)).json()["key"]
    now = datetime.now(UTC)
    events = [
        {
            "action": "exam.submitted",
            "actor_id": f"u{i % 3}",
            "description": f"<img src=x onerror=alert({i})> histogram {i}",
            "occurred_at": (now - timedelta(minutes=3 * i)).isoformat(),
            "idempotency_key": uuid.uuid4().hex,
        }
        for i in range(40)
    ]
    r = await api.client.post(
        "/events/batch", headers={"Authorization": f"Bearer {key}"}, json={"events": events}
    )
    assert r.status_code in (200, 201), r.text
    await browsing.sign_in()
    start = f"/console/activity?source={source}&page_size=100"
    await browsing.goto(start)
    page = browsing.page
    await page.locator("#histogram.histogram-ready canvas").wait_for(timeout=10000)
    note = await page.locator("#histogram-note").text_content()
    assert note and note.startswith("40 events, per minute") and "Europe/Berlin" in note
    assert len(await _ids(browsing)) == 40
    # The same bars as a table of links (keyboard, screen readers): one per non-empty bar.
    links = page.locator("#histogram .histogram-table a")
    assert 20 <= await links.count() <= 40
    counts = [int(t) for t in await links.all_text_contents()]
    assert sum(counts) == 40 and "since=" in (await links.first.get_attribute("href") or "")
    await page.locator("#histogram .histogram-table summary").click()
    await browsing.assert_accessible("activity-histogram")
    over = page.locator("#histogram .u-over")
    box = await over.bounding_box()
    assert box and box["width"] > 200
    y = box["y"] + box["height"] / 2
    # The tooltip: a bar's local time and count, as text.
    await page.mouse.move(box["x"] + box["width"] * 0.5, y)
    tip = page.locator(".histogram-tip")
    await tip.wait_for(timeout=2000)
    assert "event" in (await tip.text_content() or "")
    await browsing.screenshot("activity-histogram")
    # Drag across the middle of the chart: the page reloads with since/until narrowed.
    await page.mouse.move(box["x"] + box["width"] * 0.3, y)
    await page.mouse.down()
    await page.mouse.move(box["x"] + box["width"] * 0.45, y, steps=5)
    async with page.expect_navigation():
        await page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=5)
        await page.mouse.up()
    narrowed = parse_qs(urlsplit(page.url).query)
    assert narrowed["source"] == [source] and narrowed["page_size"] == ["100"]
    since = datetime.fromisoformat(narrowed["since"][0])
    until = datetime.fromisoformat(narrowed["until"][0])
    assert now - timedelta(hours=2, minutes=1) < since < until < now
    ids = await _ids(browsing)
    expected = await _api_ids(
        api, source=source, since=since.isoformat(), until=until.isoformat(), page_size=100
    )
    assert ids == expected and 0 < len(ids) < 40
    await page.locator("#histogram.histogram-ready canvas").wait_for(timeout=10000)
    # Back returns to the whole range (a GET URL each).
    await page.go_back()
    assert page.url == browsing.url(start) and len(await _ids(browsing)) == 40
