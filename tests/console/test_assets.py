"""The console's assets in a real browser: every script, stylesheet and image a page references
answers 200 from the service itself (the vendor files come from package-lock.json through
scripts/build-assets.sh), and the rig itself notices a CSP violation."""

from __future__ import annotations

from urllib.parse import urljoin

from tests.console.conftest import Browsing

VENDOR = (
    "/console/static/vendor/htmx.min.js",
    "/console/static/vendor/uPlot.iife.min.js",
    "/console/static/vendor/uPlot.min.css",
)

_REFERENCED = """() => [
  ...Array.from(document.querySelectorAll('script[src]'), (e) => e.getAttribute('src')),
  ...Array.from(document.querySelectorAll('link[href]'), (e) => e.getAttribute('href')),
  ...Array.from(document.querySelectorAll('img[src]'), (e) => e.getAttribute('src')),
]"""


async def _referenced(b: Browsing) -> list[str]:
    refs: list[str] = await b.page.evaluate(_REFERENCED)
    return sorted({urljoin(b.page.url, r) for r in refs})


async def test_every_asset_a_page_references_answers_200(browsing: Browsing) -> None:
    checked: set[str] = set()
    await browsing.goto("/console/login")
    for url in await _referenced(browsing):
        checked.add(url)
    await browsing.sign_in()
    for path in ("/console/dashboard", "/console/activity"):
        await browsing.goto(path)
        checked.update(await _referenced(browsing))
    assert checked, "the pages reference no asset at all"
    for url in sorted(checked):
        r = await browsing.context.request.get(url)
        assert r.status == 200, (url, r.status)
        assert r.headers.get("content-type", "").split(";")[0] in (
            "text/javascript",
            "application/javascript",
            "text/css",
            "image/svg+xml",
            "image/png",
            "image/x-icon",
            "image/vnd.microsoft.icon",
        ), (url, r.headers.get("content-type"))
    for path in VENDOR:
        r = await browsing.context.request.get(browsing.url(path))
        assert r.status == 200 and len(await r.body()) > 1000, path
    # Everything the browser fetched while loading came back fine (no 404 the DOM scan missed).
    assert all(r.status < 400 for r in browsing.responses if r.request.resource_type != "document")


async def test_the_rig_notices_a_csp_violation(browsing: Browsing) -> None:
    await browsing.goto("/console/login")
    await browsing.page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = 'window.x = 1';"
        " document.head.appendChild(s); }"
    )
    await browsing.page.wait_for_timeout(100)
    assert await browsing.page.evaluate("() => window.x") is None  # the inline script never ran
    taken = browsing.take_problems("script-src")
    assert taken, "an inline script did not produce a CSP violation report"
