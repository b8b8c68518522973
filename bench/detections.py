"""Detections (issue 10, "Measured"): a synthetic benign month with injected attacks, through
the real evaluator (`detections.service.evaluate_round`, as the `detections.evaluate` job
runs it) on a private PostgreSQL (tests/pg.py). Prints numbers, not a test.

    python bench/detections.py [--users 500 --days 35 --seed 7 --heavy 20000]

(1) benign    --days days ending now, --users users in 5 tenants of one source (America/
              New_York, which leaves summer time on 2026-11-01: the rhythm is local, so it
              moves by an hour in UTC), weekday diurnal rhythm (arrive 07:30-09:30, leave
              16:00-18:30, lunch dip; ~1.2 events/h each; a few Saturday sessions and
              evening logins), 2 % of logins preceded by a typo (1-2 failures), 10 % of
              users on a VPN some days (5 shared exits), 3 % travelling (3 days from another
              network), 25 admins doing user.* and config.changed daily, one service account
              busy around the clock. COPYed into audit_event with their arrival times
              (recorded_at), sequenced, and evaluated from the start: evaluator throughput
              ("ordinary") and every alert is a false positive.
(2) attacks   live, one after another, each COPYed at once with its own arrival times ending
              at the moment it is inserted (a 5-minute brute force is not waited for), while
              the sequencer and the evaluator run as their jobs do (loops, 0.2 s poll):
              brute force 20 tries in 5 min, spray 30 users x 1 try over 30 min, success
              after 6 failures, 8 IPs x 2 tries on one user, an off-hours admin login (its
              tenant's time zone is set so that now is 03:xx there), a 10x spike of the
              service account. Detected = an alert of the expected rule about the expected
              entity; delay = its `opened_at` - the commit of the attack's last event.
(3) heavy     --heavy login attempts over 2 h (70 % failures, 100 IPs, 3,000 users: the
              brute-force, daily and success-after-failures rules fire and repeat) sequenced, then
              evaluated once by one evaluator (throughput "login-heavy"), once, on a copy
              of the database, by 3 concurrent evaluators (each its own engine and pool, as 3
              processes; the alert rows and `alert.opened` events must be the same, none
              duplicated), and once by one evaluator in batches of 500 (what the batch size
              alone changes).

Then, through the service as a user runs it (`audit-service serve` / `worker` subprocesses on
a second private PostgreSQL, a real aiosmtpd and a Standard-Webhooks-verifying receiver in
this process, an e-mail and a webhook alert channel; grouping timers the defaults, so the
first notification of a group waits AUDIT_ALERT_GROUP_WAIT = 30 s):
(4) notify    `serve` with its jobs; a 20-try brute force in one batch: time from the
              batch's 2xx (its commit) to the alert row's `opened_at`, to the e-mail at
              aiosmtpd and to the signed webhook (target <= 40 s each).
(5) dup3      `serve` without jobs (for the API) + 3 `audit-service worker`: --dup-attacks
              brute forces in as many tenants; every uninhibited medium+ alert (the
              channels' default min_severity) reaches the webhook,
              no group version twice (webhook-id ntf_{channel}_{group}_{version}_{send}).
(6) kill9     --kill-backlog login attempts (as in heavy) sequenced in two copies of one
              database: one evaluated by one worker, the other by a worker `kill -9`ed
              once 40 % through and a new worker after it: the alerts must be identical.
(7) ingest    --ingest-events in 1,000-event batches from --batch-clients clients into
              `serve` with its jobs, AUDIT_DETECTIONS_ENABLED false then true, alternated
              --ingest-rounds times: events/s and the drop (target <= 5 %).

    python bench/detections.py --phases notify,kill9   # any of month,heavy,notify,dup3,kill9,ingest

Prints a confusion table and JSON lines; progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shlex
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
from aiosmtpd.controller import Controller

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "bench", REPO / "src"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from common import ServiceBench, free_port
from ingest import COPY_COLUMNS, Connection, make_events
from tests.forwarding.receivers import WebhookReceiver
from tests.pg import TempPostgres
from tests.reports.smtp import Handler as SmtpHandler

from audit_service.audit_log.sequencer import no_fence
from audit_service.core import migrations
from audit_service.core.db import create_engine, create_sessionmaker
from audit_service.detections import service
from audit_service.integrity.jobs import make_sequencer
from audit_service.kit.net import ip_key, parse_ip
from audit_service.kit.webhooks import new_secret

SOURCE = "campus"
ZONE = ZoneInfo("America/New_York")
TENANTS = [f"school-{i}" for i in range(5)]
AGENTS = ("Mozilla/5.0 (Windows NT 10.0) Firefox/131.0", "Mozilla/5.0 (Macintosh) Safari/17")
ACTIONS = (("grade", "grade.viewed"), ("exam", "exam.submitted"), ("course", "course.opened"))
ATTACK_NET = "203.0.113"
NIGHT_TENANT = "night-school"
SERVICE_PHASES = ("notify", "dup3", "kill9", "ingest")
PHASES = ("month", "heavy", *SERVICE_PHASES)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def row(
    at: datetime,
    *,
    tenant: str,
    user: str,
    action: str,
    module: str,
    ip: str,
    outcome: str = "success",
    role: str | None = "user",
    actor_type: str = "user",
    agent: str = AGENTS[0],
) -> tuple[Any, ...]:
    return (
        uuid.uuid4(),
        at,
        at,
        SOURCE,
        tenant,
        actor_type,
        user,
        user,
        role,
        action,
        module,
        outcome,
        None,
        None,
        None,
        ip,
        ip_key(parse_ip(ip)),
        agent,
        "{}",
        uuid.uuid4().hex,
    )


def login(at: datetime, tenant: str, user: str, ip: str, ok: bool, **kw: Any) -> tuple[Any, ...]:
    return row(
        at,
        tenant=tenant,
        user=user,
        action="auth.login" if ok else "auth.login_failed",
        module="auth",
        ip=ip,
        outcome="success" if ok else "failure",
        actor_type="user" if ok else "anonymous",
        **kw,
    )


# --- the benign month ------------------------------------------------------------------------


def benign(users: int, days: int, seed: int, end: datetime) -> list[tuple[Any, ...]]:
    rnd = random.Random(seed)
    rows: list[tuple[Any, ...]] = []
    start_day = (end - timedelta(days=days)).astimezone(ZONE).date()
    people = []
    for i in range(users):
        tenant = TENANTS[i % len(TENANTS)]
        home = f"198.18.{i // 250}.{i % 250 + 1}"
        people.append(
            {
                "name": f"user{i:04d}",
                "tenant": tenant,
                "home": home,
                "rate": rnd.uniform(0.6, 1.8),
                "vpn": rnd.random() < 0.10,
                "admin": i % 20 == 0,
                "evening": rnd.random() < 0.05,
                "saturday": rnd.random() < 0.10,
                "travel": rnd.randrange(days) if rnd.random() < 0.03 else None,
            }
        )
    vpn_exits = [f"100.64.{k}.{rnd.randrange(1, 250)}" for k in range(5)]

    def at_local(day: Any, hour: float) -> datetime:
        naive = datetime(day.year, day.month, day.day) + timedelta(hours=hour)
        return naive.replace(tzinfo=ZONE).astimezone(UTC)

    for d in range(days + 1):
        day = start_day + timedelta(days=d)
        weekday = day.weekday()
        for p in people:
            ip = p["home"]
            if p["vpn"] and rnd.random() < 0.5:
                ip = rnd.choice(vpn_exits)
            if p["travel"] is not None and p["travel"] <= d < p["travel"] + 3:
                ip = f"192.0.2.{(hash(p['name']) % 200) + 1}"
            if weekday < 5:
                begin, leave = rnd.uniform(7.5, 9.5), rnd.uniform(16.0, 18.5)
            elif weekday == 5 and p["saturday"] and rnd.random() < 0.5:
                begin = rnd.uniform(10, 13)
                leave = begin + rnd.uniform(0.5, 2)
            else:
                continue
            sessions = [(begin, leave)]
            if p["evening"] and weekday < 5 and rnd.random() < 0.3:
                e0 = rnd.uniform(20.5, 22.0)
                sessions.append((e0, e0 + rnd.uniform(0.2, 0.8)))
            for s0, s1 in sessions:
                t = at_local(day, s0)
                if t >= end:
                    continue
                if rnd.random() < 0.02:
                    for k in range(rnd.choice((1, 1, 2))):
                        rows.append(
                            login(
                                t - timedelta(seconds=20 * (k + 1)),
                                p["tenant"],
                                p["name"],
                                ip,
                                False,
                            )
                        )
                rows.append(login(t, p["tenant"], p["name"], ip, True))
                hour = s0
                while True:
                    hour += rnd.expovariate(p["rate"])
                    if hour >= s1:
                        break
                    if 12.0 <= hour < 13.0 and rnd.random() < 0.6:
                        continue
                    at = at_local(day, hour)
                    if at >= end:
                        break
                    if p["admin"] and rnd.random() < 0.15:
                        action, module = rnd.choice(
                            (("user.updated", "users"), ("config.changed", "settings"))
                        )
                        role = "admin"
                    else:
                        module, action = rnd.choice(ACTIONS)
                        role = "admin" if p["admin"] else "user"
                    rows.append(
                        row(
                            at,
                            tenant=p["tenant"],
                            user=p["name"],
                            action=action,
                            module=module,
                            ip=ip,
                            role=role,
                        )
                    )
        # The service account: ~4 events an hour, around the clock.
    t = end - timedelta(days=days)
    while t < end:
        t += timedelta(hours=rnd.expovariate(4.0))
        if t < end:
            rows.append(
                row(
                    t,
                    tenant=TENANTS[0],
                    user="sync-bot",
                    action="course.synced",
                    module="course",
                    ip="198.19.0.10",
                )
            )
    rows.sort(key=lambda r: r[2])
    return rows


async def copy(
    conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]], chunk: int = 5000
) -> None:
    for i in range(0, len(rows), chunk):
        async with conn.transaction():
            await conn.copy_records_to_table(
                "audit_event", records=rows[i : i + chunk], columns=COPY_COLUMNS
            )


# --- attacks ---------------------------------------------------------------------------------


def attacks(now: datetime, heavy_user_rate: float) -> list[dict[str, Any]]:
    """(name, expected rule, entity, rows with arrival times ending at `now`)."""
    out: list[dict[str, Any]] = []

    def spread(n: int, minutes: float) -> list[datetime]:
        return [now - timedelta(minutes=minutes) * (1 - i / max(1, n - 1)) for i in range(n)]

    t0 = TENANTS[1]
    bf_ip = f"{ATTACK_NET}.10"
    out.append(
        {
            "attack": "brute force 20 tries / 5 min",
            "rule": "brute_force_ip",
            "entity": bf_ip,
            "rows": [
                login(t, t0, f"user{(i % 7) * 5 + 1:04d}", bf_ip, False)
                for i, t in enumerate(spread(20, 5))
            ],
        }
    )
    spray_ip = f"{ATTACK_NET}.20"
    out.append(
        {
            "attack": "spray 30 users x 1 try / 30 min",
            "rule": "password_spray",
            "entity": spray_ip,
            "rows": [
                login(t, t0, f"user{i * 5 + 2:04d}", spray_ip, False)
                for i, t in enumerate(spread(30, 30))
            ],
        }
    )
    saf_ip = f"{ATTACK_NET}.30"
    times = spread(7, 3)
    out.append(
        {
            "attack": "success after 6 failures",
            "rule": "success_after_failures",
            "entity": "user0103",
            "rows": [login(t, t0, "user0103", saf_ip, i == 6) for i, t in enumerate(times)],
        }
    )
    out.append(
        {
            "attack": "8 IPs x 2 tries on one user",
            "rule": "distributed_brute_force",
            "entity": "user0204",
            "rows": [
                login(t, TENANTS[4], "user0204", f"{ATTACK_NET}.{40 + i % 8}", False)
                for i, t in enumerate(spread(16, 20))
            ],
        }
    )
    out.append(
        {
            "attack": "off-hours admin login",
            "rule": "off_hours_policy",
            "entity": "night-admin",
            "rows": [login(now, NIGHT_TENANT, "night-admin", "198.18.9.9", True, role="admin")],
        }
    )
    n = max(20, round(10 * heavy_user_rate))
    out.append(
        {
            "attack": f"10x volume spike ({n} events in the hour)",
            "rule": "volume_spike_user",
            "entity": "sync-bot",
            "rows": [
                row(
                    t,
                    tenant=TENANTS[0],
                    user="sync-bot",
                    action="course.synced",
                    module="course",
                    ip="198.19.0.10",
                )
                for t in spread(n, 2)
            ],
        }
    )
    return out


def night_zone(now: datetime) -> str:
    for offset in range(-12, 15):
        if (now + timedelta(hours=offset)).hour == 3:
            return "Etc/GMT" + ("" if offset == 0 else f"{-offset:+d}")
    return "UTC"


# --- the evaluator ---------------------------------------------------------------------------


def config() -> service.Config:
    return service.Config(ZONE, service._LOOPBACK)


async def sequence(sessions: Any) -> None:
    await make_sequencer().catch_up(sessions, no_fence)


async def evaluate_all(sessions: Any, batch: int = 2000) -> tuple[int, float]:
    t0 = time.perf_counter()
    r = await service.catch_up(sessions, config(), no_fence, batch=batch)
    return r.evaluated, time.perf_counter() - t0


async def live(sessions: Any, stop: asyncio.Event) -> None:
    seq = make_sequencer()
    cfg = config()
    while not stop.is_set():
        await seq.catch_up(sessions, no_fence)
        while True:
            async with sessions() as session:
                r = await service.evaluate_round(session, cfg, no_fence, batch=2000)
            if not r.more:
                break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)


async def alert_rows(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, rule_id, severity, entity_value, opened_at, dedup_key, count, status,"
        " inhibited_by FROM alert ORDER BY id"
    )


# --- heavy: throughput and concurrent evaluators -----------------------------------------------


def heavy_rows(n: int, seed: int, end: datetime) -> list[tuple[Any, ...]]:
    rnd = random.Random(seed)
    start = end - timedelta(hours=2)
    rows = []
    for i in range(n):
        at = start + timedelta(seconds=7200 * i / n)
        # 100 IPs: ~12 failures per IP per 10 min, so the login rules fire and repeat.
        ip = f"172.16.0.{rnd.randrange(100)}"
        rows.append(
            login(at, rnd.choice(TENANTS), f"h{rnd.randrange(3000)}", ip, rnd.random() > 0.7)
        )
    return rows


async def run(args: argparse.Namespace) -> dict[str, Any]:
    pg = TempPostgres()
    url = pg.start()
    raw = url.replace("postgresql+asyncpg", "postgresql")
    result: dict[str, Any] = {"bench": "detections", "load_1m_start": os.getloadavg()[0]}
    try:
        migrations.upgrade(url)
        if "month" in args.phases:
            conn = await asyncpg.connect(raw)
            now = datetime.now(UTC).replace(microsecond=0)
            month_end = now - timedelta(minutes=2)
            log("generating the benign month")
            rows = benign(args.users, args.days, args.seed, month_end)
            logins = sum(1 for r in rows if r[9].startswith("auth."))
            result["benign"] = {
                "events": len(rows),
                "logins": logins,
                "users": args.users,
                "days": args.days,
            }
            log(f"copying {len(rows)} events")
            await copy(conn, rows)
            engine = create_engine(url, pool_size=5)
            sessions = create_sessionmaker(engine)
            t0 = time.perf_counter()
            await sequence(sessions)
            result["benign"]["sequenced_s"] = round(time.perf_counter() - t0, 1)
            log("evaluating the benign month")
            n, secs = await evaluate_all(sessions)
            result["throughput_ordinary"] = {
                "events": n,
                "seconds": round(secs, 1),
                "events_per_s": round(n / secs),
                "load_1m": os.getloadavg()[0],
            }
            benign_alerts = await alert_rows(conn)
            result["benign"]["alerts"] = Counter(
                f"{a['rule_id']}:{a['severity']}" for a in benign_alerts
            )
            result["benign"]["medium_or_higher"] = sum(
                a["severity"] in ("medium", "high", "critical") for a in benign_alerts
            )
            result["benign"]["medium_plus_detail"] = [
                f"{a['rule_id']} {a['entity_value']} {a['severity']}"
                for a in benign_alerts
                if a["severity"] in ("medium", "high", "critical")
            ][:20]
            # The night tenant's zone puts now at 03:xx; its business hours are the defaults.
            await conn.execute(
                "INSERT INTO detection_rule_setting"
                " (rule_id, tenant_id, thresholds, updated_at, time_zone)"
                " VALUES ('off_hours_policy', $1, '{}', now(), $2)",
                NIGHT_TENANT,
                night_zone(datetime.now(UTC)),
            )
            log("attacks, live")
            stop = asyncio.Event()
            runner = asyncio.create_task(live(sessions, stop))
            seen = {a["id"] for a in benign_alerts}
            table = []
            for i in range(len(attacks(datetime.now(UTC), 4.0))):
                # Each attack's arrival times end at the moment it goes in.
                attack = attacks(datetime.now(UTC), 4.0)[i]
                await copy(conn, attack["rows"])
                committed = datetime.now(UTC)
                found = None
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline and found is None:
                    for a in await alert_rows(conn):
                        if a["rule_id"] == attack["rule"] and a["entity_value"] == attack["entity"]:
                            found = a
                            break
                    if found is None:
                        await asyncio.sleep(0.1)
                await asyncio.sleep(1.0)
                new = [a for a in await alert_rows(conn) if a["id"] not in seen]
                seen |= {a["id"] for a in new}
                table.append(
                    {
                        "attack": attack["attack"],
                        "expected": attack["rule"],
                        "detected": found is not None,
                        "delay_s": None
                        if found is None
                        else round((found["opened_at"] - committed).total_seconds(), 2),
                        "also": sorted(
                            {
                                f"{a['rule_id']}:{a['severity']}"
                                for a in new
                                if found is None or a["id"] != found["id"]
                            }
                        ),
                    }
                )
                log(f"{attack['attack']}: {table[-1]}")
            stop.set()
            await runner
            result["attacks"] = table
            await engine.dispose()
            await conn.close()

        if "heavy" in args.phases:
            log(f"heavy: {args.heavy} login attempts")
            conn = await asyncpg.connect(raw.rsplit("/", 1)[0] + "/postgres")
            await conn.execute("CREATE DATABASE heavy")
            await conn.close()
            heavy_url = url.rsplit("/", 1)[0] + "/heavy"
            migrations.upgrade(heavy_url)
            conn = await asyncpg.connect(raw.rsplit("/", 1)[0] + "/heavy")
            await copy(conn, heavy_rows(args.heavy, args.seed, datetime.now(UTC)))
            # Business hours all day: the throughput of the login rules, not of opening an
            # off_hours_policy alert for every login when the bench runs at night.
            await conn.execute(
                "INSERT INTO detection_rule_setting (rule_id, tenant_id, thresholds, updated_at)"
                """ VALUES ('off_hours_policy', '', '{"start_hour": 0, "end_hour": 24,"""
                """ "weekends_off": 0}', now())"""
            )
            await conn.close()
            engine = create_engine(heavy_url)
            sessions = create_sessionmaker(engine)
            await sequence(sessions)
            await engine.dispose()
            conn = await asyncpg.connect(raw.rsplit("/", 1)[0] + "/postgres")
            await conn.execute("CREATE DATABASE heavy3 TEMPLATE heavy")
            await conn.execute("CREATE DATABASE heavy500 TEMPLATE heavy")
            await conn.close()
            engine = create_engine(heavy_url)
            sessions = create_sessionmaker(engine)
            n, secs = await evaluate_all(sessions)
            await engine.dispose()
            result["throughput_login_heavy"] = {
                "events": n,
                "seconds": round(secs, 1),
                "events_per_s": round(n / secs),
                "load_1m": os.getloadavg()[0],
            }
            three_url = url.rsplit("/", 1)[0] + "/heavy3"
            engines = [create_engine(three_url) for _ in range(3)]
            t0 = time.perf_counter()
            await asyncio.gather(*(evaluate_all(create_sessionmaker(e)) for e in engines))
            three_s = time.perf_counter() - t0
            for e in engines:
                await e.dispose()
            # One evaluator again, in batches of 500: what the batch size alone changes.
            engine = create_engine(url.rsplit("/", 1)[0] + "/heavy500")
            await evaluate_all(create_sessionmaker(engine), batch=500)
            await engine.dispose()
            outcome = {}
            for name in ("heavy", "heavy3", "heavy500"):
                conn = await asyncpg.connect(raw.rsplit("/", 1)[0] + "/" + name)
                alerts = await conn.fetch(
                    "SELECT dedup_key, count, rule_id FROM alert ORDER BY dedup_key"
                )
                opened = await conn.fetchval(
                    "SELECT count(*) FROM audit_event WHERE action = 'alert.opened'"
                )
                dup = await conn.fetchval(
                    "SELECT count(*) FROM (SELECT dedup_key FROM alert WHERE status <> 'resolved'"
                    " GROUP BY dedup_key HAVING count(*) > 1) d"
                )
                outcome[name] = {
                    "alerts": len(alerts),
                    "sum_count": sum(a["count"] for a in alerts),
                    "opened_events": opened,
                    "duplicate_keys": dup,
                    "rows": [tuple(a) for a in alerts],
                }
                await conn.close()
            result["concurrent_3"] = {
                "seconds": round(three_s, 1),
                "alerts_1": outcome["heavy"]["alerts"],
                "sum_count_1": outcome["heavy"]["sum_count"],
                "sum_count_3": outcome["heavy3"]["sum_count"],
                "alerts_3": outcome["heavy3"]["alerts"],
                "opened_events_3": outcome["heavy3"]["opened_events"],
                "duplicates": outcome["heavy3"]["duplicate_keys"]
                + outcome["heavy3"]["opened_events"]
                - outcome["heavy3"]["alerts"],
                "same_alerts_as_one_evaluator": outcome["heavy"]["rows"]
                == outcome["heavy3"]["rows"],
            }
            result["batch_500"] = {
                "alerts": outcome["heavy500"]["alerts"],
                "sum_count": outcome["heavy500"]["sum_count"],
                "same_alerts_as_batch_2000": outcome["heavy"]["rows"]
                == outcome["heavy500"]["rows"],
                "differing_keys": sorted(
                    {r[0] for r in set(outcome["heavy"]["rows"]) ^ set(outcome["heavy500"]["rows"])}
                )[:5],
            }
    finally:
        pg.stop()
    result["load_1m_end"] = os.getloadavg()[0]
    return result


