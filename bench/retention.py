"""What retention costs on a big log (issue 12, "Measured"): archive rate, a purge of ~1M
events under concurrent reads and ingest, anonymising ~1M events, `verify` afterwards.

Runs against an existing database (--database-url), seeded and migrated as
docs/performance.md ("Retention (issue 12)") shows; it changes that database (segments are
written, rows deleted and rewritten), so point it at a copy you can throw away. Phases, in
the order given (each prints one JSON line; progress on stderr):

  prepare    the sequencer catches the whole log up (leaf hashes, tiles, day keys) and one
             checkpoint is signed (bench/proofs.py `sequence_and_sign`): archiving needs it.
             Timed: the one-off cost of turning on the tamper-evident log on an old log.
  archive    the clock is moved to 90 days after the day that holds the --archive-events'th
             oldest event (by recorded_at), so with the default rules (migration 0022:
             everything archived at 90 days) exactly the days up to it are due; the archive
             step (retention/jobs.py ArchiveStep, the job's own code) runs once: events/s.
  purge      `audit-service serve` (jobs off) is started; a child process loops over
             `/admin/activity` pages (newest page, two cursor pages, a page inside the range
             being deleted, a filtered page) and posts 500-event batches from
             --ingest-clients (2) connections. It runs --load-seconds as the baseline, the
             sequencer catches up (while the load goes on), then the purge
             step (retention/purge.py run_purge) runs at a clock of 365 days after the
             archived days (rule "Everything else": delete at 365) while the load continues.
             Purge seconds; activity p50/p95 and ingest events/s, baseline vs during.
  anonymize  the IP and user-agent periods are set so the days after the archived ones up to
             the one holding --anonymize-events more events are due (plus what the purge
             kept of the archived days); the anonymise step runs until no day is left:
             seconds and events/s.
  verify     the sequencer catches up, a checkpoint is signed, then `audit-service verify
             --json` over the whole log: status, problems (every one a false positive:
             nothing was tampered with), seconds.

Boundaries chosen by one phase are kept in --state (JSON) for the next. The machine's load
average is printed with every figure. Reproduce (docs/performance.md has the full setup):

    python bench/retention.py --work-dir /tmp/sbench-retention \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1:55433/retention \\
        prepare archive purge anonymize verify
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

REPO = Path(__file__).resolve().parents[1]
for entry in (REPO / "bench", REPO, REPO / "src"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from common import (
    JWT_SECRET,
    RawConnection,
    children,
    free_port,
    proc_cpu,
    start_service,
    stop_service,
)
from ingest import Connection, make_events

from audit_service.audit_log.sequencer import no_fence
from audit_service.core.config import Settings
from audit_service.core.db import create_engine, create_sessionmaker
from audit_service.integrity import note
from audit_service.integrity.jobs import make_sequencer
from audit_service.retention.anonymize import run_anonymize
from audit_service.retention.jobs import ArchiveStep, StepContext
from audit_service.retention.purge import run_purge

PASSWORD = "bench-retention-password-123"
ORIGIN = "bench.example/audit-service/retention"
DEFAULT_DELETE_DAYS = 365  # rule "Everything else" of migration 0022
DEFAULT_ARCHIVE_DAYS = 90


def log(*parts: Any) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}]", *parts, file=sys.stderr, flush=True)


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


def midnight(d: date) -> datetime:
    return datetime.combine(d, dtime(), UTC)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.url = args.database_url
        self.dsn = self.url.replace("postgresql+asyncpg", "postgresql")
        self.state_path = args.work_dir / "state.json"
        self.state: dict[str, Any] = (
            json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        )
        key = self.state.get("signing_key")
        if key is None:
            key = note.Signer.generate("bench.audit-service").private_key
            self.state["signing_key"] = key
            self.save()
        self.signing_key = key
        self.postmaster = self._postmaster()

    def save(self) -> None:
        self.state_path.write_text(json.dumps(self.state, indent=1, default=str))

    def _postmaster(self) -> int | None:
        """The server's postmaster pid (for its CPU), if it runs on this machine."""
        port = self.url.rsplit(":", 1)[1].split("/")[0]
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"postgres") and b"-D" in cmd:
                data = Path(cmd[cmd.index(b"-D") + 1].decode())
                try:
                    if (data / "postmaster.pid").read_text().split("\n")[3].strip() == port:
                        return int(entry.name)
                except (OSError, IndexError):
                    continue
        return None

    def settings(self, **extra: Any) -> Settings:
        return Settings(
            database_url=self.url,
            jwt_secret=JWT_SECRET,
            log_signing_key=self.signing_key,
            log_origin=ORIGIN,
            archive_dir=self.args.work_dir / "archive",
            run_jobs=False,
            **extra,
        )

    def cpu(self) -> tuple[float, float, float]:
        """(wall, this process's CPU, PostgreSQL's CPU incl. exited backends)."""
        pg = 0.0
        if self.postmaster is not None:
            pg = proc_cpu(self.postmaster, reaped_children=True) + sum(
                proc_cpu(p) for p in children(self.postmaster)
            )
        return time.perf_counter(), proc_cpu(os.getpid(), reaped_children=True), pg

    def spent(self, before: tuple[float, float, float], events: int) -> dict[str, Any]:
        wall, own, pg = (b - a for a, b in zip(before, self.cpu(), strict=True))
        return {
            "seconds": round(wall, 2),
            "events_per_s": round(events / wall) if wall else None,
            "bench_cpu_s": round(own, 1),
            "postgres_cpu_s": round(pg, 1),
            "cpu_us_per_event": round((own + pg) / events * 1e6, 1) if events else None,
        }

    async def sql(self, query: str, *params: Any) -> Any:
        conn = await asyncpg.connect(self.dsn)
        try:
            return await conn.fetchval(query, *params)
        finally:
            await conn.close()

    def emit(self, phase: str, result: dict[str, Any]) -> None:
        out = {"bench": "retention", "phase": phase, **result, "load_avg": load_avg()}
        self.state.setdefault("results", {})[phase] = out
        self.save()
        print(json.dumps(out, default=str), flush=True)

    # --- prepare ---------------------------------------------------------------------------

    async def prepare(self) -> None:
        from bench.proofs import sequence_and_sign

        before = await self.sql("SELECT count(*) FROM audit_event")
        load0 = load_avg()
        t0 = self.cpu()
        done = await sequence_and_sign(self.settings())
        self.emit(
            "prepare",
            {"events": before, **done, **self.spent(t0, before), "load_avg_start": load0},
        )

    # --- archive ---------------------------------------------------------------------------

    async def archive(self) -> None:
        n = self.args.archive_events
        # The day holding the n-th oldest event: archiving every day up to and including it
        # covers at least n events.
        nth = await self.sql(
            "SELECT recorded_at FROM audit_event ORDER BY recorded_at, id OFFSET $1 LIMIT 1", n
        )
        end_day = nth.astimezone(UTC).date() + timedelta(days=1)  # exclusive
        now = midnight(end_day) + timedelta(days=DEFAULT_ARCHIVE_DAYS, hours=1)
        self.state["archive_end"] = end_day.isoformat()
        self.save()
        due = await self.sql(
            "SELECT count(*) FROM audit_event WHERE recorded_at < $1", midnight(end_day)
        )
        log(f"archive: clock {now.isoformat()}, days before {end_day}: {due} events")
        engine = create_engine(self.url)
        ctx = StepContext(create_sessionmaker(engine), self.settings(), now)
        load0 = load_avg()
        t0 = self.cpu()
        try:
            report = await ArchiveStep().run(ctx)
        finally:
            await engine.dispose()
        events = int(report.facts["events"])
        self.emit(
            "archive",
            {
                "now": now,
                "archived_before": end_day,
                "due_events": due,
                "events": events,
                "segments": report.facts["segments"],
                "waiting": report.facts["waiting"][:5],
                **self.spent(t0, events),
                "archive_mib": round(_du(self.args.work_dir / "archive") / 2**20, 1),
                "load_avg_start": load0,
                "target_events_per_s": 50_000,
            },
        )

    # --- purge under load --------------------------------------------------------------------

    def _cli(self, env: dict[str, str], *argv: str, stdin: str | None = None) -> str:
        cli = str(Path(sys.executable).with_name("audit-service"))
        done = subprocess.run(
            [cli, *argv], env=env, cwd=REPO, input=stdin, capture_output=True, text=True
        )
        if done.returncode:
            raise RuntimeError(f"audit-service {argv[0]}: {done.stderr.strip()}")
        return done.stdout.strip()

    async def purge(self) -> None:
        end_day = date.fromisoformat(self.state["archive_end"])
        now = midnight(end_day) + timedelta(days=DEFAULT_DELETE_DAYS, hours=1)
        run = uuid.uuid4().hex[:8]
        env = {
            **os.environ,
            "DATABASE_URL": self.url,
            "AUDIT_JWT_SECRET": JWT_SECRET,
            "AUDIT_LOG_SIGNING_KEY": self.signing_key,
            "AUDIT_LOG_ORIGIN": ORIGIN,
            "AUDIT_RUN_JOBS": "false",
            "AUDIT_DEFAULT_RATE_LIMIT": "1000000/minute",
            "AUDIT_LOGIN_RATE_LIMIT": "1000000/minute",
            "AUDIT_INGEST_RATE_LIMIT": "1000000/second",
            "AUDIT_INGEST_IP_RATE_LIMIT": "1000000/second",
        }
        user = f"bench-retention-{run}"
        self._cli(env, "users", "create", "--username", user, "--role", "admin",
                  "--password-stdin", stdin=PASSWORD + "\n")  # fmt: skip
        key = self._cli(env, "api-keys", "create", "--name", "exam-platform",
                        "--scope", "events:write")  # fmt: skip
        # What earlier phases' load left unsequenced first: the catch-up between baseline
        # and purge must cover only the baseline's events (it runs while the load goes on).
        engine = create_engine(self.url)
        try:
            t = time.perf_counter()
            backlog = await make_sequencer().catch_up(create_sessionmaker(engine), no_fence)
            log(
                f"purge: sequenced a backlog of {backlog.sequenced}"
                f" in {time.perf_counter() - t:.1f} s"
            )
        finally:
            await engine.dispose()
        port = free_port()
        service = start_service(str(Path(sys.executable).with_name("audit-service")), env, port)
        samples_path = self.args.work_dir / f"load-{run}.jsonl"
        child = None
        engine = create_engine(self.url)
        sessionmaker = create_sessionmaker(engine)
        try:
            async with httpx.AsyncClient() as http:
                r = await http.post(
                    f"http://127.0.0.1:{port}/login",
                    json={"username": user, "password": PASSWORD},
                )
            r.raise_for_status()
            token = r.json()["access_token"]
            due = await self.sql(
                "SELECT count(*) FROM audit_event WHERE recorded_at < $1", midnight(end_day)
            )
            child = subprocess.Popen(
                [sys.executable, __file__, "--database-url", self.url,
                 "--work-dir", str(self.args.work_dir), "_load", "--port", str(port),
                 "--api-key", key, "--token", token,
                 "--out", str(samples_path), "--until", midnight(end_day).isoformat(),
                 "--run", run, "--ingest-clients", str(self.args.ingest_clients)],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("the load process did not start")
            log(f"purge: load running; baseline {self.args.load_seconds} s")
            b0 = time.time()
            await asyncio.sleep(self.args.load_seconds)
            b1 = time.time()
            t = time.perf_counter()
            caught = await make_sequencer().catch_up(sessionmaker, no_fence)
            catch_up_s = time.perf_counter() - t
            log(f"purge: sequenced {caught.sequenced} in {catch_up_s:.1f} s; purging at {now}")
            load0 = load_avg()
            p0 = time.time()
            t0 = self.cpu()
            report = await run_purge(sessionmaker, self.settings(), now)
            p1 = time.time()
            spent = self.spent(t0, report.deleted)
            load1 = load_avg()
            # The load keeps going a little past the purge's end, so its last requests
            # are not cut off; only samples inside each window count.
            await asyncio.sleep(2)
        finally:
            if child is not None:
                child.send_signal(signal.SIGTERM)
                child.wait(30)
            stop_service(service)
            await engine.dispose()
        samples = [json.loads(line) for line in samples_path.read_text().splitlines()]
        base, during = _window(samples, b0, b1), _window(samples, p0, p1)
        self.emit(
            "purge",
            {
                "now": now,
                "archived_before": end_day,
                "rows_before_the_day": due,
                "deleted": report.deleted,
                "tombstones": len(report.tombstones),
                "held": report.held,
                "pending": report.pending,
                **spent,
                "retention_batch": self.settings().retention_batch,
                "catch_up_before": {"sequenced": caught.sequenced, "seconds": round(catch_up_s, 1)},
                "baseline": base,
                "during_purge": during,
                "ingest_change": _change(base, during),
                "load_avg_start": load0,
                "load_avg_end": load1,
                "targets": {"seconds": 60, "activity_p95_ms": 100, "ingest_drop": 0.2},
            },
        )

    # --- anonymise ---------------------------------------------------------------------------

    async def anonymize(self) -> None:
        end_day = date.fromisoformat(self.state["archive_end"])
        now = midnight(end_day) + timedelta(days=DEFAULT_DELETE_DAYS, hours=1)
        n = self.args.anonymize_events
        nth = await self.sql(
            "SELECT recorded_at FROM audit_event WHERE recorded_at >= $1"
            " ORDER BY recorded_at, id OFFSET $2 LIMIT 1",
            midnight(end_day),
            n,
        )
        first_kept = nth.astimezone(UTC).date() + timedelta(days=1)
        days = (now.date() - first_kept).days  # now - days lands on first_kept (+1 h)
        due = await self.sql(
            "SELECT count(*) FROM audit_event WHERE recorded_at < $1"
            " AND (ip IS NOT NULL OR user_agent IS NOT NULL)",
            midnight(first_kept),
        )
        settings = self.settings(ip_anonymize_after_days=days, user_agent_anonymize_after_days=days)
        log(f"anonymize: clock {now}, after {days} days: days before {first_kept}, {due} rows")
        engine = create_engine(self.url)
        sessionmaker = create_sessionmaker(engine)
        load0 = load_avg()
        t0 = self.cpu()
        total = rounds = n_days = 0
        skipped: list[str] = []
        try:
            while True:
                report = await run_anonymize(sessionmaker, settings, now)
                rounds += 1
                total += report.events
                n_days += len(report.days)
                skipped += report.held_days + report.unsequenced_days
                log(f"anonymize: round {rounds}: {len(report.days)} days, {report.events} events")
                if not report.days:
                    break
        finally:
            await engine.dispose()
        spent = self.spent(t0, total)
        self.emit(
            "anonymize",
            {
                "now": now,
                "after_days": days,
                "days_before": first_kept,
                "due_rows": due,
                "events": total,
                "days": n_days,
                "runs": rounds,
                "skipped_days": skipped[:10],
                **spent,
                "seconds_per_1m": round(spent["seconds"] / total * 1e6, 1) if total else None,
                "load_avg_start": load0,
                "target_seconds_per_1m": 60,
            },
        )

    # --- verify ------------------------------------------------------------------------------

    async def verify(self) -> None:
        from bench.proofs import sequence_and_sign

        signed = await sequence_and_sign(self.settings())
        env = {
            **os.environ,
            "DATABASE_URL": self.url,
            "AUDIT_JWT_SECRET": JWT_SECRET,
            "AUDIT_LOG_SIGNING_KEY": self.signing_key,
            "AUDIT_LOG_ORIGIN": ORIGIN,
        }
        cli = str(Path(sys.executable).with_name("audit-service"))
        argv = [cli, "verify", "--json", "--jobs", str(self.args.verify_jobs)]
        if self.args.verify_since:
            argv += ["--since", str(self.args.verify_since)]
        load0 = load_avg()
        t0 = time.perf_counter()
        done = await asyncio.to_thread(
            subprocess.run, argv, env=env, cwd=REPO, capture_output=True, text=True
        )
        seconds = time.perf_counter() - t0
        try:
            report = json.loads(done.stdout)
        except json.JSONDecodeError:
            report = {"stdout": done.stdout[-2000:], "stderr": done.stderr[-2000:]}
        problems = report.get("problems") or []
        self.emit(
            "verify",
            {
                "exit_code": done.returncode,
                "status": report.get("status"),
                "tree_size": report.get("tree_size"),
                "checked": report.get("checked"),
                "purged": report.get("purged"),
                "problems": len(problems),
                "false_positives": len(problems),
                "first_problems": problems[:5],
                "seconds": round(seconds, 1),
                "events_per_s": round(report.get("checked", 0) / seconds) if seconds else None,
                "jobs": self.args.verify_jobs,
                "since": self.args.verify_since,
                "sequence_and_sign": signed,
                "load_avg_start": load0,
            },
        )


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _change(base: dict[str, Any], during: dict[str, Any]) -> float | None:
    if not base["ingest_events_per_s"]:
        return None
    return round(during["ingest_events_per_s"] / base["ingest_events_per_s"] - 1, 3)


def _window(samples: list[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    inside = [s for s in samples if start <= s["t"] <= end]
    pages = [s["s"] for s in inside if s["k"] == "page" and s["status"] == 200]
    errors = sum(1 for s in inside if s["status"] not in (200, 201))
    ingested = sum(s["n"] for s in inside if s["k"] == "batch" and s["status"] in (200, 201))
    seconds = end - start
    return {
        "seconds": round(seconds, 1),
        "activity_requests": len(pages),
        "activity_p50_ms": pct(pages, 0.5),
        "activity_p95_ms": pct(pages, 0.95),
        "activity_max_ms": pct(pages, 1.0),
        "ingest_events": ingested,
        "ingest_events_per_s": round(ingested / seconds) if seconds else None,
        "errors": errors,
    }


# --- the load process (`_load`, started by the purge phase) ---------------------------------


async def load_main(args: argparse.Namespace, out: Any) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    size = 500
    # Bodies are made once; each round gets fresh idempotency keys by replacing a fixed-width
    # marker, so every post is a real insert and the generator costs almost no CPU.
    marker = "R" * 12
    bodies = []
    for i, start in enumerate(range(0, 40 * size, size)):
        events = make_events(size, seed=1000 + i)
        for j, e in enumerate(events):
            e["idempotency_key"] = f"{marker}-{start + j}"
        bodies.append(json.dumps({"events": events}).encode())
    counter = 0

    def record(kind: str, seconds: float, status: int, n: int = 0) -> None:
        out.write(
            json.dumps({"t": time.time(), "k": kind, "s": seconds, "status": status, "n": n}) + "\n"
        )

    async def ingest() -> None:
        nonlocal counter
        conn = Connection("127.0.0.1", args.port, args.api_key)
        while not stop.is_set():
            counter += 1
            tag = f"{args.run[:4]}{counter:08d}".encode()
            body = bodies[counter % len(bodies)].replace(marker.encode(), tag)
            t = time.perf_counter()
            status, _ = await conn.post("/events/batch", body)
            record("batch", time.perf_counter() - t, status, size)

    head = (
        f"Host: 127.0.0.1:{args.port}\r\nAuthorization: Bearer {args.token}\r\n"
        "User-Agent: retention-bench\r\n\r\n"
    ).encode()

    async def pages() -> None:
        conn = RawConnection("127.0.0.1", args.port)

        async def get(query: str) -> dict[str, Any] | None:
            t = time.perf_counter()
            status, body = await conn.send(b"GET /admin/activity?" + query.encode()
                                           + b" HTTP/1.1\r\n" + head)  # fmt: skip
            record("page", time.perf_counter() - t, status)
            return json.loads(body) if status == 200 else None

        until = httpx.QueryParams({"until": args.until}).__str__()
        while not stop.is_set():
            page = await get("page_size=50")
            for _ in range(2):
                if page is None or not page.get("next_cursor") or stop.is_set():
                    break
                cursor = httpx.QueryParams({"cursor": page["next_cursor"]}).__str__()
                page = await get(f"page_size=50&{cursor}")
            # Inside the range being deleted, and a filtered page.
            await get(f"page_size=50&{until}")
            await get("page_size=50&action=auth.login&outcome=success")

    print("ready", flush=True)
    loops = [ingest] * args.ingest_clients + [pages]
    tasks = [asyncio.create_task(f()) for f in loops]
    await stop.wait()
    await asyncio.wait(tasks, timeout=10)
    for task in tasks:
        task.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument(
        "--work-dir",
        type=Path,
        required=True,
        help="state.json (boundaries, signing key, results), archive/ and load samples",
    )
    parser.add_argument("--archive-events", type=int, default=1_100_000)
    parser.add_argument("--anonymize-events", type=int, default=1_000_000)
    parser.add_argument("--load-seconds", type=float, default=30)
    parser.add_argument(
        "--ingest-clients", type=int, default=2, help="concurrent 500-event batch posters"
    )
    parser.add_argument("--verify-jobs", type=int, default=2)
    parser.add_argument("--verify-since", type=int, default=0)
    parser.add_argument("phases", nargs="+")
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--api-key", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--until", help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phases == ["_load"]:
        with open(args.out, "w") as out:
            asyncio.run(load_main(args, out))
        return
    known = ("prepare", "archive", "purge", "anonymize", "verify")
    for phase in args.phases:
        if phase not in known:
            parser.error(f"unknown phase {phase!r} (one of {', '.join(known)})")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    bench = Bench(args)
    for phase in args.phases:
        log(f"{phase} ...")
        asyncio.run(getattr(bench, phase)())


if __name__ == "__main__":
    main()
