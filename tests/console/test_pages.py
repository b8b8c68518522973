"""The dashboard, alerts, integrity and administration pages over httpx on both dialects:
what they show equals what the API answers, who may see and change what, every change a
POST with the CSRF token and recorded like the API's, hostile logged values as inert text,
and bad input as a readable page (never a stack trace)."""

from __future__ import annotations

import io
import re
import tarfile
from datetime import UTC, datetime, timedelta

from audit_service.integrity.bundle import tar_member
from tests.conftest import Harness
from tests.console.support import csrf_of, https_client, signed_in
from tests.detections.helpers import alerts, evaluate, failures, post
from tests.integrity.helpers import seal
from tests.stats.helpers import event, post_events, roll_up

XSS = '<img src=x onerror="alert(1)">'


async def _seed_stats(h: Harness) -> None:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    events = [event(now - timedelta(hours=i), actor_id="alice") for i in range(5)]
    events += [event(now - timedelta(hours=1), actor_id=XSS, module="exams")]
    events += [
        event(now, action="auth.login_failed", outcome="failure", actor_id="mallory")
        for _ in range(3)
    ]
    await post_events(h, "lms", events)
    await roll_up(h)


async def test_the_dashboard_shows_the_stats_services_figures_with_links(h: Harness) -> None:
    await _seed_stats(h)
    api = await h.auth()
    async with https_client(h) as c:
        await signed_in(c)
        r = await c.get("/console/dashboard", params={"tz": "Europe/Berlin"})
        assert r.status_code == 200, r.text
        page = r.text
    # The view is recorded like the API's statistics views.
    last = await h.last_event()
    assert last.action == "stats.viewed" and last.description == "Viewed the console dashboard"
    assert last.event_metadata["via"] == "console"
    top = await h.client.get(
        "/admin/stats/top",
        headers=api,
        params={"dimension": "actor", "tz": "Europe/Berlin", "limit": 8},
    )
    items = top.json()["items"]
    assert {i["key"] for i in items} >= {"alice", XSS, "mallory"}
    # Every top user is a link into the activity page filtered on it, with the period.
    for item in items:
        assert f"actor={_q(item['key'])}&amp;since=" in page, item["key"]
    # The hostile actor id is text, never markup.
    assert XSS not in page and "&lt;img src=x onerror=" in page
    assert "Failed logins" in page and "action=auth.login&amp;action=auth.login_failed" in page
    # The chart's data island: JSON, escaped for a script element, with every bucket.
    island = re.search(r'id="dashboard-data">(.*?)</script>', page, re.S)
    assert island and "<" not in island.group(1)


def _q(value: str) -> str:
    from urllib.parse import quote_plus

    return quote_plus(value)


async def test_dashboard_bad_input_is_a_page_not_a_trace(h: Harness) -> None:
    async with https_client(h) as c:
        await signed_in(c)
        for params in ({"interval": "fortnight"}, {"tz": "Mars/Olympus"}, {"bogus": "1"}):
            r = await c.get("/console/dashboard", params=params)
            assert r.status_code == 422, (params, r.text)
            assert "text/html" in r.headers["content-type"]
            assert "Traceback" not in r.text and "Validation Error" in r.text


async def _an_alert(h: Harness) -> int:
    await post(h, failures("198.51.100.9", "victim", 10))
    await evaluate(h)
    found = [a for a in await alerts(h, "brute_force_ip")]
    assert found
    return found[0].id


async def test_alerts_list_detail_acknowledge_and_resolve(h: Harness) -> None:
    alert_id = await _an_alert(h)
    async with https_client(h) as c:
        csrf = await signed_in(c)
        listing = await c.get("/console/alerts", params={"status": "", "rule": "brute_force_ip"})
        assert listing.status_code == 200 and f'href="/console/alerts/{alert_id}"' in listing.text
        detail = await c.get(f"/console/alerts/{alert_id}")
        assert detail.status_code == 200
        assert "/console/activity?" in detail.text and "Acknowledge" in detail.text
        # Without the token: refused, nothing changes.
        r = await c.post(f"/console/alerts/{alert_id}/acknowledge", data={})
        assert r.status_code == 403
        r = await c.post(f"/console/alerts/{alert_id}/acknowledge", data={"csrf_token": csrf})
        assert r.status_code == 303 and r.headers["location"] == f"/console/alerts/{alert_id}"
        assert (await h.last_event()).action == "alert.acknowledged"
        r = await c.post(
            f"/console/alerts/{alert_id}/resolve",
            data={"csrf_token": csrf, "resolution": "true_positive", "note": XSS},
        )
        assert r.status_code == 303
        shown = await c.get(f"/console/alerts/{alert_id}")
        assert "resolved" in shown.text and XSS not in shown.text
        # The same conflict the API answers (409), as a page.
        again = await c.post(
            f"/console/alerts/{alert_id}/resolve",
            data={"csrf_token": csrf, "resolution": "benign"},
        )
        assert again.status_code == 409 and "resolved already" in again.text
    api = await h.client.get(f"/admin/alerts/{alert_id}", headers=await h.auth())
    assert api.json()["status"] == "resolved" and api.json()["note"] == XSS