# --- through the service: notifications, 3 processes, kill -9, ingest cost -----------------


class Service(ServiceBench):
    """`audit-service serve` / `worker` subprocesses on the bench's PostgreSQL, a real aiosmtpd
    and a signature-verifying webhook receiver (tests/reports/smtp.py,
    tests/forwarding/receivers.py) in this process. Alert grouping timers are the defaults
    (AUDIT_ALERT_GROUP_WAIT unset: 30 s)."""

    def __init__(self, args: argparse.Namespace, smtp_url: str) -> None:
        super().__init__(
            args,
            {
                "AUDIT_INGEST_IP_RATE_LIMIT": "1000000/second",
                "AUDIT_DEFAULT_RATE_LIMIT": "1000000/minute",
                "AUDIT_LOGIN_RATE_LIMIT": "1000000/minute",
                "AUDIT_FORWARD_ALLOW_PRIVATE": "127.0.0.0/8",
                "AUDIT_SMTP_URL": smtp_url,
            },
        )
        self.procs: list[subprocess.Popen[bytes]] = []
        self.port = 0
        self.token = ""

    def spawn(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([self.cli, *argv], env={**self.env, **env}, cwd=REPO)
        self.procs.append(proc)
        return proc

    def serve(self, jobs: bool, **env: str) -> subprocess.Popen[bytes]:
        self.port = free_port()
        argv = ["serve", "--no-migrate", "--host", "127.0.0.1", "--port", str(self.port)]
        proc = self.spawn(
            [*argv, "--log-level", "warning"],
            {"AUDIT_RUN_JOBS": "true" if jobs else "false", **env},
        )
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("the service did not start")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz").status_code == 200:
                    return proc
            except httpx.HTTPError:
                time.sleep(0.1)

    def worker(self, **env: str) -> subprocess.Popen[bytes]:
        return self.spawn(["worker", "--no-migrate", "--log-level", "warning"], env)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(2)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()
        self.token = ""

    def close(self) -> None:
        self.stop_all()
        self.pg.stop()

    async def api(self, method: str, path: str, body: Any = None) -> Any:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=60) as c:
            if not self.token:
                r = await c.post(
                    "/login", json={"username": "admin", "password": "bench-admin-password-123"}
                )
                r.raise_for_status()
                self.token = r.json()["access_token"]
            r = await c.request(
                method, path, json=body, headers={"Authorization": f"Bearer {self.token}"}
            )
            if r.status_code >= 300:
                raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
            return r.json() if r.content else None

    async def post_events(self, events: list[dict[str, Any]]) -> float:
        """One batch; the wall time of its 2xx (its commit precedes the response)."""
        c = Connection("127.0.0.1", self.port, self.key)
        status, body = await c.post("/events/batch", json.dumps({"events": events}).encode())
        c.close()
        if status >= 300:
            raise RuntimeError(f"batch: {status} {body[:300]!r}")
        return time.time()


