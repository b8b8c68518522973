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

Prints a confusion table and a JSON line; progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
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

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "bench", REPO / "src"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from ingest import COPY_COLUMNS
from tests.pg import TempPostgres

from audit_service.audit_log.sequencer import no_fence
from audit_service.core import migrations
from audit_service.core.db import create_engine, create_sessionmaker
from audit_service.detections import service
from audit_service.integrity.jobs import make_sequencer
from audit_service.kit.net import ip_key, parse_ip

SOURCE = "campus"
ZONE = ZoneInfo("America/New_York")
TENANTS = [f"school-{i}" for i in range(5)]
AGENTS = ("Mozilla/5.0 (Windows NT 10.0) Firefox/131.0", "Mozilla/5.0 (Macintosh) Safari/17")
ACTIONS = (("grade", "grade.viewed"), ("exam", "exam.submitted"), ("course", "course.opened"))
ATTACK_NET = "203.0.113"
NIGHT_TENANT = "night-school"


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
            "same_alerts_as_one_evaluator": outcome["heavy"]["rows"] == outcome["heavy3"]["rows"],
        }
        result["batch_500"] = {
            "alerts": outcome["heavy500"]["alerts"],
            "sum_count": outcome["heavy500"]["sum_count"],
            "same_alerts_as_batch_2000": outcome["heavy"]["rows"] == outcome["heavy500"]["rows"],
            "differing_keys": sorted(
                {r[0] for r in set(outcome["heavy"]["rows"]) ^ set(outcome["heavy500"]["rows"])}
            )[:5],
        }
    finally:
        pg.stop()
    result["load_1m_end"] = os.getloadavg()[0]
    return result


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
    args = parser.parse_args()
    t0 = time.perf_counter()
    result = asyncio.run(run(args))
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    print(confusion(result))
    for a in result["attacks"]:
        print(f"  {a['attack']:<42} delay {a['delay_s']} s  also: {', '.join(a['also']) or '-'}")
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
