"""Sign-in, sign-out, cookies, CSRF, cross-site refusal, CSP and the API's refusal of the
console cookie (issue 13: quality bars)."""

from __future__ import annotations

import pytest

from audit_service.console.headers import CSP
from tests.conftest import Harness
from tests.console.support import SESSION_COOKIE, csrf_of, https_client, sign_in, signed_in


async def test_sign_in_sets_a_host_cookie_and_lands_on_activity(h: Harness) -> None:
    async with https_client(h) as c:
        r = await sign_in(c)
        assert r.status_code == 303
        assert r.headers["location"] == "/console/activity"
        cookie = next(
            v for k, v in r.headers.multi_items() if k == "set-cookie" and SESSION_COOKIE in v
        )
        flags = cookie.lower()
        assert "httponly" in flags and "secure" in flags and "samesite=strict" in flags
        assert "path=/" in flags and "domain" not in flags
        page = await c.get("/console/activity")
        assert page.status_code == 200
        assert "Sign out" in page.text
    login = (await h.events(action="auth.login"))[-1]
    assert login.outcome == "success" and login.actor_name == "admin"
    assert login.event_metadata["via"] == "console"


async def test_every_console_response_has_the_security_headers(h: Harness) -> None:
    async with https_client(h) as c:
        for path in (
            "/console/login",
            "/console/activity",
            "/console/nope",
            "/console/static/app.css",
        ):
            r = await c.get(path)
            assert r.headers["content-security-policy"] == CSP, path
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["referrer-policy"] == "same-origin"
        assert "unsafe-inline" not in CSP and "unsafe-eval" not in CSP
        assert "frame-ancestors 'none'" in CSP


async def test_pages_need_a_session(h: Harness) -> None:
    async with https_client(h) as c:
        r = await c.get("/console/activity?action=auth.login")
        assert r.status_code == 303
        assert (
            r.headers["location"]
            == "/console/login?next=%2Fconsole%2Factivity%3Faction%3Dauth.login"
        )
        r = await c.get("/console/activity", headers={"HX-Request": "true"})
        assert r.status_code == 401 and r.headers["HX-Redirect"].startswith("/console/login")


async def test_wrong_password_and_lockout_are_shown(h: Harness) -> None:
    async with https_client(h) as c:
        r = await sign_in(c, password="wrong-password-1")
        assert r.status_code == 401
        assert "Incorrect username or password" in r.text
        for _ in range(10):
            r = await sign_in(c, password="wrong-password-1")
        assert r.status_code == 429
        assert "Too many failed logins" in r.text
        assert int(r.headers["retry-after"]) >= 1


async def test_login_without_or_with_a_wrong_csrf_token_is_refused(h: Harness) -> None:
    async with https_client(h) as c:
        await c.get("/console/login")
        r = await c.post("/console/login", data={"username": "admin", "password": "x"})
        assert r.status_code == 403 and "security token" in r.text
        r = await c.post(
            "/console/login", data={"username": "admin", "password": "x", "csrf_token": "0" * 64}
        )
        assert r.status_code == 403


async def test_cross_site_requests_are_refused(h: Harness) -> None:
    async with https_client(h) as c:
        token = await signed_in(c)
        r = await c.post(
            "/console/logout", data={"csrf_token": token}, headers={"Sec-Fetch-Site": "cross-site"}
        )
        assert r.status_code == 403 and "Cross-site" in r.text
        # A cross-site subresource (a fetch of a page or an export) too.
        r = await c.get(
            "/console/activity", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}
        )
        assert r.status_code == 403
        # Still signed in: nothing was done.
        assert (await c.get("/console/activity")).status_code == 200


async def test_logout_needs_csrf_and_revokes_the_session_at_once(h: Harness) -> None:
    async with https_client(h) as c:
        token = await signed_in(c)
        cookie = c.cookies[SESSION_COOKIE]
        r = await c.post("/console/logout", data={"csrf_token": "f" * 64})
        assert r.status_code == 403
        r = await c.post("/console/logout", data={"csrf_token": token})
        assert r.status_code == 303 and r.headers["location"] == "/console/login"
    # The old cookie, replayed, no longer works: the token is revoked.
    async with https_client(h) as c:
        c.cookies.set(SESSION_COOKIE, cookie, domain="testserver")
        r = await c.get("/console/activity")
        assert r.status_code == 303
    assert (await h.events(action="auth.logout"))[-1].outcome == "success"


async def test_revoking_sessions_ends_the_console_session(h: Harness) -> None:
    await h.create_user("audra", "auditor")
    async with https_client(h) as c:
        await signed_in(c, "audra")
        users = (await h.client.get("/admin/users", headers=await h.auth())).json()["items"]
        audra = next(u for u in users if u["username"] == "audra")
        r = await h.client.post(
            f"/admin/users/{audra['id']}/revoke-sessions", headers=await h.auth()
        )
        assert r.status_code == 204
        assert (await c.get("/console/activity")).status_code == 303


@pytest.mark.parametrize("path", ["/admin/activity", "/me", "/admin/users", "/events"])
async def test_the_api_never_accepts_the_console_cookie(h: Harness, path: str) -> None:
    async with https_client(h) as c:
        await signed_in(c)
        r = await c.get(path) if path != "/events" else await c.post(path, json={})
        assert r.status_code == 401, (path, r.text)


async def test_users_get_a_polite_403_and_auditors_are_read_only(h: Harness) -> None:
    await h.create_user("ursula", "user")
    async with https_client(h) as c:
        r = await sign_in(c, "ursula")
        assert r.status_code == 303
        page = await c.get("/console/activity")
        assert page.status_code == 403
        assert "for administrators and auditors" in page.text
        assert "ursula" in page.text and "Traceback" not in page.text


async def test_next_is_only_a_console_path(h: Harness) -> None:
    async with https_client(h) as c:
        page = await c.get("/console/login")
        for evil in ("https://evil.example/", "//evil.example/", "/admin/users", "/console\\@evil"):
            r = await c.post(
                "/console/login",
                data={
                    "username": "admin",
                    "password": "admin-password-123",
                    "csrf_token": csrf_of(page.text),
                    "next": evil,
                },
            )
            assert r.headers["location"] == "/console/activity", evil
            page = await c.get("/console/login")