def brute_force_events(ip: str, tenant: str, n: int = 20) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [
        {
            "action": "auth.login_failed",
            "module": "auth",
            "outcome": "failure",
            "actor_type": "anonymous",
            "actor_id": f"user{i % 7:04d}",
            "actor_name": f"user{i % 7:04d}",
            "occurred_at": (now - timedelta(seconds=(n - i) * 5)).isoformat(),
            "ip": ip,
            "user_agent": AGENTS[0],
            "tenant_id": tenant,
            "idempotency_key": uuid.uuid4().hex,
        }
        for i in range(n)
    ]


async def wait_for(check: Any, within: float, what: str) -> float | None:
    """Seconds until `check()` (sync or async) is true; None if not within `within`."""
    t0 = time.time()
    while time.time() - t0 < within:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.time() - t0
        await asyncio.sleep(0.05)
    log(f"timed out: {what}")
    return None


def msg_ids(receiver: Any) -> list[str]:
    return [r.headers.get("webhook-id", "") for r in receiver.accepted]


def webhook_alert_ids(receiver: Any) -> set[int]:
    return {a["id"] for r in receiver.accepted for a in json.loads(r.body)["alerts"]}


async def notify_phase(svc: Service, smtp: Any, receiver: Any) -> dict[str, Any]:
    """(1) latency: brute force → alert row, e-mail at aiosmtpd, signed webhook."""
    proc = svc.serve(jobs=True)
    await svc.api(
        "POST",
        "/admin/alerts/channels",
        {"name": "soc-mail", "kind": "email", "recipients": ["soc@example.com"]},
    )
    await svc.api(
        "POST",
        "/admin/alerts/channels",
        {
            "name": "soc-hook",
            "kind": "webhook",
            "url": receiver.url + "/alerts",
            "secrets": [receiver.secret],
        },
    )
    await asyncio.sleep(2)
    conn = await asyncpg.connect(svc.dsn)
    ip = f"{ATTACK_NET}.77"
    mails0, hooks0 = len(smtp.received), len(receiver.accepted)
    committed = await svc.post_events(brute_force_events(ip, "school-notify"))

    async def alert_row() -> Any:
        return await conn.fetchrow(
            "SELECT id, opened_at FROM alert WHERE rule_id = 'brute_force_ip'"
            " AND entity_value = $1",
            ip,
        )

    await wait_for(alert_row, 60, "alert row")
    found = await alert_row()
    mail_s = await wait_for(lambda: len(smtp.received) > mails0, 90, "e-mail")
    mail_s = None if mail_s is None else time.time() - committed
    hook_s = await wait_for(lambda: len(receiver.accepted) > hooks0, 90, "webhook")
    hook_s = None if hook_s is None else time.time() - committed
    await conn.close()
    svc.stop_all()
    del proc
    out: dict[str, Any] = {
        "phase": "notify",
        "alert_s": None if found is None else round(found["opened_at"].timestamp() - committed, 2),
        "email_s": None if mail_s is None else round(mail_s, 2),
        "webhook_s": None if hook_s is None else round(hook_s, 2),
        "webhook_bad_signatures": receiver.bad_signatures,
        "target_s": 40,
    }
    out["ok"] = all(
        out[k] is not None and out[k] <= 40 for k in ("alert_s", "email_s", "webhook_s")
    )
    return out


