"""Query latency of /admin/activity at scale: p50/p95 per scenario, and each query's plan.

Runs the real app in-process (ASGI, no socket) against a seeded Postgres, picks realistic
filter values from the data itself, times every scenario, then EXPLAINs the SQL each one ran.

    python bench/seed_events.py --database-url URL --events 10000000 --drop-indexes
    python bench/query.py --database-url URL [--runs 30] [--explain docs/query-plans.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from audit_service.core.config import Settings
from audit_service.main import create_app

PASSWORD = "bench-admin-password"
# Pick filter values from the generated history, not from this benchmark's own requests.
SEEDED = "occurred_at < now() - interval '1 day' AND ip <> '127.0.0.1'"


async def pick_values(conn: Any) -> dict[str, Any]:
    async def one(sql: str) -> Any:
        return (await conn.execute(text(sql))).scalar()

    latest = await one("SELECT max(occurred_at) FROM audit_event")
    return {
        "top_actor": await one(
            "SELECT actor_name FROM audit_event WHERE actor_type = 'user' GROUP BY actor_name "
            "ORDER BY count(*) DESC LIMIT 1"
        ),
        "median_actor": await one(
            "SELECT actor_id FROM (SELECT actor_id, count(*) c FROM audit_event "
            "WHERE actor_type = 'user' GROUP BY actor_id) s ORDER BY c LIMIT 1 OFFSET 5000"
        ),
        "common_action": await one(
            "SELECT action FROM audit_event GROUP BY action ORDER BY count(*) DESC LIMIT 1"
        ),
        "rare_action": await one(
            "SELECT action FROM audit_event GROUP BY action ORDER BY count(*) LIMIT 1"
        ),
        "module": await one(
            "SELECT module FROM audit_event GROUP BY module ORDER BY count(*) DESC OFFSET 2 LIMIT 1"
        ),
        "source": await one(
            "SELECT source FROM audit_event WHERE source <> 'audit-service' GROUP BY source "
            "ORDER BY count(*) DESC LIMIT 1"
        ),
        "tenant": await one(
            "SELECT tenant_id FROM audit_event WHERE tenant_id IS NOT NULL GROUP BY tenant_id "
            "ORDER BY count(*) DESC LIMIT 1"
        ),
        "target_id": await one(
            "SELECT target_id FROM audit_event WHERE target_id IS NOT NULL "
            f"AND {SEEDED} ORDER BY id DESC LIMIT 1 OFFSET 12345"
        ),
        "ip": await one(
            f"SELECT ip FROM audit_event WHERE {SEEDED} ORDER BY id DESC LIMIT 1 OFFSET 777"
        ),
        "request_id": await one(
            "SELECT request_id FROM audit_event WHERE request_id IS NOT NULL "
            f"AND {SEEDED} ORDER BY id DESC LIMIT 1 OFFSET 4321"
        ),
        "latest": latest,
    }


def scenarios(v: dict[str, Any]) -> dict[str, str]:
    ip = v["ip"]
    cidr = ".".join(ip.split(".")[:2]) + ".0.0/16" if "." in ip else ip + "/64"
    end = v["latest"].replace(hour=0, minute=0, second=0, microsecond=0)
    day_range = (
        f"since={end.isoformat()}".replace("+", "%2B")
        + "&until="
        + (end.replace(hour=23, minute=59)).isoformat().replace("+", "%2B")
    )
    # The last 30 days up to the newest event, not "since the 1st": on the 1st of a month
    # that window was empty and the month scenarios measured nothing.
    month_end = v["latest"] + timedelta(microseconds=1)  # until is exclusive
    month_range = (
        f"since={(month_end - timedelta(days=30)).isoformat()}&until={month_end.isoformat()}"
    ).replace("+", "%2B")
    return {
        "first page": "",
        "actor (top user)": f"actor={v['top_actor']}",
        "actor (typical user)": f"actor={v['median_actor']}",
        "action (common)": f"action={v['common_action']}",
        "action (rare)": f"action={v['rare_action']}",
        "module": f"module={v['module']}",
        "outcome=denied": "outcome=denied",
        "outcome=error": "outcome=error",
        "source": f"source={v['source']}",
        "tenant_id": f"tenant_id={v['tenant']}",
        "target_id": f"target_id={v['target_id']}",
        "ip exact": f"ip={ip}",
        "ip CIDR /16": f"ip={cidr}",
        "date range: a day": day_range,
        "date range: a month": month_range,
        "actor + month": f"actor={v['top_actor']}&{month_range}",
        "action + month": f"action={v['common_action']}&{month_range}",
        "module + outcome": f"module={v['module']}&outcome=failure",
        "ip CIDR + month": f"ip={cidr}&{month_range}",
        "q common word": "q=login",
        "q rare word": "q=quarantine",
        "q no match": "q=zzqxv",
        "request_id": f"request_id={v['request_id']}",
        "exclude_action (common)": f"exclude_action={v['common_action']}",
        "module + exclude_actor": f"module={v['module']}&exclude_actor={v['top_actor']}",
        "exclude_ip CIDR /16 + month": f"exclude_ip={cidr}&{month_range}",
    }


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument("--cursor-depth", type=int, default=1000)
    parser.add_argument("--explain", type=Path, help="write EXPLAIN ANALYZE plans to this file")
    args = parser.parse_args()
    settings = Settings(
        database_url=args.database_url,
        jwt_secret="b" * 40,
        bootstrap_admin_password=PASSWORD,
        default_rate_limit="1000000/minute",
        login_rate_limit="1000/minute",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        engine = app.state.engine
        async with engine.connect() as conn:
            values = await pick_values(conn)
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", timeout=120
        ) as client:
            r = await client.post("/login", json={"username": "admin", "password": PASSWORD})
            r.raise_for_status()
            client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
            results: dict[str, Any] = {}
            captured: dict[str, list[tuple[str, Any]]] = {}
            current: list[str] = [""]

            def capture(
                _conn: Any,
                _cursor: Any,
                statement: str,
                parameters: Any,
                _context: Any,
                _executemany: bool,
            ) -> None:
                if "audit_event" in statement and not statement.lstrip().startswith("INSERT"):
                    captured.setdefault(current[0], []).append((statement, parameters))

            for name, params in scenarios(values).items():
                url = f"/admin/activity?page_size={args.page_size}&{params}"
                timings = []
                for i in range(args.runs + 2):
                    started = time.perf_counter()
                    r = await client.get(url)
                    elapsed = (time.perf_counter() - started) * 1000
                    if r.status_code != 200:
                        raise SystemExit(f"{name}: {r.status_code} {r.text}")
                    if i >= 2:  # two warm-up runs
                        timings.append(elapsed)
                body = r.json()
                results[name] = {
                    "p50_ms": round(statistics.median(timings), 1),
                    "p95_ms": round(pct(timings, 95), 1),
                    "total": body["total"],
                    "estimate": body["total_is_estimate"],
                    "params": params,
                }
                print(
                    f"{name:24} p50 {results[name]['p50_ms']:7.1f} ms  "
                    f"p95 {results[name]['p95_ms']:7.1f} ms  total {body['total']}"
                    f"{' (est.)' if body['total_is_estimate'] else ''}",
                    file=sys.stderr,
                )

            # Page N by cursor: walk there, then time the deep page itself.
            url = f"/admin/activity?page_size={args.page_size}&action={values['common_action']}"
            cursor = None
            for _ in range(args.cursor_depth - 1):
                r = await client.get(url + (f"&cursor={cursor}" if cursor else ""))
                cursor = r.json()["next_cursor"]
            timings = []
            for _ in range(args.runs):
                started = time.perf_counter()
                r = await client.get(f"{url}&cursor={cursor}")
                timings.append((time.perf_counter() - started) * 1000)
            results[f"page {args.cursor_depth} via cursor"] = {
                "p50_ms": round(statistics.median(timings), 1),
                "p95_ms": round(pct(timings, 95), 1),
            }
            timings = []
            for _ in range(args.runs):
                started = time.perf_counter()
                r = await client.get(url + "&last=true")
                timings.append((time.perf_counter() - started) * 1000)
            results["last page"] = {
                "p50_ms": round(statistics.median(timings), 1),
                "p95_ms": round(pct(timings, 95), 1),
            }

            if args.explain:
                event.listen(engine.sync_engine, "before_cursor_execute", capture)
                for name, params in scenarios(values).items():
                    current[0] = name
                    await client.get(f"/admin/activity?page_size={args.page_size}&{params}")
                event.remove(engine.sync_engine, "before_cursor_execute", capture)
                await write_plans(engine, captured, args.explain)

    print(
        json.dumps(
            {
                "bench": "query",
                "events": results["first page"]["total"],
                "runs": args.runs,
                "page_size": args.page_size,
                "results": results,
                "command": " ".join(["python", *sys.argv]),
            }
        )
    )


async def write_plans(engine: Any, captured: dict[str, list[tuple[str, Any]]], out: Path) -> None:
    lines = [
        "# Query plans at scale",
        "",
        "Generated by `bench/query.py --explain`. EXPLAIN (ANALYZE, BUFFERS) of the SQL "
        "each /admin/activity scenario ran (page query, then count).",
        "",
    ]
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        for name, statements in captured.items():
            lines += [f"## {name}", ""]
            for statement, parameters in statements:
                if "audit_event" not in statement or "EXPLAIN" in statement:
                    continue
                sql = statement
                plan = await driver.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *parameters)
                lines += ["```", sql.strip(), "", *(row[0] for row in plan), "```", ""]
    out.write_text("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
