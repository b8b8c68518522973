"""Server-side time of the admin console's pages at scale: p50/p95 per page over N requests.

Runs the real app in-process (ASGI, no socket, no browser: the time from request to the
last byte of the response, which includes sign-in checks, the recorder's commit and the
template) against an existing, migrated database, signed in through the console's own form
as the bootstrap admin. Prints one line per scenario and a JSON summary. Not a test.

    python bench/console.py --database-url postgresql+asyncpg://postgres@127.0.0.1:55433/postgres \\
        [--runs 30] [--password bench-admin-password] [--catch-up]

Writes only what signing in and recording every request write (sessions, one audit event
per request). Scenarios: /console/activity (first page, filtered pages, page 500 and the
keyset "Older" page after it), the volume histogram (`/console/activity/histogram`) for
several filters (whether the rollups or a count over the events answered, and whether it
was available), the event permalink, and /console/dashboard.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from audit_service.core.config import Settings
from audit_service.main import create_app

PASSWORD = "bench-admin-password"
_CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]*)"')
_OLDER = re.compile(r'<a href="([^"]+)" rel="next" data-nav="next">Older</a>')


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def pick(conn: Any) -> dict[str, Any]:
    """Filter values from the data (the facets table and the newest rows: no full scans)."""

    async def one(sql: str) -> Any:
        return (await conn.execute(text(sql))).scalar()

    def facet(field: str, offset: int = 0) -> str:
        return (
            f"SELECT value FROM stats_facet WHERE field = '{field}' AND value <> 'audit-service' "
            f"ORDER BY events DESC LIMIT 1 OFFSET {offset}"
        )

    # An action the source has (the rollups' day rows), not any action; without rollups (a
    # database never rolled up) from the newest rows instead.
    source = await one(facet("source")) or await one(
        "SELECT source FROM audit_event WHERE source <> 'audit-service' ORDER BY id DESC LIMIT 1"
    )
    action = await one(
        "SELECT action FROM stats_bucket_day WHERE source = "
        f"({facet('source')}) GROUP BY action ORDER BY sum(n_success) DESC LIMIT 1"
    ) or await one(
        f"SELECT action FROM audit_event WHERE source = '{source}' ORDER BY id DESC LIMIT 1"
    )
    actor = await one(facet("actor", 3)) or await one(
        "SELECT actor_id FROM audit_event WHERE actor_type = 'user' "
        "ORDER BY id DESC LIMIT 1 OFFSET 500"
    )
    return {
        "source": source or "audit-service",
        "action": action or "auth.login",
        "actor": actor,
        "events": await one("SELECT count(*) FROM audit_event"),
        "latest": await one("SELECT max(occurred_at) FROM audit_event"),
        "ip": await one(
            "SELECT ip FROM audit_event WHERE ip IS NOT NULL AND ip <> '127.0.0.1' "
            "ORDER BY id DESC LIMIT 1 OFFSET 777"
        ),
        "event_id": await one("SELECT id FROM audit_event ORDER BY id DESC LIMIT 1 OFFSET 12345"),
    }


def scenarios(v: dict[str, Any]) -> list[tuple[str, str]]:
    ip = v["ip"] or "10.0.0.1"
    cidr = ".".join(ip.split(".")[:2]) + ".0.0/16" if "." in ip else ip + "/64"
    latest = v["latest"]
    day = {"since": (latest - timedelta(hours=24)).isoformat(), "until": latest.isoformat()}
    month = {"since": (latest - timedelta(days=30)).isoformat(), "until": latest.isoformat()}
    filters: list[tuple[str, dict[str, str]]] = [
        ("no filter", {}),
        ("source + action", {"source": v["source"], "action": v["action"]}),
        ("outcome=denied, 30 d", {"outcome": "denied", **month}),
        ("24 h (preset)", day),
        ("actor", {"actor": v["actor"]} if v["actor"] else {"actor": "admin"}),
        ("ip CIDR", {"ip": cidr}),
        ("q (common word)", {"q": "login"}),
        ("q + 24 h", {"q": "login", **day}),
    ]
    # The histograms first: with the jobs off (below) this run's own recorded requests are
    # not sequenced, and rollups more than a minute behind the log give way to counting.
    out: list[tuple[str, str]] = []
    for name, params in filters:
        out.append((f"histogram: {name}", f"/console/activity/histogram?{urlencode(params)}"))
    for name, params in filters:
        query = urlencode(params)
        out.append((f"activity: {name}", f"/console/activity?{query}"))
    out.append(("activity: page 500", "/console/activity?page=500&page_size=20"))
    out.append(("activity: keyset Older after page 500", "OLDER"))
    out.append(("event permalink", f"/console/activity/{v['event_id']}"))
    out.append(("dashboard (30 days)", "/console/dashboard"))
    return out


async def sign_in(client: httpx.AsyncClient, password: str) -> None:
    page = await client.get("/console/login")
    token = _CSRF.search(page.text)
    assert token, "no CSRF token on the sign-in page"
    r = await client.post(
        "/console/login",
        data={"username": "admin", "password": password, "csrf_token": token.group(1)},
    )
    if r.status_code != 303:
        raise SystemExit(
            f"console sign-in as admin failed ({r.status_code}): pass the bootstrap admin's "
            "password with --password"
        )


async def catch_up(app: Any) -> None:
    from audit_service.audit_log.sequencer import no_fence
    from audit_service.integrity.jobs import make_sequencer
    from audit_service.stats import rollup

    await make_sequencer().catch_up(app.state.sessionmaker, no_fence)
    await rollup.catch_up(app.state.sessionmaker, no_fence, batch=20000)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"), required=False)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--password", default=os.environ.get("BENCH_ADMIN_PASSWORD", PASSWORD))
    parser.add_argument(
        "--catch-up",
        action="store_true",
        help="sequence and roll up what is pending before the histograms (writes the log and "
        "the statistics: only on a database of your own)",
    )
    args = parser.parse_args()
    if not args.database_url:
        raise SystemExit("--database-url (or DATABASE_URL) is required")
    settings = Settings(
        database_url=args.database_url,
        jwt_secret="b" * 40,
        bootstrap_admin_password=args.password,
        default_rate_limit="1000000/minute",
        login_rate_limit="1000/minute",
        run_jobs=False,  # measure the pages, not the jobs beside them
    )
    load_before = os.getloadavg()
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with app.state.engine.connect() as conn:
            values = await pick(conn)
        print(f"events: {values['events']:,}", file=sys.stderr)
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
        async with httpx.AsyncClient(
            transport=transport,
            base_url="https://bench",
            timeout=120,
            headers={"Sec-Fetch-Site": "same-origin", "User-Agent": "bench-console/1.0"},
        ) as client:
            await sign_in(client, args.password)
            if args.catch_up:
                await catch_up(app)
            results: dict[str, Any] = {}
            for name, url in scenarios(values):
                if url == "OLDER":
                    page = await client.get("/console/activity?page=500&page_size=20")
                    older = _OLDER.search(page.text)
                    if older is None:
                        print(f"{name:44} skipped (no Older link)", file=sys.stderr)
                        continue
                    url = older.group(1).replace("&amp;", "&")
                timings: list[float] = []
                r = None
                for i in range(args.runs + 2):
                    started = time.perf_counter()
                    r = await client.get(url)
                    elapsed = (time.perf_counter() - started) * 1000
                    if r.status_code != 200:
                        raise SystemExit(f"{name}: {r.status_code} {r.text[:500]}")
                    if i >= 2:  # two warm-up requests
                        timings.append(elapsed)
                assert r is not None
                result: dict[str, Any] = {
                    "p50_ms": round(statistics.median(timings), 1),
                    "p95_ms": round(pct(timings, 95), 1),
                    "bytes": len(r.content),
                    "url": url,
                }
                extra = ""
                if "/histogram" in url:
                    body = r.json()
                    result.update(
                        available=body["available"],
                        source=body["source"],
                        step=body["step"],
                        bars=len(body["counts"]),
                        total=body["total"],
                    )
                    extra = (
                        f"  {body['source'] or 'not available'}, {len(body['counts'])} bars "
                        f"per {body['step']}, {body['total']:,} events"
                        if body["available"]
                        else "  NOT AVAILABLE (over budget)"
                    )
                results[name] = result
                print(
                    f"{name:44} p50 {result['p50_ms']:7.1f} ms  p95 {result['p95_ms']:7.1f} ms"
                    + extra,
                    file=sys.stderr,
                )
    load_after = os.getloadavg()
    print(
        json.dumps(
            {
                "bench": "console",
                "events": values["events"],
                "runs": args.runs,
                "loadavg_before": [round(x, 2) for x in load_before],
                "loadavg_after": [round(x, 2) for x in load_after],
                "cpus": os.cpu_count(),
                "results": results,
                "command": " ".join(["python", *sys.argv]),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