async def dup3_phase(svc: Service, receiver: Any, n: int) -> dict[str, Any]:
    """(2) 3 `audit-service worker` processes on one database (and a `serve` without jobs for
    the API): `n` brute forces in `n` tenants (`n` groups) → each alert notified once per
    group version, none missing."""
    svc.serve(jobs=False)
    workers = [svc.worker() for _ in range(3)]
    await asyncio.sleep(3)
    conn = await asyncpg.connect(svc.dsn)
    before_ids = set(msg_ids(receiver))
    before_alerts = {r["id"] for r in await conn.fetch("SELECT id FROM alert")}
    t0 = time.time()
    for i in range(n):
        await svc.post_events(brute_force_events(f"{ATTACK_NET}.{100 + i}", f"tenant-dup-{i}"))

    async def all_alerts() -> set[int]:
        # What the channels (default min_severity medium) must be told: the medium-or-higher
        # alerts that are not inhibited (by a stronger one about the same attack).
        rows = await conn.fetch(
            "SELECT id FROM alert WHERE inhibited_by IS NULL"
            " AND severity IN ('medium', 'high', 'critical')"
        )
        return {r["id"] for r in rows} - before_alerts

    new_alerts: set[int] = set()

    async def notified() -> bool:
        nonlocal new_alerts
        new_alerts = await all_alerts()
        return bool(new_alerts) and new_alerts <= webhook_alert_ids(receiver)

    took = await wait_for(notified, 120, "all alerts notified")
    notified_at = time.time()
    await asyncio.sleep(10)  # a late duplicate would arrive by now (poll 1 s)
    new_alerts = await all_alerts()
    ids = [m for m in msg_ids(receiver) if m not in before_ids]
    # msg id: ntf_{channel}_{group digest}_{version}_{send number}
    versions = Counter(m.rsplit("_", 1)[0] for m in ids)
    groups = await conn.fetch(
        "SELECT channel_id, group_key, version FROM notification_group ORDER BY 1, 2"
    )
    all_rows = await conn.fetch("SELECT id FROM alert")
    inhibited = await conn.fetchval(
        "SELECT count(*) FROM alert WHERE inhibited_by IS NOT NULL AND NOT (id = ANY($1))",
        list(before_alerts),
    )
    await conn.close()
    alive = sum(w.poll() is None for w in workers)
    svc.stop_all()
    notified_ids = webhook_alert_ids(receiver)
    out = {
        "phase": "dup3",
        "processes": "3 x audit-service worker + serve (no jobs)",
        "attacks": n,
        "expected_alerts": len(new_alerts),
        "new_alerts_all": len({r["id"] for r in all_rows} - before_alerts),
        "new_alerts_inhibited": inhibited,
        "webhook_requests": len(ids),
        "distinct_webhook_ids": len(set(ids)),
        "distinct_group_versions": len(versions),
        "group_versions_sent_twice": sum(1 for v in versions.values() if v > 1),
        "alerts_missing": len(new_alerts - notified_ids),
        "all_notified_after_s": None if took is None else round(notified_at - t0, 1),
        "notification_groups": len(groups),
        "workers_alive_at_end": alive,
    }
    out["ok"] = (
        out["alerts_missing"] == 0
        and out["group_versions_sent_twice"] == 0
        and out["webhook_requests"] == out["distinct_webhook_ids"]
    )
    return out


