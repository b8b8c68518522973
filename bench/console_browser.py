"""The admin console in headless Chromium (issue 13's browser figures): time to first rows
painted per filter type, a deep keyset page, free text; the dashboard over 30 days painted;
the first load's bytes (HTML + CSS + JS, gzip).

    .venv/bin/python bench/console_browser.py \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1:55433/postgres --runs 5

Starts `audit-service serve` on the given (migrated, seeded) database, makes a throwaway admin
with the CLI, signs in through /console/login in Debian's chromium (Playwright,
`executable_path`), and for each scenario loads the page `--runs` times in a warm context:
`ttfb_ms` (request start → first byte: the server's response time plus loopback), `rows_ms`
(navigation start → the first animation frame with the event rows or the charts in the DOM,
i.e. painted at the next frame) and `fcp_ms` (first contentful paint). Bytes: every HTML, CSS
and JS response of a cold first load of /console/activity, gzip-compressed here (the service
does not compress; a proxy in front usually does) — the issue's "first load ≤ 60 KB gzip".
Prints one JSON line per scenario and a summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from common import REPO, free_port
from playwright.async_api import Page, Response, async_playwright

CHROMIUM = os.environ.get("AUDIT_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]

# Marks the first animation frame in which the rows (or the dashboard's chart canvas) exist:
# what is in the DOM at a frame is what that frame paints.
_PAINT_PROBE = """
(() => {
  const sel = 'tbody#event-rows tr, #activity-chart canvas';
  const check = () => {
    if (document.querySelector(sel)) { window.__rowsAt = performance.now(); return; }
    requestAnimationFrame(check);
  };
  requestAnimationFrame(check);
})();
"""


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


async def _load(page: Page, url: str) -> dict[str, float]:
    await page.goto(url, wait_until="load")
    await page.wait_for_function("window.__rowsAt !== undefined", timeout=30_000)
    timing: dict[str, float] = await page.evaluate(
        """() => {
          const n = performance.getEntriesByType('navigation')[0];
          const fcp = performance.getEntriesByName('first-contentful-paint')[0];
          return {ttfb_ms: n.responseStart - n.requestStart, rows_ms: window.__rowsAt,
                  fcp_ms: fcp ? fcp.startTime : -1};
        }"""
    )
    return timing


async def _first_load_bytes(browser: Any, base: str, state: Any) -> dict[str, int]:
    context = await browser.new_context(storage_state=state)
    page = await context.new_page()
    sizes: dict[str, int] = {}
    pending: list[asyncio.Task[None]] = []

    async def take(response: Response) -> None:
        kind = response.headers.get("content-type", "").split(";")[0]
        if kind in ("text/html", "text/css", "text/javascript", "application/javascript"):
            body = await response.body()
            sizes[response.url] = len(gzip.compress(body, 6))

    page.on("response", lambda r: pending.append(asyncio.ensure_future(take(r))))
    await page.goto(f"{base}/console/activity", wait_until="networkidle")
    await asyncio.gather(*pending)
    await context.close()
    return sizes


async def _older_href(page: Page, base: str, url: str, pages: int) -> str:
    """The URL of the keyset page `pages` Older clicks after `url`."""
    href = url
    for _ in range(pages):
        await page.goto(href)
        link = page.locator('a[data-nav="next"]').first
        found = await link.get_attribute("href")
        if not found:
            break
        href = base + found if found.startswith("/") else found
    return href


async def run(args: argparse.Namespace, base: str, username: str, password: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            try:
                if (await client.get(f"{base}/healthz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    now = time.time()
    day = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 86400))
    scenarios = {
        "first page": {},
        "action": {"action": "auth.login"},
        "module": {"module": "billing"},
        "outcome": {"outcome": "denied"},
        "source": {"source": "exam-platform"},
        "tenant": {"tenant_id": "tenant-07"},
        "ip cidr": {"ip": "10.0.0.0/8"},
        "since 24 h": {"since": day},
        "free text": {"q": "quarantine"},
        "page 500": {"page": "500"},
    }
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = await browser.new_context()
        await context.add_init_script(_PAINT_PROBE)
        page = await context.new_page()
        await page.goto(f"{base}/console/login")
        await page.fill("#username", username)
        await page.fill("#password", password)
        await page.click("form button[type=submit], form input[type=submit]")
        await page.wait_for_url("**/console/**")
        urls = {k: f"{base}/console/activity?{urlencode(v)}" for k, v in scenarios.items()}
        urls["keyset 20 pages"] = await _older_href(page, base, urls["first page"], 20)
        urls["dashboard 30 d"] = f"{base}/console/dashboard"
        worst_rows = 0.0
        for name, url in urls.items():
            runs = [await _load(page, url) for _ in range(args.runs)]
            figure = {
                "scenario": name,
                **{
                    f"{k}_{q}": _p([r[k] for r in runs], v)
                    for k in ("ttfb_ms", "rows_ms", "fcp_ms")
                    for q, v in (("p50", 0.5), ("p95", 0.95))
                },
            }
            worst_rows = max(worst_rows, figure["rows_ms_p95"])
            print(json.dumps(figure), flush=True)
        sizes = await _first_load_bytes(browser, base, await context.storage_state())
        await browser.close()
    print(
        json.dumps(
            {
                "first_load_gzip_bytes": sum(sizes.values()),
                "first_load_files": len(sizes),
                "worst_rows_ms_p95": worst_rows,
                "runs": args.runs,
                "load_average": os.getloadavg(),
                "median_file_gzip": statistics.median(sizes.values()) if sizes else 0,
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", required=True, help="postgresql+asyncpg://… (seeded)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "AUDIT_ENV": "development",
        "AUDIT_JWT_SECRET": "console-bench-" + "x" * 40,
        "AUDIT_DEFAULT_RATE_LIMIT": "1000000/minute",
        # The page timings, not the background jobs (on a never-rolled-up database the
        # rollup job would spend the run catching up beside the requests).
        "AUDIT_RUN_JOBS": "false",
    }
    cli = str(Path(sys.executable).with_name("audit-service"))
    username, password = f"console-bench-{secrets.token_hex(3)}", secrets.token_urlsafe(18)
    subprocess.run(
        [cli, "users", "create", "--username", username, "--role", "admin", "--password-stdin"],
        input=password + "\n", env=env, cwd=REPO, check=True, capture_output=True, text=True,
    )  # fmt: skip
    server = subprocess.Popen(
        [cli, "serve", "--no-migrate", "--port", str(port), "--log-level", "warning"],
        env=env, cwd=REPO,
    )  # fmt: skip
    try:
        asyncio.run(run(args, f"http://127.0.0.1:{port}", username, password))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
