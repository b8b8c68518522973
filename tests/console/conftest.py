"""The admin console's browser rig: a real uvicorn server (in a thread, its own event loop) on
the session's PostgreSQL with the bootstrap admin, Debian's chromium driven by Playwright
(`executable_path`, headless, no downloaded browser), a page that fails its test on any console
error, uncaught exception, failed subresource or CSP violation, and an axe-core check.

One server and one browser per test module (both module-scoped): a module's tests share the
database, so each seeds what it needs with names of its own. Tests that expect a problem on
purpose (a 403 page, say) take it off `Browsing.problems` before the test ends."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    Response,
    async_playwright,
)

from audit_service.core.config import Settings
from audit_service.main import create_app
from tests.conftest import ADMIN_PASSWORD, PASSWORD, _blocking, _truncate, make_settings
from tests.pg import free_port

CHROMIUM = os.environ.get("AUDIT_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
# Screenshots and axe reports of failing pages land here (kept as CI artifacts).
ARTIFACTS = Path(os.environ.get("AUDIT_TEST_ARTIFACTS", "var/test-artifacts/console"))
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]

# Reports CSP violations (and which directive) as console errors the page fixture collects.
# Init scripts run through the DevTools protocol, so the page's own CSP does not block this.
_CSP_LISTENER = """
document.addEventListener('securitypolicyviolation', (e) => {
  console.error('CSP violation: ' + e.violatedDirective + ' blocked ' + (e.blockedURI || 'inline')
    + ' at ' + e.sourceFile + ':' + e.lineNumber);
});
"""


def _artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


class LiveServer:
    """The whole app under uvicorn on 127.0.0.1 in a thread of its own."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            loop="asyncio",
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="console-uvicorn")

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the console test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


@pytest.fixture(scope="module")
def console_settings_overrides() -> dict[str, Any]:
    """Settings a test module wants different from `make_settings`'s (override the fixture)."""
    return {}


@pytest.fixture(scope="module")
def console_server(pg_url: str, console_settings_overrides: dict[str, Any]) -> Iterator[LiveServer]:
    """A clean PostgreSQL database and the app serving it; the bootstrap admin is `admin`."""
    _blocking(lambda: _truncate(pg_url))
    server = LiveServer(make_settings(pg_url, **console_settings_overrides))
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Api:
    """The service's own HTTP API on the live server, for seeding and for comparing what a page
    shows with what the API answers (bearer tokens: the API never takes the console cookie)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self._tokens: dict[str, str] = {}

    async def token(self, username: str = "admin", password: str | None = None) -> str:
        if username not in self._tokens:
            password = password or (ADMIN_PASSWORD if username == "admin" else PASSWORD)
            r = await self.client.post("/login", json={"username": username, "password": password})
            assert r.status_code == 200, r.text
            self._tokens[username] = r.json()["access_token"]
        return self._tokens[username]

    async def headers(self, username: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token(username)}"}

    async def request(
        self,
        method: str,
        path: str,
        *,
        as_user: str = "admin",
        expect: int | None = None,
        **kw: Any,
    ) -> httpx.Response:
        r = await self.client.request(method, path, headers=await self.headers(as_user), **kw)
        if expect is not None:
            assert r.status_code == expect, (method, path, r.status_code, r.text)
        return r

    async def create_user(self, username: str, role: str = "user", **extra: Any) -> dict[str, Any]:
        body = {"username": username, "password": PASSWORD, "role": role, **extra}
        r = await self.request("POST", "/admin/users", json=body, expect=201)
        created: dict[str, Any] = r.json()
        return created


@pytest.fixture(scope="module")
async def api(console_server: LiveServer) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(
        base_url=console_server.url, timeout=30, headers={"User-Agent": "console-tests/1.0"}
    ) as client:
        yield Api(client)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@dataclass
class Browsing:
    """One browser context + page on the live server, and what went wrong in it."""

    server: LiveServer
    context: BrowserContext
    page: Page
    problems: list[str] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.server.url + path

    async def goto(self, path: str) -> Response | None:
        return await self.page.goto(self.url(path))

    async def sign_in(self, username: str = "admin", password: str | None = None) -> None:
        """Through the real sign-in form, as a person would."""
        password = password or (ADMIN_PASSWORD if username == "admin" else PASSWORD)
        await self.goto("/console/login")
        await self.page.get_by_label("Username").fill(username)
        await self.page.get_by_label("Password").fill(password)
        async with self.page.expect_navigation():
            await self.page.get_by_role("button", name="Sign in").click()
        assert "/console/login" not in self.page.url, "sign-in failed"

    async def screenshot(self, name: str) -> Path:
        path = _artifact(f"{name}.png")
        await self.page.screenshot(path=str(path), full_page=True)
        return path

    async def assert_accessible(self, name: str = "page") -> None:
        """axe-core, WCAG 2.1 A and AA rules: no violation at all on the current page."""
        results = await Axe().run(
            self.page,
            options={"runOnly": {"type": "tag", "values": AXE_TAGS}, "resultTypes": ["violations"]},
        )
        if results.violations_count:
            _artifact(f"axe-{name}.txt").write_text(results.generate_report())
        assert results.violations_count == 0, results.generate_report()

    def take_problems(self, contains: str) -> list[str]:
        """Remove (and return) the expected problems mentioning `contains`."""
        taken = [p for p in self.problems if contains in p]
        self.problems[:] = [p for p in self.problems if contains not in p]
        return taken


@pytest.fixture
async def browsing(browser: Browser, console_server: LiveServer) -> AsyncIterator[Browsing]:
    """A fresh context (no cookies) at 1280 px; fails the test on console errors, uncaught
    exceptions, failed or non-2xx/3xx subresources and CSP violations."""
    context = await browser.new_context(
        viewport={"width": 1280, "height": 900}, timezone_id="Europe/Berlin", locale="en-GB"
    )
    await context.add_init_script(_CSP_LISTENER)
    page = await context.new_page()
    seen = Browsing(console_server, context, page)
    origin = urlsplit(console_server.url).netloc

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "assert"):
            seen.problems.append(f"console.{message.type}: {message.text} @ {message.location}")

    def on_response(response: Response) -> None:
        seen.responses.append(response)
        if response.request.resource_type != "document" and response.status >= 400:
            seen.problems.append(f"subresource {response.status}: {response.url}")

    def on_failed(request: Request) -> None:
        # Navigating on cancels what the previous page still loaded: not a fault.
        if request.failure == "net::ERR_ABORTED":
            return
        seen.problems.append(f"request failed: {request.url} ({request.failure})")

    def on_request(request: Request) -> None:
        if urlsplit(request.url).netloc not in (origin, "") and not request.url.startswith(
            ("data:", "blob:", "about:")
        ):
            seen.problems.append(f"request off the service's origin: {request.url}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: seen.problems.append(f"uncaught: {error}"))
    page.on("response", on_response)
    page.on("requestfailed", on_failed)
    page.on("request", on_request)
    try:
        yield seen
    finally:
        await context.close()
    assert not seen.problems, "the page reported problems:\n" + "\n".join(seen.problems)


def unique(prefix: str) -> str:
    """A name of this test's own in a module-shared database."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