async def kill_phase(svc: Service, n: int, seed: int) -> dict[str, Any]:
    """(3) a backlog of `n` login attempts, sequenced, in two identical databases: one
    evaluated by one worker undisturbed, the other by a worker `kill -9`ed mid-run and
    another started after it; the alerts must be the same."""
    admin = await asyncpg.connect(svc.dsn.rsplit("/", 1)[0] + "/postgres")
    await admin.execute("CREATE DATABASE killsrc")
    await admin.close()
    src = svc.url.rsplit("/", 1)[0] + "/killsrc"
    migrations.upgrade(src)
    conn = await asyncpg.connect(svc.dsn.rsplit("/", 1)[0] + "/killsrc")
    await copy(conn, heavy_rows(n, seed, datetime.now(UTC)))
    await conn.execute(
        "INSERT INTO detection_rule_setting (rule_id, tenant_id, thresholds, updated_at)"
        """ VALUES ('off_hours_policy', '', '{"start_hour": 0, "end_hour": 24,"""
        """ "weekends_off": 0}', now())"""
    )
    await conn.close()
    engine = create_engine(src)
    await sequence(create_sessionmaker(engine))
    await engine.dispose()
    admin = await asyncpg.connect(svc.dsn.rsplit("/", 1)[0] + "/postgres")
    await admin.execute("CREATE DATABASE kill_clean TEMPLATE killsrc")
    await admin.execute("CREATE DATABASE kill_killed TEMPLATE killsrc")
    await admin.close()

    async def done(conn: asyncpg.Connection) -> bool:
        events = await conn.fetchval("SELECT count(*) FROM audit_event")
        leaves = await conn.fetchval("SELECT count(*) FROM audit_leaf")
        last = await conn.fetchval("SELECT coalesce(max(position), -1) FROM audit_leaf")
        pos = await conn.fetchval(
            "SELECT position FROM detection_state WHERE name = $1", service.EVALUATOR
        )
        return bool(events == leaves and pos is not None and pos >= last)

    async def settle(conn: asyncpg.Connection, within: float) -> float | None:
        t0 = time.time()
        stable = 0
        while time.time() - t0 < within:
            stable = stable + 1 if await done(conn) else 0
            if stable >= 4:  # caught up for ~2 s: its own alert.* events evaluated too
                return time.time() - t0
            await asyncio.sleep(0.5)
        return None

    async def outcome(conn: asyncpg.Connection) -> dict[str, Any]:
        rows = await conn.fetch(
            "SELECT rule_id, dedup_key, count, status FROM alert ORDER BY dedup_key, rule_id"
        )
        opened = await conn.fetchval(
            "SELECT count(*) FROM audit_event WHERE action = 'alert.opened'"
        )
        return {"rows": [tuple(r) for r in rows], "opened": opened}

    out: dict[str, Any] = {"phase": "kill9", "backlog": n}
    base = svc.dsn.rsplit("/", 1)[0]
    # Clean: one worker until caught up.
    conn = await asyncpg.connect(base + "/kill_clean")
    svc.worker(DATABASE_URL=svc.url.rsplit("/", 1)[0] + "/kill_clean")
    clean_s = await settle(conn, 300)
    svc.stop_all()
    clean = await outcome(conn)
    await conn.close()
    # Killed: kill -9 once the evaluator is part-way through, then a new worker.
    conn = await asyncpg.connect(base + "/kill_killed")
    last = await conn.fetchval("SELECT max(position) FROM audit_leaf")
    first = svc.worker(DATABASE_URL=svc.url.rsplit("/", 1)[0] + "/kill_killed")

    async def partway() -> bool:
        pos = await conn.fetchval(
            "SELECT position FROM detection_state WHERE name = $1", service.EVALUATOR
        )
        return pos is not None and pos >= last * 0.4

    await wait_for(partway, 300, "evaluator part-way")
    killed_at = await conn.fetchval(
        "SELECT position FROM detection_state WHERE name = $1", service.EVALUATOR
    )
    alerts_at_kill = await conn.fetchval("SELECT count(*) FROM alert")
    os.kill(first.pid, 9)
    first.wait()
    svc.procs.remove(first)
    svc.worker(DATABASE_URL=svc.url.rsplit("/", 1)[0] + "/kill_killed")
    killed_s = await settle(conn, 300)
    svc.stop_all()
    killed = await outcome(conn)
    await conn.close()
    out.update(
        {
            "clean_caught_up_s": None if clean_s is None else round(clean_s, 1),
            "killed_at_position": killed_at,
            "of_positions": last + 1,
            "alerts_at_kill": alerts_at_kill,
            "restart_caught_up_s": None if killed_s is None else round(killed_s, 1),
            "alerts_clean": len(clean["rows"]),
            "alerts_killed": len(killed["rows"]),
            "sum_count_clean": sum(r[2] for r in clean["rows"]),
            "sum_count_killed": sum(r[2] for r in killed["rows"]),
            "opened_events_clean": clean["opened"],
            "opened_events_killed": killed["opened"],
            "differing": sorted({r[1] for r in set(clean["rows"]) ^ set(killed["rows"])})[:5],
        }
    )
    out["ok"] = clean["rows"] == killed["rows"] and clean["opened"] == killed["opened"]
    return out


