"""Statistics (issue 9, "Fast" + "Benchmark"): endpoint latency at scale, rollup freshness
under ingest, and what the `stats.rollup` job costs ingest. PostgreSQL only.

    python bench/stats.py check                      # backfill == the real rollup (small DB)
    python bench/stats.py endpoints --database-url URL [--backfill] [--runs 20]
    python bench/stats.py freshness [--rate 2000 --seconds 30]
    python bench/stats.py ingest [--events 200000]
    python bench/stats.py reports [--events 1000000] [--database-url URL --backfill]

`check` starts a private PostgreSQL, seeds --events with bench/seed_events.py, sequences
them and runs the real rollup (`rollup.catch_up`, as the job does), snapshots the three
rollup tables, empties them, fills them again with BACKFILL (one INSERT ... SELECT ... GROUP
BY per table) and asserts both are equal, row for row.

`endpoints` runs against a database seeded with `bench/seed_events.py --drop-indexes`. Those
rows were never sequenced, and sequencing 10M legacy rows runs at ~6k events/s (issue 8), so
`--backfill` fills the rollup tables with BACKFILL instead (the equivalence `check` proves).
Then the real app runs in-process (ASGI, no socket; jobs off, so nothing sequences the seeded
rows and counts them a second time) and every stats endpoint is timed over 1 day, 30 days
and 1 year up to the newest event, without and with each filter (tenant_id, module, action,
actor): p50/p95 over --runs requests after two warm-ups, auth and the `stats.viewed` recorder
included.

`freshness` starts a private PostgreSQL and `audit-service serve` with its in-process jobs
(sequencer, rollup, ...), sends --rate events/s as 100-event batches (open loop), 10 % of them
back-dated 1-30 days, while a poller GETs /admin/stats/freshness every 20 ms. For every event:
time from its batch's response to the first poll whose watermark covers its log position
(watermark and counts commit in one transaction). At the end /admin/stats/summary must count
every ingested event, back-dated ones included.

`ingest` is bench/integrity.py's ingest phase (1,000-event batches from 4 clients, as fast as
they go, jobs in `serve`) twice: AUDIT_STATS_ROLLUP_ENABLED=false, then true.

Every figure carries the 1-minute load average (`os.getloadavg`): the machine is shared.
Prints one JSON line per subcommand (progress on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import importlib
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common import RawConnection, admin_client, cpu_model
from ingest import Connection, make_events
from tests.pg import TempPostgres

from audit_service.audit_log.sequencer import no_fence
from audit_service.core import migrations
from audit_service.core.config import Settings
from audit_service.core.db import create_engine, create_sessionmaker
from audit_service.integrity.jobs import make_sequencer
from audit_service.main import create_app
from audit_service.stats import rollup
from integrity import Bench as LiveBench

PASSWORD = "bench-admin-password-123"  # the bootstrap admin's (common.ServiceBench's env)

_LEVELS = importlib.import_module("audit_service.migrations.versions.0022_stats_levels")
LEVEL_TABLES = ", ".join(_LEVELS.LEVELS)
STATS_TABLES = f"stats_bucket, stats_actor_bucket, stats_ip_bucket, {LEVEL_TABLES}, stats_watermark"

# --- the backfill: stats/rollup.py's Counts.of as SQL --------------------------------------

# Counts.of buckets by floor_bucket(epoch(occurred_at)): whole seconds, then down to 900.
_BUCKET = "(floor(extract(epoch FROM occurred_at) / 900) * 900)::bigint"
_OUTCOMES = ", ".join(
    f"count(*) FILTER (WHERE outcome = '{o}')" for o in ("success", "failure", "denied", "error")
)
_COUNTS = "n_success, n_failure, n_denied, n_error"
_LOGIN = ", ".join(f"'{a}'" for a in rollup.LOGIN_ACTIONS)
# ORDER BY 1: the job inserts buckets in log order, i.e. about in time order, so a period's
# rows sit together in the heap. A hash aggregate's order would scatter them (measured: a
# 30-day scan of stats_bucket touched one heap page per row, 160 ms instead of ~30).
BACKFILL = {
    "stats_bucket": (
        f"INSERT INTO stats_bucket (bucket, tenant_id, source, module, action, actor_type, "
        f"{_COUNTS}) SELECT {_BUCKET}, coalesce(tenant_id, ''), source, module, action, "
        f"actor_type, {_OUTCOMES} FROM audit_event GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1"
    ),
    "stats_actor_bucket": (
        f"INSERT INTO stats_actor_bucket (bucket, tenant_id, source, module, action, actor_type, "
        f"actor_id, {_COUNTS}) SELECT {_BUCKET}, coalesce(tenant_id, ''), source, module, "
        f"action, actor_type, coalesce(actor_id, ''), {_OUTCOMES} FROM audit_event "
        "GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1"
    ),
    # Python's `e["ip"]` / `e["actor_id"] or ...` treat '' like NULL: NULLIF does the same.
    "stats_ip_bucket": (
        f"INSERT INTO stats_ip_bucket (bucket, tenant_id, ip, actor_type, actor_key, {_COUNTS}, "
        f"logins_ok, logins_failed) SELECT {_BUCKET}, coalesce(tenant_id, ''), ip, actor_type, "
        "left(coalesce(nullif(actor_id, ''), 'name:' || nullif(actor_name, ''), ''), 205), "
        f"{_OUTCOMES}, count(*) FILTER (WHERE action IN ({_LOGIN}) AND outcome = 'success'), "
        f"count(*) FILTER (WHERE action IN ({_LOGIN}) AND outcome IN ('failure', 'denied')) "
        "FROM audit_event WHERE nullif(ip, '') IS NOT NULL GROUP BY 1, 2, 3, 4, 5 ORDER BY 1"
    ),
    # The coarser levels (migration 0022, the same statements): from the finer rows.
    **{table: _LEVELS.backfill_sql(table) for table in _LEVELS.LEVELS},
}


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def backfill(conn: asyncpg.Connection) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for table, sql in BACKFILL.items():
        t0 = time.perf_counter()
        status = await conn.execute(sql)
        out[table] = {
            "rows": int(status.split()[-1]),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(f"backfill {table}: {out[table]}", file=sys.stderr, flush=True)
    await conn.execute(f"ANALYZE {', '.join(BACKFILL)}")
    return out


async def snapshot(conn: asyncpg.Connection) -> dict[str, set[tuple[Any, ...]]]:
    return {t: {tuple(r) for r in await conn.fetch(f"SELECT * FROM {t}")} for t in BACKFILL}


# --- check ---------------------------------------------------------------------------------


async def check(args: argparse.Namespace) -> dict[str, Any]:
    pg = TempPostgres()
    url = pg.start()
    try:
        migrations.upgrade(url)
        seed = await asyncio.create_subprocess_exec(
            *[sys.executable, str(REPO / "bench" / "seed_events.py"), "--database-url", url,
              "--events", str(args.events), "--days", str(args.days), "--seed", "7"],
            cwd=REPO, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        if await seed.wait() != 0:
            raise SystemExit("seeding failed")
        engine = create_engine(url)
        sessions = create_sessionmaker(engine)
        t0 = time.perf_counter()
        await make_sequencer().catch_up(sessions, no_fence)
        r = await rollup.catch_up(sessions, no_fence)
        rolled_s = time.perf_counter() - t0
        await engine.dispose()
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            events = await conn.fetchval("SELECT count(*) FROM audit_event")
            assert r.watermark + 1 == events, (r.watermark, events)
            real = await snapshot(conn)
            await conn.execute(
                f"TRUNCATE stats_bucket, stats_actor_bucket, stats_ip_bucket, {LEVEL_TABLES}"
            )
            filled = await backfill(conn)
            again = await snapshot(conn)
        finally:
            await conn.close()
    finally:
        pg.stop()
    tables = {}
    for t in BACKFILL:
        tables[t] = {
            "rows": len(real[t]),
            "only_rollup": len(real[t] - again[t]),
            "only_backfill": len(again[t] - real[t]),
        }
    equal = all(real[t] == again[t] for t in BACKFILL)
    result = {
        "bench": "stats.check",
        "events": events,
        "equal": equal,
        "tables": tables,
        "rollup_s": round(rolled_s, 1),
        "backfill": filled,
    }
    print(json.dumps(result), file=sys.stderr)
    if not equal:
        raise SystemExit("the backfill differs from the rollup job's tables")
    return result


# --- endpoints -----------------------------------------------------------------------------


async def pick(conn: asyncpg.Connection) -> dict[str, Any]:
    n = "(n_success + n_failure + n_denied + n_error)"

    async def top(sql: str) -> Any:
        return await conn.fetchval(sql)

    return {
        "latest": await top("SELECT max(bucket) FROM stats_bucket"),
        "tenant_id": await top(
            f"SELECT tenant_id FROM stats_bucket WHERE tenant_id <> '' GROUP BY 1 "
            f"ORDER BY sum({n}) DESC LIMIT 1"
        ),
        "module": await top(
            f"SELECT module FROM stats_bucket GROUP BY 1 ORDER BY sum({n}) DESC OFFSET 2 LIMIT 1"
        ),
        "action": await top(
            f"SELECT action FROM stats_bucket GROUP BY 1 ORDER BY sum({n}) DESC LIMIT 1"
        ),
        "actor": await top(
            f"SELECT actor_id FROM stats_actor_bucket WHERE actor_type = 'user' GROUP BY 1 "
            f"ORDER BY sum({n}) DESC LIMIT 1"
        ),
    }


def scenarios(
    v: dict[str, Any], periods: Sequence[str], only_filters: Sequence[str], match: str
) -> list[tuple[str, str, str, str]]:
    """(endpoint, period, filter, URL) for every combination measured."""
    until = datetime.fromtimestamp(v["latest"] + 900, UTC)
    spans = {"1d": timedelta(days=1), "30d": timedelta(days=30), "1y": timedelta(days=365)}
    filters = {"none": {}, **{k: {k: v[k]} for k in ("tenant_id", "module", "action", "actor")}}
    endpoints: list[tuple[str, str, dict[str, str]]] = [
        ("summary", "summary", {}),
        ("summary compare", "summary", {"compare": "previous_period"}),
    ]
    for interval in ("hour", "day", "week", "month"):
        endpoints.append((f"timeseries {interval}", "timeseries", {"interval": interval}))
        endpoints.append(
            (f"timeseries {interval} by action", "timeseries", {"interval": interval,
             "group_by": "action"})
        )  # fmt: skip
    for dimension in ("actor", "action", "module", "ip", "source", "tenant"):
        endpoints.append((f"top {dimension}", "top", {"dimension": dimension}))
    endpoints.append(("peak-hours", "peak-hours", {}))
    out = []
    for period in periods:
        since = until - spans[period]
        for fname, fparams in filters.items():
            for name, path, params in endpoints:
                if fname not in only_filters or match not in name:
                    continue
                if name == "top ip" and fname in ("module", "action"):
                    continue  # a 422 by design: the IP table has no module/action
                query = {"since": since.isoformat(), "until": until.isoformat()}
                url = f"/admin/stats/{path}?{urlencode({**params, **fparams, **query})}"
                out.append((name, period, fname, url))
    return out


async def endpoints(args: argparse.Namespace) -> dict[str, Any]:
    dsn = args.database_url.replace("postgresql+asyncpg", "postgresql")
    conn = await asyncpg.connect(dsn)
    try:
        events = await conn.fetchval(
            "SELECT reltuples::bigint FROM pg_class WHERE relname = 'audit_event'"
        )
        filled = None
        if args.backfill:
            await conn.execute(
                "TRUNCATE stats_bucket, stats_actor_bucket, stats_ip_bucket, stats_watermark"
            )
            filled = await backfill(conn)
        sizes = {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in BACKFILL}
        values = await pick(conn)
    finally:
        await conn.close()
    settings = Settings(
        database_url=args.database_url,
        jwt_secret="b" * 40,
        bootstrap_admin_password=PASSWORD,
        default_rate_limit="1000000/minute",
        login_rate_limit="1000/minute",
        # Jobs off: the seeded rows are counted by the backfill, not by sequencing them.
        run_jobs=False,
    )
    app = create_app(settings)
    results: list[dict[str, Any]] = []
    async with (
        app.router.lifespan_context(app),
        admin_client(app, PASSWORD, request_timeout=120) as client,
    ):
        todo = scenarios(values, args.periods.split(","), args.filters.split(","), args.match)
        if args.match in "freshness":
            todo.append(("freshness", "-", "none", "/admin/stats/freshness"))
        for name, period, fname, url in todo:
            load = _load()
            timings = []
            for i in range(args.runs + 2):
                started = time.perf_counter()
                r = await client.get(url)
                elapsed = (time.perf_counter() - started) * 1000
                if r.status_code != 200:
                    raise SystemExit(f"{name} {period} {fname}: {r.status_code} {r.text}")
                if i >= 2:  # two warm-ups
                    timings.append(elapsed)
            row = {
                "endpoint": name,
                "period": period,
                "filter": fname,
                "p50_ms": round(statistics.median(timings), 1),
                "p95_ms": round(_pct(timings, 95), 1),
                "load": load,
                "bytes": len(r.content),
            }
            results.append(row)
            print(
                f"{name:28} {period:3} {fname:9} p50 {row['p50_ms']:7.1f}  "
                f"p95 {row['p95_ms']:7.1f} ms  load {load}",
                file=sys.stderr,
                flush=True,
            )
    worst = {
        p: max((r["p95_ms"] for r in results if r["period"] == p), default=None)
        for p in ("1d", "30d", "1y")
    }
    return {
        "bench": "stats.endpoints",
        "events_estimate": events,
        "rollup_rows": sizes,
        "backfill": filled,
        "filters": {k: v for k, v in values.items() if k != "latest"},
        "runs": args.runs,
        "worst_p95_ms": worst,
        "results": results,
    }


# --- reports -------------------------------------------------------------------------------


async def reports(args: argparse.Namespace) -> dict[str, Any]:
    """Time to build and render each report kind (POST /admin/reports/preview: the same
    build the scheduler runs before it sends), for the latest complete period."""
    pg = None
    url = args.database_url
    if url is None:
        pg = TempPostgres()
        url = pg.start()
        migrations.upgrade(url)
        seed = await asyncio.create_subprocess_exec(
            *[sys.executable, str(REPO / "bench" / "seed_events.py"), "--database-url", url,
              "--events", str(args.events), "--days", str(args.days), "--seed", "7",
              "--drop-indexes"],
            cwd=REPO, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        if await seed.wait() != 0:
            raise SystemExit("seeding failed")
    try:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            events = await conn.fetchval("SELECT count(*) FROM audit_event")
            if pg is not None or args.backfill:
                await conn.execute(f"TRUNCATE {STATS_TABLES}")
                await backfill(conn)
            values = await pick(conn)
        finally:
            await conn.close()
        settings = Settings(
            database_url=url,
            jwt_secret="b" * 40,
            bootstrap_admin_password=PASSWORD,
            default_rate_limit="1000000/minute",
            run_jobs=False,
        )
        latest = datetime.fromtimestamp(values["latest"], UTC).date()
        results = []
        app = create_app(settings)
        async with (
            app.router.lifespan_context(app),
            admin_client(app, PASSWORD, request_timeout=300) as client,
        ):
            # The day before the newest event: every kind's period holds data.
            day = (latest - timedelta(days=1)).isoformat()
            for kind in ("daily", "weekly", "monthly"):
                for scope in ("none", "tenant_id"):
                    body: dict[str, Any] = {"kind": kind, "tz": args.tz, "day": day}
                    if scope == "tenant_id":
                        body["tenant_id"] = values["tenant_id"]
                    load, timings = _load(), []
                    for i in range(args.runs + 1):
                        started = time.perf_counter()
                        r = await client.post("/admin/reports/preview", json=body)
                        if r.status_code != 200:
                            raise SystemExit(f"{kind} {scope}: {r.status_code} {r.text}")
                        if i:  # one warm-up
                            timings.append((time.perf_counter() - started) * 1000)
                    row = {
                        "kind": kind,
                        "filter": scope,
                        "p50_ms": round(statistics.median(timings), 1),
                        "max_ms": round(max(timings), 1),
                        "events_in_period": r.json()["report"]["figures"]["events"],
                        "html_bytes": len(r.json()["html"]),
                        "load": load,
                    }
                    results.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        if pg is not None:
            pg.stop()
    return {"bench": "stats.reports", "events": events, "tz": args.tz, "results": results}


# --- the live service: freshness and ingest ------------------------------------------------


class Live(LiveBench):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.env["AUDIT_DEFAULT_RATE_LIMIT"] = "1000000/minute"
        self.env["AUDIT_LOGIN_RATE_LIMIT"] = "1000/minute"

    async def reset(self) -> None:
        await super().reset()
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(f"TRUNCATE {STATS_TABLES}")
        finally:
            await conn.close()

    async def admin(self) -> RawConnection:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}") as client:
            r = await client.post("/login", json={"username": "admin", "password": PASSWORD})
            r.raise_for_status()
            token = r.json()["access_token"]
        conn = RawConnection("127.0.0.1", self.port)
        conn.token = token  # type: ignore[attr-defined]
        return conn

    async def get(self, conn: RawConnection, path: str) -> Any:
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Authorization: Bearer {conn.token}\r\n\r\n"  # type: ignore[attr-defined]
        ).encode()
        status, body = await conn.send(request)
        if status != 200:
            raise RuntimeError(f"{path}: {status} {body[:300]!r}")
        return json.loads(body)


def freshness_batches(
    n_batches: int, size: int, seed: int
) -> tuple[list[list[dict[str, Any]]], list[bool]]:
    """Batches of events occurring now, 10 % back-dated 1-30 days; per event: back-dated?
    `occurred_at` is an offset in seconds here, made a time when its batch is sent."""
    rng = random.Random(seed)
    events = make_events(n_batches * size, seed)
    back = []
    for e in events:
        dated = rng.random() < 0.1
        back.append(dated)
        e["occurred_at"] = -rng.randrange(86_400, 30 * 86_400) if dated else 0
    return [events[i * size : (i + 1) * size] for i in range(n_batches)], back


async def freshness(args: argparse.Namespace) -> dict[str, Any]:
    bench = Live(args)
    try:
        await bench.reset()
        service = bench.serve(jobs=True)
        await asyncio.sleep(2)  # the jobs claim their leases
        size = args.batch_size
        count = int(args.rate * args.seconds / size)
        batches, back = freshness_batches(count, size, seed=11)
        every = size / args.rate
        admin = await bench.admin()
        responses: list[tuple[float, list[int]]] = []
        late: list[float] = []
        statuses: dict[int, int] = {}
        timeline: list[tuple[float, int]] = []  # (seen at, watermark) via the endpoint
        timeline_sql: list[tuple[float, int]] = []  # the same, by SQL
        timeline_seq: list[tuple[float, int]] = []  # (seen at, last sequenced position)
        poll_ms: list[float] = []
        stop = asyncio.Event()
        pool: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(16):
            pool.put_nowait(Connection("127.0.0.1", bench.port, bench.key))

        async def poll() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                body = await bench.get(admin, "/admin/stats/freshness")
                # The watermark was read somewhere inside the request: its end is an upper
                # bound, the request's duration the uncertainty.
                timeline.append((time.perf_counter(), body["watermark"]))
                poll_ms.append((time.perf_counter() - t0) * 1000)
                await asyncio.sleep(0.02)

        async def poll_sql() -> None:
            # The same watermark read directly every 20 ms: finer than the endpoint when the
            # box is loaded and a request takes longer than that.
            conn = await asyncpg.connect(bench.dsn)
            try:
                while not stop.is_set():
                    row = await conn.fetchrow(
                        "SELECT (SELECT position FROM stats_watermark WHERE name = 'rollup'),"
                        " (SELECT next_position - 1 FROM log_cursor WHERE id = 1)"
                    )
                    now = time.perf_counter()
                    timeline_sql.append((now, -1 if row[0] is None else row[0]))
                    # The sequencer's progress too: which of the two stages the lag is in.
                    timeline_seq.append((now, -1 if row[1] is None else row[1]))
                    await asyncio.sleep(0.02)
            finally:
                await conn.close()

        async def send(part: list[dict[str, Any]]) -> None:
            now = datetime.now(UTC)
            for e in part:
                e["occurred_at"] = (now + timedelta(seconds=e["occurred_at"])).isoformat()
            body = json.dumps({"events": part}).encode()
            conn = await pool.get()
            try:
                status, answer = await conn.post("/events/batch", body)
                done = time.perf_counter()
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    responses.append((done, [r["id"] for r in json.loads(answer)["results"]]))
            finally:
                pool.put_nowait(conn)

        pollers = [asyncio.create_task(poll()), asyncio.create_task(poll_sql())]
        load_start = _load()
        before = bench.usage([service.pid])
        start = time.perf_counter()
        tasks = []
        for i, part in enumerate(batches):
            due = start + i * every
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            late.append(time.perf_counter() - due)
            tasks.append(asyncio.create_task(send(part)))
        await asyncio.gather(*tasks)
        spent = bench.spent(before, [service.pid], count * size)
        load_end = _load()
        conn = await asyncpg.connect(bench.dsn)
        try:
            ids = [i for _, batch in responses for i in batch]
            deadline = time.perf_counter() + 120
            positions: dict[int, int] = {}
            while time.perf_counter() < deadline:
                positions = dict(
                    await conn.fetch(
                        "SELECT event_pk, position FROM audit_leaf WHERE event_pk = ANY($1)", ids
                    )
                )
                if len(positions) == len(ids) and timeline[-1][1] >= max(positions.values()):
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.gather(*pollers)
            await conn.close()
        # Every event counted, the back-dated ones in their past buckets too.
        until = datetime.fromtimestamp((int(time.time()) // 900 + 1) * 900, UTC)
        query = urlencode(
            {"source": "exam-platform", "since": (until - timedelta(days=31)).isoformat(),
             "until": until.isoformat()}
        )  # fmt: skip
        summary = await bench.get(admin, f"/admin/stats/summary?{query}")
        admin.close()
        while not pool.empty():
            pool.get_nowait().close()
    finally:
        bench.stop_all()
        bench.close()

    def lags(line: list[tuple[float, int]]) -> tuple[dict[str, list[float]], int]:
        """Per event: its batch's response -> the first poll whose watermark covers it."""
        seen = [w for _, w in line]
        out: dict[str, list[float]] = {"all": [], "back-dated": [], "current": []}
        uncovered = 0
        k = 0
        for done, batch in responses:
            for event_pk in batch:
                dated = back[k]
                k += 1
                position = positions.get(event_pk)
                j = len(seen) if position is None else bisect.bisect_left(seen, position)
                if j == len(seen):
                    uncovered += 1
                    continue
                lag = max(0.0, line[j][0] - done)
                out["all"].append(lag)
                out["back-dated" if dated else "current"].append(lag)
        return out, uncovered

    def pcts(values: list[float]) -> dict[str, Any]:
        if not values:
            return {"n": 0}
        return {
            "n": len(values),
            **{f"p{p}_ms": round(_pct(values, p) * 1000, 1) for p in (50, 95, 99)},
            "max_ms": round(max(values) * 1000, 1),
        }

    http_lags, uncovered = lags(timeline)
    sql_lags, _ = lags(timeline_sql)
    seq_lags, _ = lags(timeline_seq)
    return {
        "bench": "stats.freshness",
        "rate": args.rate,
        "seconds": args.seconds,
        "batch_size": size,
        "events": count * size,
        "statuses": statuses,
        "ingest": spent,
        "send_late_p99_ms": round(_pct(late, 99) * 1000, 1),
        "polls": len(timeline),
        "poll_ms": {"p50": round(_pct(poll_ms, 50), 1), "p95": round(_pct(poll_ms, 95), 1)},
        "uncovered": uncovered,
        "lag": {name: pcts(v) for name, v in http_lags.items()},
        "lag_sql_poll": {name: pcts(v) for name, v in sql_lags.items()},
        "to_sequenced": pcts(seq_lags["all"]),
        "summary_events": summary["figures"]["events"],
        "summary_counts_all": summary["figures"]["events"] == count * size,
        "load": [load_start, load_end],
    }