async def test_auditors_read_alerts_and_integrity_but_change_nothing(h: Harness) -> None:
    alert_id = await _an_alert(h)
    await h.create_user("audrey", "auditor")
    async with https_client(h) as c:
        csrf = await signed_in(c, "audrey")
        for path in ("/console/dashboard", "/console/alerts", f"/console/alerts/{alert_id}"):
            r = await c.get(path)
            assert r.status_code == 200, (path, r.text)
        assert "/acknowledge" not in (await c.get(f"/console/alerts/{alert_id}")).text
        r = await c.post(f"/console/alerts/{alert_id}/acknowledge", data={"csrf_token": csrf})
        assert r.status_code == 403
        page = await c.get("/console/integrity")
        assert page.status_code == 200 and "Verify the whole log now" not in page.text
        assert (
            await c.post("/console/integrity/verify", data={"csrf_token": csrf})
        ).status_code == 403
        for path in ("/console/admin", "/console/admin/users", "/console/admin/api-keys"):
            r = await c.get(path)
            assert r.status_code == 403 and "for administrators." in r.text, path


async def test_integrity_page_and_bundle_check(h: Harness) -> None:
    async with https_client(h) as c:
        csrf = await signed_in(c)
        page = await c.get("/console/integrity")
        assert page.status_code == 200
        assert "No verification has run yet" in page.text
        r = await c.post("/console/integrity/verify", data={"csrf_token": csrf})
        assert r.status_code == 303
        page = await c.get("/console/integrity")
        assert "queued" in page.text and "Verify the whole log now" in page.text
        # A file that is no bundle: "cannot be verified", a page, not a 500.
        r = await c.post(
            "/console/integrity/bundle",
            data={"csrf_token": csrf},
            files={"bundle": ("x.tar", io.BytesIO(b"not a tar at all" * 100), "application/x-tar")},
        )
        assert r.status_code == 200, r.text
        assert "Cannot be verified" in r.text
        last = await h.last_event()
        assert last.action == "integrity.bundle_checked"
        assert last.event_metadata["status"] == "unverifiable"


async def test_an_exported_bundle_checks_intact_and_a_tampered_one_does_not(h: Harness) -> None:
    await post_events(h, "lms", [event(datetime.now(UTC), actor_id=f"u{i}") for i in range(5)])
    await seal(h)
    r = await h.client.get("/admin/activity/export?format=bundle", headers=await h.auth())
    assert r.status_code == 200, r.text
    exported = r.content
    with tarfile.open(fileobj=io.BytesIO(exported), mode="r:*") as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    changed, done = [], False
    for name, data in members:
        if not done and b'"u3"' in data:
            data, done = data.replace(b'"u3"', b'"u9"', 1), True
        changed.append((name, data))
    assert done
    tampered = b"".join(tar_member(n, d, 0) for n, d in changed) + b"\0" * 1024
    async with https_client(h) as c:
        csrf = await signed_in(c)
        for data, expected in ((exported, "Bundle check: intact"), (tampered, "tampered")):
            r = await c.post(
                "/console/integrity/bundle",
                data={"csrf_token": csrf},
                files={"bundle": ("export.tar", io.BytesIO(data), "application/x-tar")},
            )
            assert r.status_code == 200 and expected in r.text, r.text[-2000:]
        assert "Tampered or damaged" in r.text


async def test_administration_lists_and_changes_through_the_services(h: Harness) -> None:
    async with https_client(h) as c:
        csrf = await signed_in(c)
        for path in (
            "/console/admin",
            "/console/admin/users",
            "/console/admin/api-keys",
            "/console/admin/actions",
            "/console/admin/reports",
            "/console/admin/forwarding",
            "/console/admin/channels",
        ):
            r = await c.get(path)
            assert r.status_code == 200, (path, r.text)
        r = await c.post(
            "/console/admin/users",
            data={
                "csrf_token": csrf,
                "username": "newbie",
                "password": "Newbie-password-123",
                "role": "auditor",
                "full_name": XSS,
            },
        )
        assert r.status_code == 303, r.text
        listing = await c.get("/console/admin/users?notice=user-created")
        assert "newbie" in listing.text and "The user was created." in listing.text
        assert XSS not in listing.text
        # A notice code from the address selects a fixed text; anything else shows nothing.
        assert "evil" not in (await c.get("/console/admin/users?notice=evil")).text
        # The API's own rules: a bad username is a 422 page and nothing is created.
        bad = await c.post(
            "/console/admin/users",
            data={"csrf_token": csrf, "username": "a b", "password": "x", "role": "user"},
        )
        assert bad.status_code == 422 and "nothing was changed" in bad.text
        created = await c.post("/console/admin/api-keys", data={"csrf_token": csrf, "name": "lms"})
        assert created.status_code == 200
        secret = re.search(r'id="new-key-secret">([^<]+)<', created.text)
        assert secret and created.headers["cache-control"] == "no-store"
        assert (await h.last_event()).action == "api_key.created"
        keys = await c.get("/console/admin/api-keys")
        assert secret.group(1) not in keys.text  # shown once
        key_id = re.search(r"/console/admin/api-keys/(\d+)/revoke", keys.text)
        assert key_id
        r = await c.post(
            f"/console/admin/api-keys/{key_id.group(1)}/revoke", data={"csrf_token": csrf}
        )
        assert r.status_code == 303
        assert (await h.last_event()).action == "api_key.revoked"
    api = await h.client.get("/admin/users", headers=await h.auth())
    assert any(u["username"] == "newbie" and u["role"] == "auditor" for u in api.json()["items"])


async def test_changes_without_the_csrf_token_are_refused(h: Harness) -> None:
    async with https_client(h) as c:
        page = await signed_in(c)
        assert page
        for path in (
            "/console/admin/users",
            "/console/admin/api-keys",
            "/console/integrity/verify",
        ):
            r = await c.post(path, data={"username": "x", "name": "x"})
            assert r.status_code == 403, path
            assert "CSRF" in r.text
        # The page's token works; a token of another session does not.
        other = await c.get("/console/admin/users")
        assert csrf_of(other.text)