async def ingest_phase(svc: Service, n: int, clients: int, rounds: int) -> dict[str, Any]:
    """(4) `serve` with its jobs, detections on and off (AUDIT_DETECTIONS_ENABLED), the same
    1,000-event batches from `clients` clients, alternated `rounds` times."""
    events = make_events(n, seed=43)
    bodies = [json.dumps({"events": events[i : i + 1000]}).encode() for i in range(0, n, 1000)]
    runs: dict[str, list[float]] = {"off": [], "on": []}
    for r in range(rounds):
        for mode in ("off", "on"):
            proc = svc.serve(
                jobs=True, AUDIT_DETECTIONS_ENABLED="true" if mode == "on" else "false"
            )
            await asyncio.sleep(2)
            tag = f'"idempotency_key": "{mode}{r}-'.encode()
            queue = [b.replace(b'"idempotency_key": "', tag) for b in reversed(bodies)]
            statuses: Counter[int] = Counter()

            async def client(queue: list[bytes] = queue, st: Counter[int] = statuses) -> None:
                c = Connection("127.0.0.1", svc.port, svc.key)
                while queue:
                    status, _ = await c.post("/events/batch", queue.pop())
                    st[status] += 1
                c.close()

            t0 = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(clients)))
            took = time.perf_counter() - t0
            if set(statuses) - {200, 201, 202}:
                raise RuntimeError(f"ingest statuses {dict(statuses)}")
            runs[mode].append(n / took)
            log(f"ingest {mode} round {r}: {n / took:.0f} events/s")
            svc.stop_all()
            del proc
    off = sum(runs["off"]) / len(runs["off"])
    on = sum(runs["on"]) / len(runs["on"])
    return {
        "phase": "ingest",
        "events_per_run": n,
        "clients": clients,
        "events_per_s_off": [round(x) for x in runs["off"]],
        "events_per_s_on": [round(x) for x in runs["on"]],
        "mean_off": round(off),
        "mean_on": round(on),
        "drop": round(1 - on / off, 3),
        "ok": 1 - on / off <= 0.05,
        "load_1m": os.getloadavg()[0],
    }


