"""What the tamper-evident log costs (issue 8, "Measured"): sequencer speed, ingest
throughput with the log job on and off, commit -> signed-checkpoint latency.

One run starts a private PostgreSQL (tests/pg.py), migrates it, makes an API key, and then,
each phase on emptied tables (events, leaves, tiles, checkpoints, keys, leases):

  (1) sequencer  N realistic events are COPYed in with no job running (1,000 per
                 transaction, as batches commit), then `audit-service worker` starts and
                 the time from its first sequenced event to the last is taken: events/s,
                 and the worker's and PostgreSQL's CPU per event (from /proc).
  (2) backlog    the same backlog, caught up by the log job inside `audit-service serve`
                 while a probe GETs /healthz every 20 ms: the probe's p50/p99/max against an
                 idle service (the job shares the event loop with requests).
  (3) ingest     N events in 1,000-event batches from 4 clients as fast as they go (as
                 bench/ingest.py), three times: jobs off; jobs on in `serve`; jobs off in
                 `serve` plus one `audit-service worker`. Throughput, and how long after the
                 last response the log held every event.
  (4) latency    a sustained --rate events/s of batches for --seconds (open loop: a batch
                 every 1000/rate s), jobs in `serve` and then in a worker; a poller sees each
                 new checkpoint within 20 ms. For each event: time from its batch's response
                 (the commit precedes it) to the first checkpoint covering its position.

With --pin auto (2+ CPUs) the service and the worker share CPU 0, PostgreSQL and the load
generator CPU 1 (as bench/ingest.py). Prints one JSON line (progress on stderr). Reproduce:

    .venv/bin/python bench/integrity.py [--events 200000 --rate 10000 --seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import platform
import pstats
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import httpx

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.proofs import measure
from common import JWT_SECRET, RawConnection, ServiceBench, children, cpu_model, free_port
from ingest import (
    COPY_COLUMNS,
    Connection,
    _cpu_s,
    _machine_busy_s,
    _pct,
    copy_records,
    make_events,
)
from tests.pg import TempPostgres

# Imported at start, not when each step runs: a run of hours must measure the code it
# started with, whatever happens to the work tree meanwhile.
from audit_service.audit_log.sequencer import no_fence
from audit_service.core import migrations
from audit_service.core.config import Settings
from audit_service.core.db import create_engine, create_sessionmaker
from audit_service.integrity import note
from audit_service.integrity.jobs import log_signers, make_sequencer
from audit_service.integrity.service import Checkpointer

PASSWORD = "bench-admin-password"  # bench/proofs.py logs in with it

# Everything the log writes, emptied between phases (their triggers refuse TRUNCATE: the
# benchmark's superuser turns triggers off for that one transaction).
LOG_TABLES = "audit_event, audit_leaf, integrity_tile, integrity_checkpoint, integrity_key"


def _pcts(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50_ms": _pct(list(values), 0.5),
        "p90_ms": _pct(list(values), 0.9),
        "p99_ms": _pct(list(values), 0.99),
        "max_ms": round(max(values) * 1000, 2),
    }


class Bench(ServiceBench):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(
            args,
            {
                "AUDIT_INGEST_IP_RATE_LIMIT": "1000000/second",
                "AUDIT_LOG_SIGNING_KEY": note.Signer.generate("bench.audit-service").private_key,
                "AUDIT_LOG_ORIGIN": "bench.example/audit-service/integrity",
            },
        )
        self.procs: list[subprocess.Popen[bytes]] = []
        self.port = 0

    # --- processes ---------------------------------------------------------------------------

    def _spawn(self, argv: list[str], jobs: bool) -> subprocess.Popen[bytes]:
        pin = ["taskset", "-c", ",".join(map(str, self.service_cpus))] if self.service_cpus else []
        env = {**self.env, "AUDIT_RUN_JOBS": "true" if jobs else "false"}
        proc = subprocess.Popen([*pin, self.cli, *argv], env=env, cwd=REPO)
        self.procs.append(proc)
        return proc

    def serve(self, jobs: bool) -> subprocess.Popen[bytes]:
        self.port = free_port()
        argv = ["serve", "--no-migrate", "--host", "127.0.0.1", "--port", str(self.port)]
        proc = self._spawn([*argv, "--log-level", "warning"], jobs)
        deadline = time.time() + 30
        while True:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("the service did not start")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz").status_code == 200:
                    return proc
            except httpx.HTTPError:
                time.sleep(0.1)

    def worker(self) -> subprocess.Popen[bytes]:
        return self._spawn(["worker", "--no-migrate", "--log-level", "warning"], True)

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.send_signal(2)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()

    def close(self) -> None:
        self.stop_all()
        self.pg.stop()

    def usage(self, pids: Sequence[int]) -> tuple[float, float, float, float]:
        return (
            time.perf_counter(),
            _cpu_s(pids),
            _cpu_s(self.pg_pids(), reaped=self.postmaster),
            _machine_busy_s(),
        )

    def spent(
        self, before: tuple[float, float, float, float], pids: Sequence[int], events: int
    ) -> dict[str, Any]:
        wall, own, pg, busy = (b - a for a, b in zip(before, self.usage(pids), strict=True))
        return {
            "seconds": round(wall, 2),
            "events_per_s": round(events / wall) if wall else None,
            # Cores busy with other processes meanwhile (the machine is shared): the CPU per
            # event figures are the ones that survive a noisy neighbour.
            "other_cores_busy": round(max(0.0, busy - own - pg) / wall, 2),
            "service_cpu_us_per_event": round(own / events * 1e6, 1) if events else None,
            "postgres_cpu_us_per_event": round(pg / events * 1e6, 1) if events else None,
        }

    # --- database ----------------------------------------------------------------------------

    async def reset(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(
                "BEGIN; SET LOCAL session_replication_role = replica;"
                f" TRUNCATE {LOG_TABLES}; DELETE FROM job_lease;"
                " UPDATE log_cursor SET next_position = 0, cursor_txid = NULL, cursor_id = 0;"
                " COMMIT"
            )
            await conn.execute("VACUUM ANALYZE")
            await conn.execute("CHECKPOINT")
        finally:
            await conn.close()

    async def preload(self, n: int) -> None:
        """`n` events as committed batches would leave them, with no job running."""
        records = copy_records(make_events(n, seed=3), self.key[:16])
        conn = await asyncpg.connect(self.dsn)
        try:
            for i in range(0, n, 1000):
                await conn.copy_records_to_table(
                    "audit_event", records=records[i : i + 1000], columns=COPY_COLUMNS
                )
            await conn.execute("VACUUM ANALYZE audit_event")
        finally:
            await conn.close()

    async def tree_size(self, conn: asyncpg.Connection) -> int:
        return int(await conn.fetchval("SELECT next_position FROM log_cursor WHERE id = 1"))

    async def wait_sequenced(
        self, conn: asyncpg.Connection, n: int, within: float
    ) -> tuple[float | None, float]:
        """(time the first event got a position, time the n-th did), by polling."""
        first, deadline = None, time.perf_counter() + within
        while time.perf_counter() < deadline:
            size = await self.tree_size(conn)
            now = time.perf_counter()
            if size > 0 and first is None:
                first = now
            if size >= n:
                return first, now
            await asyncio.sleep(0.01)
        raise RuntimeError(f"the log did not reach {n} events in {within} s")

    # --- (1) the sequencer alone -------------------------------------------------------------

    async def sequencer(self, n: int) -> dict[str, Any]:
        await self.reset()
        await self.preload(n)
        conn = await asyncpg.connect(self.dsn)
        try:
            worker = self.worker()
            before = None
            while before is None:
                # Start the clock (wall and CPU) at the first sequenced event, not at the
                # worker's start (imports, connecting).
                if await self.tree_size(conn) > 0:
                    before = self.usage([worker.pid])
                    start = await self.tree_size(conn)
                await asyncio.sleep(0.005)
            await self.wait_sequenced(conn, n, 600)
            result = self.spent(before, [worker.pid], n - start)
            checkpoints = await conn.fetchval("SELECT count(*) FROM integrity_checkpoint")
        finally:
            await conn.close()
            self.stop_all()
        return {**result, "events": n, "checkpoints": checkpoints}

    # --- (2) catching up a backlog beside requests -------------------------------------------

    async def probe(self, seconds: float, stop: asyncio.Event | None = None) -> list[float]:
        conn = RawConnection("127.0.0.1", self.port)
        request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n\r\n".encode()
        latencies: list[float] = []
        end = time.perf_counter() + seconds
        next_at = time.perf_counter()
        while time.perf_counter() < end and not (stop and stop.is_set()):
            t0 = time.perf_counter()
            status, _ = await conn.send(request)
            latencies.append(time.perf_counter() - t0)
            assert status == 200, status
            next_at += 0.02
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        conn.close()
        return latencies

    async def backlog(self, n: int) -> dict[str, Any]:
        await self.reset()
        self.serve(jobs=False)
        idle = await self.probe(5)
        self.stop_all()
        await self.preload(n)
        conn = await asyncpg.connect(self.dsn)
        try:
            service = self.serve(jobs=True)
            done = asyncio.Event()
            probing = asyncio.create_task(self.probe(600, done))
            before = self.usage([service.pid])
            first, last = await self.wait_sequenced(conn, n, 600)
            done.set()
            busy = await probing
            result = self.spent(before, [service.pid], n)
        finally:
            await conn.close()
            self.stop_all()
        return {
            **result,
            "events": n,
            "catch_up_events_per_s": round(n / (last - first)) if first and last > first else None,
            "healthz_idle": _pcts(idle),
            "healthz_during_catch_up": _pcts(busy),
        }

    # --- (3) ingest throughput, jobs off / in serve / in a worker -----------------------------

    def bodies(self, n: int, seed: int) -> list[bytes]:
        events = make_events(n, seed=seed)
        return [json.dumps({"events": events[i : i + 1000]}).encode() for i in range(0, n, 1000)]

    async def ingest(self, mode: str, bodies: list[bytes]) -> dict[str, Any]:
        await self.reset()
        service = self.serve(jobs=mode == "serve")
        pids = [service.pid]
        if mode == "worker":
            pids.append(self.worker().pid)
        await asyncio.sleep(2)  # the job claims its lease, the worker connects
        queue = list(reversed(bodies))
        statuses: dict[int, int] = {}
        n = 1000 * len(bodies)

        async def client() -> None:
            conn = Connection("127.0.0.1", self.port, self.key)
            while queue:
                status, _ = await conn.post("/events/batch", queue.pop())
                statuses[status] = statuses.get(status, 0) + 1
            conn.close()

        conn = await asyncpg.connect(self.dsn)
        try:
            before = self.usage(pids)
            await asyncio.gather(*(client() for _ in range(self.args.batch_clients)))
            result = self.spent(before, pids, n)
            drained = None
            if mode != "off":
                # The log job also records an event per minute: wait for what was ingested.
                t0 = time.perf_counter()
                await self.wait_sequenced(conn, n, 600)
                drained = round(time.perf_counter() - t0, 2)
        finally:
            await conn.close()
            self.stop_all()
        return {**result, "mode": mode, "statuses": statuses, "log_complete_after_s": drained}

    # --- (4) commit -> checkpoint latency at a sustained rate --------------------------------

    async def latency(self, mode: str, rate: float, seconds: float) -> dict[str, Any]:
        await self.reset()
        service = self.serve(jobs=mode == "serve")
        pids = [service.pid]
        if mode == "worker":
            pids.append(self.worker().pid)
        await asyncio.sleep(2)
        count = int(rate * seconds / 1000)
        bodies = self.bodies(1000 * count, seed=7)
        every = 1000 / rate
        responses: list[tuple[float, list[int]]] = []  # (response time, event ids)
        late: list[float] = []  # how far behind schedule each batch was sent
        statuses: dict[int, int] = {}
        checkpoints: list[tuple[float, int]] = []  # (seen at, tree size)
        stop = asyncio.Event()
        pool: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(self.args.batch_clients * 2):
            pool.put_nowait(Connection("127.0.0.1", self.port, self.key))

        async def poll() -> None:
            conn = await asyncpg.connect(self.dsn)
            seen = 0
            try:
                while not stop.is_set():
                    rows = await conn.fetch(
                        "SELECT id, tree_size FROM integrity_checkpoint WHERE id > $1 ORDER BY id",
                        seen,
                    )
                    now = time.perf_counter()
                    for row in rows:
                        seen = row["id"]
                        checkpoints.append((now, row["tree_size"]))
                    await asyncio.sleep(0.02)
            finally:
                await conn.close()

        async def send(body: bytes) -> None:
            conn = await pool.get()
            try:
                status, answer = await conn.post("/events/batch", body)
                done = time.perf_counter()
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    responses.append((done, [r["id"] for r in json.loads(answer)["results"]]))
            finally:
                pool.put_nowait(conn)

        poller = asyncio.create_task(poll())
        before = self.usage(pids)
        start = time.perf_counter()
        tasks = []
        for i, body in enumerate(bodies):
            due = start + i * every
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            late.append(time.perf_counter() - due)
            tasks.append(asyncio.create_task(send(body)))
        await asyncio.gather(*tasks)
        sent_for = time.perf_counter() - start
        result = self.spent(before, pids, 1000 * count)
        conn = await asyncpg.connect(self.dsn)
        try:
            await self.wait_sequenced(conn, 1000 * count, 120)
            # Until a checkpoint covers the last event (at most checkpoint_interval later).
            deadline = time.perf_counter() + 30
            while time.perf_counter() < deadline and (  # noqa: ASYNC110 - polls a list
                not checkpoints or checkpoints[-1][1] < 1000 * count
            ):
                await asyncio.sleep(0.05)
            ids = [i for _, batch in responses for i in batch]
            positions = dict(
                await conn.fetch(
                    "SELECT event_pk, position FROM audit_leaf WHERE event_pk = ANY($1)", ids
                )
            )
        finally:
            stop.set()
            await poller
            await conn.close()
            while not pool.empty():
                pool.get_nowait().close()
            self.stop_all()
        sizes = [size for _, size in checkpoints]
        latencies: list[float] = []
        uncovered = 0
        for done, batch in responses:
            for event_pk in batch:
                # The first checkpoint seen whose tree holds this position.
                k = bisect.bisect_right(sizes, positions[event_pk])
                if k == len(sizes):
                    uncovered += 1
                else:
                    latencies.append(max(0.0, checkpoints[k][0] - done))
        return {
            **result,
            "mode": mode,
            "target_events_per_s": rate,
            "sent_events_per_s": round(1000 * count / sent_for),
            "statuses": statuses,
            "send_late_p99_ms": _pct(late, 0.99),
            "checkpoints": len(checkpoints),
            "uncovered": uncovered,
            "commit_to_checkpoint": _pcts(latencies),
        }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(args)
    log = sys.stderr
    out: dict[str, Any] = {"bench": "integrity"}
    try:
        phases = set(args.phases.split(","))
        if "sequencer" in phases:
            out["sequencer"] = await bench.sequencer(args.events)
            print(json.dumps({"sequencer": out["sequencer"]}), file=log, flush=True)
        if "backlog" in phases:
            out["backlog"] = await bench.backlog(args.backlog_events)
            print(json.dumps({"backlog": out["backlog"]}), file=log, flush=True)
        if "ingest" in phases:
            bodies = bench.bodies(args.events, seed=5)
            out["ingest"] = {}
            for mode in ("off", "serve", "worker"):
                out["ingest"][mode] = await bench.ingest(mode, bodies)
                print(json.dumps({"ingest": out["ingest"][mode]}), file=log, flush=True)
            off = out["ingest"]["off"]["events_per_s"]
            out["ingest_cost"] = {
                mode: round(1 - out["ingest"][mode]["events_per_s"] / off, 3)
                for mode in ("serve", "worker")
            }
        if "latency" in phases:
            out["latency"] = {}
            for mode in ("serve", "worker"):
                out["latency"][mode] = await bench.latency(mode, args.rate, args.seconds)
                print(json.dumps({"latency": out["latency"][mode]}), file=log, flush=True)
    finally:
        bench.close()
    return {
        **out,
        "pinning": (
            {"service_and_worker": bench.service_cpus, "postgres_and_clients": bench.other_cpus}
            if bench.service_cpus
            else "none"
        ),
        "machine": {
            "nproc": os.cpu_count(),
            "cpu": cpu_model(),
            "python": platform.python_version(),
            "loadavg_at_end": os.getloadavg(),
        },
        "command": shlex.join([sys.executable, "bench/integrity.py", *sys.argv[1:]]),
    }


# --- scale: the 10M-event targets (c at scale, d, e, f) -------------------------------------


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Scale:
    """A private PostgreSQL with `events` seeded events, sequenced and signed, then timed:
    `audit-service verify` (--jobs 1 and 2), inclusion proofs, a bundle of the newest
    `bundle_events` and its offline `verify-bundle`."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.pg = TempPostgres()
        self.url = self.pg.start()
        self.dsn = self.url.replace("postgresql+asyncpg", "postgresql")
        try:
            self._setup()
        except BaseException:
            self.pg.stop()
            raise

    def _setup(self) -> None:
        self.postmaster = int((self.pg.data / "postmaster.pid").read_text().split()[0])
        self.signer = note.Signer.generate("bench.audit-service")
        self.vkey = self.signer.verifier.vkey
        self.cli = str(Path(sys.executable).with_name("audit-service"))
        self.work = Path(self.pg.root)
        migrations.upgrade(self.url)
        self.settings = Settings(
            database_url=self.url,
            jwt_secret=JWT_SECRET,
            log_signing_key=self.signer.private_key,
            log_origin="bench.example/audit-service/integrity",
            bootstrap_admin_password=PASSWORD,
            default_rate_limit="1000000/minute",
            login_rate_limit="1000000/minute",
            run_jobs=False,
        )
        self.env = {
            **os.environ,
            "DATABASE_URL": self.url,
            "AUDIT_JWT_SECRET": JWT_SECRET,
            "AUDIT_BOOTSTRAP_ADMIN_PASSWORD": PASSWORD,
            "AUDIT_DEFAULT_RATE_LIMIT": "1000000/minute",
            "AUDIT_LOGIN_RATE_LIMIT": "1000000/minute",
            "AUDIT_LOG_SIGNING_KEY": self.signer.private_key,
            "AUDIT_LOG_ORIGIN": "bench.example/audit-service/integrity",
            "AUDIT_RUN_JOBS": "false",
        }

    def pg_cpu(self) -> float:
        return _cpu_s([self.postmaster, *children(self.postmaster)], reaped=self.postmaster)

    def timed(self, argv: list[str], what: str) -> dict[str, Any]:
        """Run `argv` (a CLI process); wall time, its CPU (children included), PostgreSQL's."""
        print(f"{what}: {shlex.join(argv)}", file=sys.stderr, flush=True)
        load = _loadavg()
        cpu0, pg0, t0 = _children_cpu_s(), self.pg_cpu(), time.perf_counter()
        done = subprocess.run(argv, env=self.env, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        out = {
            "exit_code": done.returncode,
            "seconds": round(wall, 2),
            "cpu_s": round(_children_cpu_s() - cpu0, 1),
            "postgres_cpu_s": round(self.pg_cpu() - pg0, 1),
            "loadavg_before": load,
            "loadavg_after": _loadavg(),
        }
        if done.returncode not in (0, 1):
            print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
        try:
            out["report"] = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            out["stdout_tail"] = done.stdout[-500:]
        return out

    def seed(self) -> dict[str, Any]:
        argv = [
            sys.executable,
            str(REPO / "bench" / "seed_events.py"),
            *("--database-url", self.url, "--events", str(self.args.events)),
            *("--seed", "42", "--drop-indexes"),
        ]
        return self.timed(argv, "seed")

    async def sequence(self) -> dict[str, Any]:
        """The log job's own sequencer (`make_sequencer`: LeafHasher + tiles), rounds until
        the log holds every event, in this process; then one signed checkpoint."""
        engine = create_engine(self.url)
        sessionmaker = create_sessionmaker(engine)
        load = _loadavg()
        cpu0, pg0, t0 = time.process_time(), self.pg_cpu(), time.perf_counter()
        done = await make_sequencer().catch_up(sessionmaker, no_fence)
        wall = time.perf_counter() - t0
        cpu, pg = time.process_time() - cpu0, self.pg_cpu() - pg0
        checkpointer = Checkpointer(
            log_signers(self.settings),
            self.settings.log_origin,
            min_interval=0.0,
            idle_interval=0.0,
        )
        async with sessionmaker() as session:
            size = await checkpointer.maybe_sign(session)
            await session.commit()
        await engine.dispose()
        conn = await asyncpg.connect(self.dsn)
        try:
            for table in ("audit_event", "audit_leaf", "integrity_tile"):
                await conn.execute(f"VACUUM ANALYZE {table}")
        finally:
            await conn.close()
        n = done.sequenced
        return {
            "events": n,
            "tree_size": size,
            "seconds": round(wall, 1),
            "events_per_s": round(n / wall) if wall else None,
            "sequencer_cpu_us_per_event": round(cpu / n * 1e6, 1) if n else None,
            "postgres_cpu_us_per_event": round(pg / n * 1e6, 1) if n else None,
            # Were the 2 cores ours alone, the slower of the two would bound it.
            "events_per_cpu_s_sequencer": round(n / cpu) if cpu else None,
            "loadavg_before": load,
            "loadavg_after": _loadavg(),
        }

    def verify(self, jobs: int) -> dict[str, Any]:
        argv = [self.cli, "verify", "--database-url", self.url, "--vkey", self.vkey]
        out = self.timed([*argv, "--jobs", str(jobs), "--json"], f"verify --jobs {jobs}")
        report = out.pop("report", {})
        out["status"] = report.get("status")
        out["checked"] = report.get("checked")
        out["problems"] = len(report.get("problems", []))
        if out["seconds"] and out["checked"]:
            out["events_per_s"] = round(out["checked"] / out["seconds"])
            out["engine_seconds"] = report.get("seconds")
        return out

    def profile_verify(self) -> dict[str, Any]:
        """`verify --jobs 1` under cProfile (everything runs in one process then): the
        functions with the most own time, and the share of the wall time each takes."""
        stats = self.work / "verify.prof"
        code = (
            "import cProfile, sys\n"
            "from audit_service.cli import main\n"
            f"sys.argv = ['audit-service', 'verify', '--database-url', {self.url!r},"
            f" '--vkey', {self.vkey!r}, '--jobs', '1', '--json']\n"
            "p = cProfile.Profile()\n"
            "try:\n    p.runcall(main)\n"
            "except SystemExit:\n    pass\n"
            f"p.dump_stats({str(stats)!r})\n"
        )
        out = self.timed([sys.executable, "-c", code], "profile verify --jobs 1")
        out.pop("report", None)
        ps = pstats.Stats(str(stats))
        total = ps.total_tt  # type: ignore[attr-defined]
        rows = sorted(ps.stats.items(), key=lambda kv: -kv[1][2])  # type: ignore[attr-defined]
        out["top_own_time"] = [
            {
                "function": f"{Path(file).name}:{line}:{name}",
                "calls": nc,
                "own_s": round(tt, 2),
                "share": round(tt / total, 3),
            }
            for (file, line, name), (_cc, nc, tt, _ct, _callers) in rows[:25]
        ]
        out["profiled_total_s"] = round(total, 1)
        return out

    async def proofs(self, tree_size: int) -> dict[str, Any]:
        load = _loadavg()
        result = await measure(self.settings, tree_size, self.args.proof_requests, 7)
        return {**result, "loadavg_before": load, "loadavg_after": _loadavg()}

    async def bundle(self) -> dict[str, Any]:
        """Export the newest `bundle_events` as a bundle through `audit-service serve`, then
        `audit-service verify-bundle` it (default jobs, then --jobs 1)."""
        port = free_port()
        argv = [self.cli, "serve", "--no-migrate", "--host", "127.0.0.1", "--port", str(port)]
        server = subprocess.Popen([*argv, "--log-level", "warning"], env=self.env, cwd=REPO)
        path = self.work / "bundle.tar"
        n = self.args.bundle_events
        conn = await asyncpg.connect(self.dsn)
        try:
            since = await conn.fetchval(
                "SELECT occurred_at FROM audit_event ORDER BY occurred_at DESC, id DESC"
                " OFFSET $1 LIMIT 1",
                n - 1,
            )
        finally:
            await conn.close()
        base = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(base_url=base, timeout=None) as client:
                for _ in range(300):
                    try:
                        if (await client.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)
                r = await client.post("/login", json={"username": "admin", "password": PASSWORD})
                r.raise_for_status()
                client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
                t0 = time.perf_counter()
                params = {"format": "bundle", "since": since.isoformat()}
                async with client.stream("GET", "/admin/activity/export", params=params) as resp:
                    resp.raise_for_status()
                    with path.open("wb") as f:
                        async for chunk in resp.aiter_raw():
                            f.write(chunk)
                export_s = time.perf_counter() - t0
        finally:
            server.send_signal(2)
            server.wait(60)
        out: dict[str, Any] = {
            "events_selected": n,
            "export_seconds": round(export_s, 1),
            "bundle_mb": round(path.stat().st_size / 1e6, 1),
        }
        for jobs in (None, 1):
            argv = [self.cli, "verify-bundle", str(path), "--vkey", self.vkey, "--json"]
            run = self.timed(argv + ([] if jobs is None else ["--jobs", str(jobs)]), "bundle")
            report = run.pop("report", {})
            run["status"] = report.get("status")
            run["facts"] = report.get("facts")
            out[f"verify_bundle_jobs_{jobs or 'default'}"] = run
        path.unlink()
        return out

    def close(self) -> None:
        self.pg.stop()


STEPS = ("verify1", "verify2", "profile", "proofs", "bundle")


async def scale(args: argparse.Namespace) -> dict[str, Any]:
    if unknown := set(args.steps.split(",")) - set(STEPS):
        raise SystemExit(f"unknown --steps {sorted(unknown)}: choose from {', '.join(STEPS)}")
    bench = Scale(args)
    out: dict[str, Any] = {"bench": "integrity-scale", "events": args.events}
    log = sys.stderr

    def show(name: str) -> None:
        print(json.dumps({name: out[name]}), file=log, flush=True)

    try:
        out["seed"] = bench.seed()
        show("seed")
        out["sequence"] = await bench.sequence()
        show("sequence")
        for step in args.steps.split(","):
            # In the order given: at 10M a step can take many minutes, so the ones that
            # matter most go first.
            if step in ("verify1", "verify2"):
                jobs = int(step[-1])
                out[f"verify_jobs_{jobs}"] = bench.verify(jobs)
                show(f"verify_jobs_{jobs}")
            elif step == "profile":
                out["verify_profile"] = bench.profile_verify()
                show("verify_profile")
            elif step == "proofs":
                out["proofs"] = await bench.proofs(out["sequence"]["tree_size"])
                show("proofs")
            elif step == "bundle":
                out["bundle"] = await bench.bundle()
                show("bundle")
    finally:
        bench.close()
    return {
        **out,
        "machine": {
            "nproc": os.cpu_count(),
            "cpu": cpu_model(),
            "python": platform.python_version(),
            "loadavg_at_end": _loadavg(),
        },
        "command": shlex.join(["python", "bench/integrity.py", *sys.argv[1:]]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("live", help="(1)-(4): the service, its log job, ingest (targets a-c)")
    p.add_argument("--events", type=int, default=200_000, help="for (1) and (3)")
    p.add_argument("--backlog-events", type=int, default=100_000, help="for (2)")
    p.add_argument("--rate", type=float, default=10_000, help="events/s for (4)")
    p.add_argument("--seconds", type=float, default=30, help="duration of (4)")
    p.add_argument("--batch-clients", type=int, default=4)
    p.add_argument("--phases", default="sequencer,backlog,ingest,latency")
    p.add_argument(
        "--pin",
        choices=("auto", "none"),
        default="auto",
        help="auto: service and worker on CPU 0; PostgreSQL and the load generator on the rest",
    )
    p = sub.add_parser("scale", help="seed, sequence, verify, proofs, bundle (targets c-f)")
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--bundle-events", type=int, default=1_000_000)
    p.add_argument("--proof-requests", type=int, default=2000)
    p.add_argument("--steps", default="verify1,verify2,proofs,bundle", help="and/or: profile")
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    print(json.dumps(asyncio.run(run(args) if args.mode == "live" else scale(args))))


if __name__ == "__main__":
    main()
