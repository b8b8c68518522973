"""The dashboard, alerts, integrity and administration pages in headless Chromium on the live
server: the chart renders with no console error or CSP violation, its tooltip and a dragged
range or a top-list link land on the matching activity filter (the same rows as the API),
an alert is acknowledged through its page, axe finds nothing on any page, and an auditor sees
no administration page. The module seeds its own data once, through the API."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from audit_service.audit_log.sequencer import no_fence
from audit_service.core.db import create_engine, create_sessionmaker
from audit_service.detections import service as detections
from audit_service.integrity.jobs import make_sequencer
from audit_service.stats import rollup
from tests.console.conftest import Api, Browsing, LiveServer

# A real browser against a live server, like test_browser_activity.py: slow, so it starts early.
pytestmark = pytest.mark.slow

XSS = '"><svg onload=alert(1)>'
AUDITOR = "audra"


def _event(when: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "idempotency_key": uuid.uuid4().hex,
        "action": "exam.submitted",
        "actor_id": "alice",
        "module": "exams",
        "occurred_at": when.isoformat(),
        **fields,
    }


@pytest.fixture(scope="module")
async def seeded(console_server: LiveServer, api: Api) -> AsyncIterator[dict[str, Any]]:
    """A week of events (a hostile actor id among them), a brute-force burst that opens an
    alert, all sequenced, rolled up and evaluated as the jobs would; an auditor."""
    r = await api.request(
        "POST", "/admin/api-keys", json={"name": "lms", "scopes": ["events:write"]}, expect=201
    )
    key = r.json()["key"]
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    events = [_event(now - timedelta(hours=7 * i)) for i in range(24)]
    events += [_event(now - timedelta(days=2), actor_id=XSS, user_agent=XSS)]
    events += [
        _event(
            datetime.now(UTC),
            action="auth.login_failed",
            outcome="failure",
            actor_id="victim",
            actor_type="anonymous",
            module="auth",
            ip="198.51.100.66",
        )
        for _ in range(10)
    ]
    r = await api.client.post(
        "/events/batch", headers={"Authorization": f"Bearer {key}"}, json={"events": events}
    )
    assert r.status_code in (200, 201), r.text
    await api.create_user(AUDITOR, "auditor")
    # A retention rule and a legal hold, so the retention page has its edit and release forms.
    rule = {"name": "Exams", "position": 5, "match": {"module": "exams"}, "archive_after_days": 30}
    await api.request("POST", "/admin/retention/policies", json=rule, expect=201)
    hold = {"reason": XSS, "filter": {"actor": XSS}}
    await api.request("POST", "/admin/retention/holds", json=hold, expect=201)
    engine = create_engine(console_server.settings.database_url)
    try:
        sessions = create_sessionmaker(engine)
        await make_sequencer().catch_up(sessions, no_fence)
        await rollup.catch_up(sessions, no_fence, batch=5000)
        config = detections.Config.of(console_server.settings)
        await detections.catch_up(sessions, config, no_fence, batch=5000)
    finally:
        await engine.dispose()
    yield {"now": now}


async def test_the_dashboard_renders_its_chart_and_tooltip(
    browsing: Browsing, seeded: dict[str, Any]
) -> None:
    await browsing.sign_in()
    await browsing.goto("/console/dashboard")
    # charts.js asks again in the viewer's zone (the context's Europe/Berlin).
    await browsing.page.wait_for_url(re.compile(r"tz=Europe%2FBerlin"))
    chart = browsing.page.locator("#activity-chart canvas")
    await chart.wait_for()
    assert await browsing.page.locator("#dashboard-tz").input_value() == "Europe/Berlin"
    box = await browsing.page.locator("#activity-chart .u-over").bounding_box()
    assert box and box["width"] > 200
    await browsing.page.mouse.move(box["x"] + box["width"] - 5, box["y"] + box["height"] / 2)
    tooltip = browsing.page.locator(".chart-tooltip")
    await tooltip.wait_for(state="visible")
    assert re.search(r"\d+ events", await tooltip.inner_text())
    # The hostile actor id is listed as text: no element was made of it.
    users = browsing.page.locator("section", has_text="Most active users")
    assert XSS in await users.inner_text()
    assert await browsing.page.locator("svg[onload]").count() == 0
    await browsing.assert_accessible("dashboard")
    await browsing.screenshot("dashboard-1280")
    # Phone and tablet widths: the page never scrolls sideways (wide tables scroll in their box).
    for width in (375, 768):
        await browsing.page.set_viewport_size({"width": width, "height": 800})
        await browsing.page.wait_for_timeout(100)  # the chart follows the resize
        overflow = await browsing.page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, (width, overflow)
        await browsing.screenshot(f"dashboard-{width}")


async def test_a_dragged_range_opens_the_activity_filter(
    browsing: Browsing, seeded: dict[str, Any]
) -> None:
    await browsing.sign_in()
    await browsing.goto("/console/dashboard?tz=Europe/Berlin")
    await browsing.page.locator("#activity-chart canvas").wait_for()
    box = await browsing.page.locator("#activity-chart .u-over").bounding_box()
    assert box
    y = box["y"] + box["height"] / 2
    await browsing.page.mouse.move(box["x"] + box["width"] * 0.5, y)
    await browsing.page.mouse.down()
    await browsing.page.mouse.move(box["x"] + box["width"] * 0.98, y, steps=8)
    async with browsing.page.expect_navigation():
        await browsing.page.mouse.up()
    url = urlsplit(browsing.page.url)
    assert url.path == "/console/activity"
    params = parse_qs(url.query)
    since = datetime.fromisoformat(params["since"][0])
    until = datetime.fromisoformat(params["until"][0])
    assert since < until <= datetime.now(UTC) + timedelta(days=2)


async def test_a_top_user_link_shows_exactly_the_apis_rows(
    browsing: Browsing, api: Api, seeded: dict[str, Any]
) -> None:
    await browsing.sign_in()
    await browsing.goto("/console/dashboard?tz=Europe/Berlin")
    users = browsing.page.locator("section", has_text="Most active users")
    async with browsing.page.expect_navigation():
        await users.get_by_role("link", name="alice", exact=True).click()
    url = urlsplit(browsing.page.url)
    assert url.path == "/console/activity"
    params = parse_qs(url.query)
    assert params["actor"] == ["alice"] and "since" in params and "until" in params
    r = await api.request("GET", "/admin/activity", params=params, expect=200)
    expected = {e["id"] for e in r.json()["items"]}
    assert expected
    shown = await browsing.page.locator("tr.event").evaluate_all(
        "(rows) => rows.map((r) => Number(r.dataset.id))"
    )
    assert set(shown) == expected


async def test_acknowledging_an_alert_through_its_page(
    browsing: Browsing, seeded: dict[str, Any]
) -> None:
    await browsing.sign_in()
    await browsing.goto("/console/alerts?status=open")
    await browsing.assert_accessible("alerts")
    link = browsing.page.locator("#alerts a").first
    async with browsing.page.expect_navigation():
        await link.click()
    assert await browsing.page.locator("#alert-status").inner_text() == "open"
    await browsing.assert_accessible("alert-detail")
    async with browsing.page.expect_navigation():
        await browsing.page.get_by_role("button", name="Acknowledge").click()
    assert await browsing.page.locator("#alert-status").inner_text() == "acknowledged"
    events = browsing.page.locator("#alert-events")
    assert (await events.get_attribute("href") or "").startswith("/console/activity?")


PAGES = (
    "/console/integrity",
    "/console/admin",
    "/console/admin/users",
    "/console/admin/api-keys",
    "/console/admin/actions",
    "/console/admin/reports",
    "/console/admin/forwarding",
    "/console/admin/channels",
    "/console/admin/retention",
)


async def test_every_page_is_accessible(browsing: Browsing, seeded: dict[str, Any]) -> None:
    """One signed-in tab through every page (the dashboard and alerts are checked above)."""
    await browsing.sign_in()
    for path in PAGES:
        r = await browsing.goto(path)
        assert r is not None and r.status == 200, path
        await browsing.assert_accessible(path.strip("/").replace("/", "-"))


async def test_an_auditor_sees_no_administration(
    browsing: Browsing, seeded: dict[str, Any]
) -> None:
    await browsing.sign_in(AUDITOR)
    r = await browsing.goto("/console/dashboard?tz=Europe/Berlin")
    assert r is not None and r.status == 200
    nav = browsing.page.get_by_role("navigation", name="Console")
    assert await nav.get_by_role("link", name="Dashboard").count() == 1
    assert await nav.get_by_role("link", name="Administration").count() == 0
    for path in ("/console/admin", "/console/admin/users"):
        r = await browsing.goto(path)
        assert r is not None and r.status == 403
        assert "for administrators." in await browsing.page.locator("main").inner_text()
        await browsing.assert_accessible("auditor-403")
    # Retention, which the API lets auditors read: read-only, no form at all.
    r = await browsing.goto("/console/admin/retention")
    assert r is not None and r.status == 200
    assert await browsing.page.locator("#retention-rules tbody tr").count() == 1
    assert await browsing.page.locator("main form").count() == 0
    await browsing.assert_accessible("auditor-retention")
    # The browser logs the refused page's status; that is the point here, not a fault.
    browsing.take_problems("status of 403")