async def service_phases(args: argparse.Namespace, phases: list[str]) -> list[dict[str, Any]]:
    handler = SmtpHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    receiver = WebhookReceiver(new_secret())
    await receiver.start()
    svc = Service(args, f"smtp://127.0.0.1:{controller.port}")
    out: list[dict[str, Any]] = []
    smtp = type("Smtp", (), {"received": handler.received})()
    try:
        if "notify" in phases or "dup3" in phases:
            log("notify: brute force -> alert, e-mail, webhook (group wait 30 s)")
            out.append(await notify_phase(svc, smtp, receiver))
            log(json.dumps(out[-1]))
        if "dup3" in phases:
            log(f"dup3: {args.dup_attacks} attacks, 3 worker processes")
            out.append(await dup3_phase(svc, receiver, args.dup_attacks))
            log(json.dumps(out[-1]))
        if "kill9" in phases:
            log(f"kill9: {args.kill_backlog} login attempts, kill -9 part-way")
            out.append(await kill_phase(svc, args.kill_backlog, args.seed))
            log(json.dumps(out[-1]))
        if "ingest" in phases:
            log(f"ingest: {args.ingest_events} events, detections off/on")
            out.append(
                await ingest_phase(svc, args.ingest_events, args.batch_clients, args.ingest_rounds)
            )
            log(json.dumps(out[-1]))
    finally:
        svc.close()
        await receiver.stop()
        controller.stop()
    return out