async def ingest(args: argparse.Namespace) -> dict[str, Any]:
    bench = Live(args)
    out: dict[str, Any] = {}
    try:
        bodies = bench.bodies(args.events, seed=5)
        for _ in range(args.repeat):
            for mode in ("off", "on"):
                bench.env["AUDIT_STATS_ROLLUP_ENABLED"] = "true" if mode == "on" else "false"
                load = _load()
                r = await bench.ingest("serve", bodies)
                r["load"] = [load, _load()]
                print(json.dumps({mode: r}), file=sys.stderr, flush=True)
                out.setdefault(mode, []).append(r)
    finally:
        bench.close()
    off = statistics.median(r["events_per_s"] for r in out["off"])
    on = statistics.median(r["events_per_s"] for r in out["on"])
    return {
        "bench": "stats.ingest",
        "events": args.events,
        "events_per_s_off": off,
        "events_per_s_on": on,
        "drop_pct": round((off - on) / off * 100, 1),
        "runs": out,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("check", help="the backfill equals the real rollup (small database)")
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--days", type=int, default=60)
    p = sub.add_parser("endpoints", help="p50/p95 of every stats endpoint on a seeded DB")
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL"), required=False)
    p.add_argument("--backfill", action="store_true", help="refill the rollups from the rows")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--periods", default="1d,30d,1y")
    p.add_argument("--filters", default="none,tenant_id,module,action,actor")
    p.add_argument("--match", default="", help="only endpoints whose name contains this")
    p = sub.add_parser("reports", help="time to build each report kind")
    p.add_argument("--database-url", default=None, help="default: a private, seeded PostgreSQL")
    p.add_argument("--backfill", action="store_true")
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--days", type=int, default=400)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--tz", default="Europe/Berlin")
    for name in ("freshness", "ingest"):
        p = sub.add_parser(name)
        p.add_argument("--pin", choices=("auto", "none"), default="auto")
        p.add_argument("--batch-clients", type=int, default=4)
    sub.choices["freshness"].add_argument("--rate", type=float, default=2000)
    sub.choices["freshness"].add_argument("--seconds", type=float, default=30)
    sub.choices["freshness"].add_argument("--batch-size", type=int, default=100)
    sub.choices["ingest"].add_argument("--events", type=int, default=200_000)
    sub.choices["ingest"].add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    run = {
        "check": check,
        "endpoints": endpoints,
        "freshness": freshness,
        "ingest": ingest,
        "reports": reports,
    }
    started = _load()
    result = asyncio.run(run[args.mode](args))
    result["load_at_start"] = started
    result["machine"] = {"nproc": os.cpu_count(), "cpu": cpu_model()}
    result["command"] = shlex.join([sys.executable, "bench/stats.py", *sys.argv[1:]])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