def confusion(result: dict[str, Any]) -> str:
    lines = ["rule                        expected  detected  delay_s  benign FP (by severity)"]
    fp: dict[str, Counter[str]] = defaultdict(Counter)
    for key, n in result["benign"]["alerts"].items():
        rule, severity = key.split(":")
        fp[rule][severity] += n
    rules = [a["expected"] for a in result["attacks"]] + sorted(
        set(fp) - {a["expected"] for a in result["attacks"]}
    )
    by_rule = {a["expected"]: a for a in result["attacks"]}
    for rule in rules:
        a = by_rule.get(rule)
        exp = "1" if a else "0"
        det = ("1" if a["detected"] else "0") if a else "-"
        delay = f"{a['delay_s']}" if a and a["delay_s"] is not None else "-"
        fps = ", ".join(f"{s} {n}" for s, n in sorted(fp[rule].items())) or "0"
        lines.append(f"{rule:<28}{exp:>8}{det:>10}{delay:>9}  {fps}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--days", type=int, default=35)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--heavy", type=int, default=20_000)
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma list of {', '.join(PHASES)} (default: all)",
    )
    parser.add_argument("--dup-attacks", type=int, default=8)
    parser.add_argument("--kill-backlog", type=int, default=6000)
    parser.add_argument("--ingest-events", type=int, default=20_000)
    parser.add_argument("--ingest-rounds", type=int, default=2)
    parser.add_argument("--batch-clients", type=int, default=4)
    parser.add_argument("--pin", choices=("auto", "none"), default="none")
    args = parser.parse_args()
    args.phases = [p for p in args.phases.split(",") if p]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    t0 = time.perf_counter()
    print(f"uptime at start: {os.getloadavg()}", flush=True)
    result: dict[str, Any] = {}
    if {"month", "heavy"} & set(args.phases):
        result = asyncio.run(run(args))
        if "month" in args.phases:
            print(confusion(result))
            for a in result["attacks"]:
                also = ", ".join(a["also"]) or "-"
                print(f"  {a['attack']:<42} delay {a['delay_s']} s  also: {also}")
        print(json.dumps(result, default=str), flush=True)
    service_set = [p for p in args.phases if p in SERVICE_PHASES]
    if service_set:
        for row in asyncio.run(service_phases(args, service_set)):
            print(json.dumps(row, default=str), flush=True)
    print(
        json.dumps(
            {
                "phase": "machine",
                "wall_s": round(time.perf_counter() - t0, 1),
                "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
                "command": shlex.join([sys.executable, "bench/detections.py", *sys.argv[1:]]),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
