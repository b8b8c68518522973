"""Recorder overhead: one endpoint's throughput and latency with request recording on vs off.

One run starts a private PostgreSQL, migrates it, then for each phase starts the service as a
real uvicorn subprocess (1 worker) with AUDIT_RECORD_REQUESTS=true or false, logs in and drives
the endpoint with N keep-alive clients (closed loop) for a fixed time after a warm-up. Phases
alternate on/off (--rounds). With recording off the middleware still runs (request id, session
handling); only the event and its write are skipped, so the difference is the recorder's cost.
Then a light-load step runs an "on" and an "off" service side by side and one client alternates
between them (--pairs): the latency a lone request gains, with neighbours' noise paired out.

CPU split (2 cores): with --pin auto the service gets CPU 0 to itself; the load generator (one
process of the minimal raw HTTP client, ~0.1 ms CPU a request) and PostgreSQL share CPU 1. So
throughput measures the service, not the client. Per-request CPU times are reported too: they
hold up when other processes on the machine steal CPU ("cpu_other"), throughput does not.

Prints one JSON line (per-phase lines go to stderr). Reproduce:

    /tmp/venv/bin/python bench/recorder_overhead.py [--clients 32 --duration 15 --endpoint /me]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common import RawConnection, children, cpu_model, free_port, proc_cpu
from tests.pg import TempPostgres

ADMIN_PASSWORD = "bench-admin-password-123"
JWT_SECRET = "bench-" + "x" * 40


# --- load generator (runs in client processes) ----------------------------------------------


class _RawConnection(RawConnection):
    """One prepared GET, repeated."""

    def __init__(self, host: str, port: int, request: bytes) -> None:
        super().__init__(host, port)
        self.request = request

    async def get(self) -> int:
        status, _ = await self.send(self.request)
        return status


async def _drive(
    kind: str, base: str, endpoint: str, token: str, clients: int, start: float, end: float
) -> dict[str, Any]:
    """`clients` closed-loop clients; latencies of requests completed inside [start, end)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    total = errors = 0
    headers = {"Authorization": f"Bearer {token}", "User-Agent": "recorder-overhead-bench"}
    url = httpx.URL(base)
    host, port = url.host, url.port or 80
    request = (
        f"GET {endpoint} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + "\r\n"
    ).encode()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:

        async def one() -> None:
            nonlocal total, errors
            raw = _RawConnection(host, port, request)
            while time.time() < end:
                t0 = time.perf_counter()
                try:
                    if kind == "raw":
                        status = await asyncio.wait_for(raw.get(), 60)
                    else:
                        status = (await client.get(endpoint, headers=headers)).status_code
                except (OSError, ValueError, EOFError, TimeoutError, httpx.HTTPError):
                    raw.close()
                    errors += 1
                    continue
                took = time.perf_counter() - t0
                total += 1
                statuses[status] = statuses.get(status, 0) + 1
                if start <= time.time() < end:
                    latencies.append(took)
            raw.close()

        cpu0 = _self_cpu()
        await asyncio.gather(*(one() for _ in range(clients)))
        cpu = _self_cpu() - cpu0
    return {
        "latencies": latencies,
        "total": total,
        "errors": errors,
        "statuses": statuses,
        "cpu_s": cpu,
    }


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _client_process(
    cpus: list[int] | None,
    kind: str,
    base: str,
    endpoint: str,
    token: str,
    clients: int,
    start: float,
    end: float,
) -> dict[str, Any]:
    if cpus:
        os.sched_setaffinity(0, cpus)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - the service's own deps include it
        pass
    return asyncio.run(_drive(kind, base, endpoint, token, clients, start, end))


async def _pairs(
    targets: list[tuple[str, str]], endpoint: str, pairs: int, warmup: int
) -> list[list[float]]:
    """One client alternating between the services (order swapped every pair): each pair
    sees the same machine state, so neighbours' noise cancels in the paired difference."""
    connections = []
    for base, token in targets:
        url = httpx.URL(base)
        request = (
            f"GET {endpoint} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
            f"Authorization: Bearer {token}\r\nUser-Agent: recorder-overhead-bench\r\n\r\n"
        ).encode()
        connections.append(_RawConnection(str(url.host), url.port or 80, request))
    latencies: list[list[float]] = [[] for _ in targets]
    for n in range(warmup + pairs):
        order = range(len(targets)) if n % 2 else reversed(range(len(targets)))
        for i in order:
            t0 = time.perf_counter()
            if await connections[i].get() != 200:
                raise RuntimeError("paired request failed")
            if n >= warmup:
                latencies[i].append(time.perf_counter() - t0)
    for connection in connections:
        connection.close()
    return latencies


def _pairs_process(
    cpus: list[int] | None, targets: list[tuple[str, str]], endpoint: str, pairs: int, warmup: int
) -> list[list[float]]:
    if cpus:
        os.sched_setaffinity(0, cpus)
    return asyncio.run(_pairs(targets, endpoint, pairs, warmup))


# --- processes and accounting ---------------------------------------------------------------


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class Postgres:
    def __init__(self) -> None:
        self.server = TempPostgres()
        self.url = self.server.start()
        self.postmaster = int((self.server.data / "postmaster.pid").read_text().split()[0])

    def pin(self, cpus: list[int]) -> None:
        for pid in [self.postmaster, *children(self.postmaster)]:
            os.sched_setaffinity(pid, cpus)  # backends forked later inherit the postmaster's

    def cpu(self) -> float:
        # Live backends, plus the ones that exited (pool overflow churn), reaped by postmaster.
        live = sum(proc_cpu(p) for p in children(self.postmaster))
        return proc_cpu(self.postmaster, reaped_children=True) + live

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        import asyncpg

        async def run() -> list[tuple[Any, ...]]:
            conn = await asyncpg.connect(self.url.replace("postgresql+asyncpg", "postgresql"))
            try:
                return [tuple(r) for r in await conn.fetch(sql)]
            finally:
                await conn.close()

        return asyncio.run(run())


def _start_service(
    db_url: str, port: int, record: bool, cpus: list[int] | None
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "AUDIT_JWT_SECRET": JWT_SECRET,
        "AUDIT_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "AUDIT_DEFAULT_RATE_LIMIT": "1000000/minute",
        "AUDIT_RECORD_REQUESTS": "true" if record else "false",
    }
    command = [
        *(["taskset", "-c", ",".join(map(str, cpus))] if cpus else []),
        str(Path(sys.executable).with_name("audit-service")),
        "serve",
        "--no-migrate",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, env=env, cwd=REPO)
    deadline = time.time() + 30
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.terminate()
    raise RuntimeError("service did not become healthy")


def _stop_service(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(2)  # SIGINT: uvicorn shuts down cleanly
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


def _run_load(
    args: argparse.Namespace,
    base: str,
    token: str,
    clients: int,
    duration: float,
    client_cpus: list[int] | None,
) -> list[dict[str, Any]]:
    procs = min(args.client_procs, clients)
    start = time.time() + args.warmup + 0.5  # 0.5 s for the processes to start
    end = start + duration
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    with ProcessPoolExecutor(procs, mp_context=get_context("spawn")) as pool:
        futures = [
            pool.submit(
                _client_process, client_cpus, args.client, base, args.endpoint, token, n, start, end
            )
            for n in per
        ]
        return [f.result() for f in futures]


def _phase(
    args: argparse.Namespace, pg: Postgres, record: bool, cpus: dict[str, list[int] | None]
) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    rows_before = _recorded_rows(pg)
    service = _start_service(pg.url, port, record, cpus["service"])
    sent = 0
    try:
        login = httpx.post(
            f"{base}/login", timeout=30, json={"username": "admin", "password": ADMIN_PASSWORD}
        )
        login.raise_for_status()
        sent += 1
        token = login.json()["access_token"]
        pid = service.pid  # taskset execs the service: same process
        svc0, pg0, (busy0, all0), t0 = proc_cpu(pid), pg.cpu(), _machine_busy(), time.time()
        results = _run_load(args, base, token, args.clients, args.duration, cpus["client"])
        svc1, pg1, (busy1, all1), t1 = proc_cpu(pid), pg.cpu(), _machine_busy(), time.time()
    finally:
        _stop_service(service)
    latencies = [x for r in results for x in r["latencies"]]
    statuses: dict[str, int] = {}
    for r in results:
        sent += r["total"]
        for code, n in r["statuses"].items():
            statuses[str(code)] = statuses.get(str(code), 0) + n
    wall = t1 - t0
    ncpu = os.cpu_count() or 1
    loaded = sum(r["total"] for r in results)  # requests of the main load, warm-up included
    machine = (busy1 - busy0) / (all1 - all0) * ncpu
    clients_cpu = sum(r["cpu_s"] for r in results)
    return {
        "record": record,
        "rps": round(len(latencies) / args.duration, 1),
        "p50_ms": round(_pct(latencies, 0.50), 2),
        "p99_ms": round(_pct(latencies, 0.99), 2),
        "requests": sent,
        "statuses": statuses,
        "errors": sum(r["errors"] for r in results),
        "rows_added": _recorded_rows(pg) - rows_before,
        # CPU time per request of the main load: robust to other processes on the machine.
        "service_cpu_ms_per_req": round((svc1 - svc0) / loaded * 1000, 3),
        "postgres_cpu_ms_per_req": round((pg1 - pg0) / loaded * 1000, 3),
        # CPU use over the whole load (warm-up included), in cores; "other" is anything else
        # running on the machine meanwhile (a noisy neighbour makes the figures unreliable).
        "cpu_service": round((svc1 - svc0) / wall, 2),
        "cpu_postgres": round((pg1 - pg0) / wall, 2),
        "cpu_clients": round(clients_cpu / wall, 2),
        "cpu_other": round(max(0.0, machine - (svc1 - svc0 + pg1 - pg0 + clients_cpu) / wall), 2),
    }


def _light(
    args: argparse.Namespace, pg: Postgres, cpus: dict[str, list[int] | None]
) -> dict[str, Any]:
    """Light load (one client, requests never overlap): the latency a lone request gains."""
    warmup = 200
    rows_before = _recorded_rows(pg)
    services, targets = [], []
    try:
        for record in (True, False):
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            services.append(_start_service(pg.url, port, record, cpus["service"]))
            login = httpx.post(
                f"{base}/login", timeout=30, json={"username": "admin", "password": ADMIN_PASSWORD}
            )
            login.raise_for_status()
            targets.append((base, login.json()["access_token"]))
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            on, off = pool.submit(
                _pairs_process, cpus["client"], targets, args.endpoint, args.pairs, warmup
            ).result()
    finally:
        for service in services:
            _stop_service(service)
    return {
        "pairs": args.pairs,
        "p50_ms_on": round(_pct(on, 0.50), 3),
        "p50_ms_off": round(_pct(off, 0.50), 3),
        "p99_ms_on": round(_pct(on, 0.99), 3),
        "p99_ms_off": round(_pct(off, 0.99), 3),
        "added_p50_ms": round(_pct(on, 0.50) - _pct(off, 0.50), 3),
        "median_paired_added_ms": round(
            statistics.median(a - b for a, b in zip(on, off, strict=True)) * 1000, 3
        ),
        "requests_on": 1 + warmup + args.pairs,  # login included
        "rows_added": _recorded_rows(pg) - rows_before,
    }


def _recorded_rows(pg: Postgres) -> int:
    return int(pg.query("SELECT count(*) FROM audit_event WHERE request_id IS NOT NULL")[0][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32, help="concurrent keep-alive clients")
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument("--endpoint", default="/me", help="authenticated GET endpoint")
    parser.add_argument("--rounds", type=int, default=2, help="on/off pairs, alternating")
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="raw: minimal keep-alive HTTP/1.1 client; httpx: httpx.AsyncClient (CPU-heavy)",
    )
    parser.add_argument("--client-procs", type=int, default=1, help="load generator processes")
    parser.add_argument(
        "--pairs",
        type=int,
        default=3000,
        help="light load: one client alternating on/off services, this many pairs (0 skips)",
    )
    parser.add_argument(
        "--pin",
        choices=("auto", "none"),
        default="auto",
        help="auto: service alone on CPU 0; clients and PostgreSQL on the rest",
    )
    args = parser.parse_args()

    ncpu = os.cpu_count() or 1
    cpus: dict[str, list[int] | None] = {"service": None, "client": None}
    if args.pin == "auto" and ncpu >= 2:
        cpus = {"service": [0], "client": list(range(1, ncpu))}

    pg = Postgres()
    phases: list[dict[str, Any]] = []
    try:
        if cpus["client"]:
            pg.pin(cpus["client"])
        from audit_service.core import migrations

        migrations.upgrade(pg.url)
        for _ in range(args.rounds):
            for record in (True, False):
                phase = _phase(args, pg, record, cpus)
                print(json.dumps(phase), file=sys.stderr, flush=True)
                phases.append(phase)
        light = _light(args, pg, cpus) if args.pairs > 0 else None
        if light:
            print(json.dumps({"light": light}), file=sys.stderr, flush=True)
        batches, events = pg.query(
            "SELECT count(DISTINCT recorded_at), count(*) FROM audit_event"
            " WHERE request_id IS NOT NULL"
        )[0]
    finally:
        pg.server.stop()

    on = [p for p in phases if p["record"]]
    off = [p for p in phases if not p["record"]]

    def total_rps(ps: list[dict[str, Any]]) -> float:
        return round(statistics.fmean(p["rps"] for p in ps), 1)

    def med(ps: list[dict[str, Any]], key: str) -> float:
        return round(statistics.median(p[key] for p in ps), 3)

    recorded = sum(p["requests"] for p in on) + (light["requests_on"] if light else 0)
    rps_on, rps_off = total_rps(on), total_rps(off)
    result = {
        "bench": "recorder_overhead",
        "endpoint": args.endpoint,
        "clients": args.clients,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "rps_on": rps_on,
        "rps_off": rps_off,
        "ratio": round(rps_on / rps_off, 3),
        "ratio_per_round": [round(a["rps"] / b["rps"], 3) for a, b in zip(on, off, strict=True)],
        # Interference only ever slows a phase down: best-of-N is the least disturbed figure.
        "ratio_best": round(max(p["rps"] for p in on) / max(p["rps"] for p in off), 3),
        "p50_ms_on": med(on, "p50_ms"),
        "p50_ms_off": med(off, "p50_ms"),
        "p99_ms_on": med(on, "p99_ms"),
        "p99_ms_off": med(off, "p99_ms"),
        "added_p50_ms": round(med(on, "p50_ms") - med(off, "p50_ms"), 3),
        # One client alternating between an "on" and an "off" service (see _pairs).
        "light": {k: v for k, v in light.items() if k not in ("requests_on", "rows_added")}
        if light
        else None,
        "recorded_requests": recorded,
        "events_written": sum(p["rows_added"] for p in on) + (light["rows_added"] if light else 0),
        "audit_event_rows": int(events),
        "rows_while_off": sum(p["rows_added"] for p in off),
        "events_match": int(events) == recorded and all(p["rows_added"] == 0 for p in off),
        "mean_batch": round(int(events) / max(1, int(batches)), 1),
        "non_200": sum(n for p in phases for c, n in p["statuses"].items() if c != "200"),
        "errors": sum(p["errors"] for p in phases),
        "service_cpu_ms_per_req_on": med(on, "service_cpu_ms_per_req"),
        "service_cpu_ms_per_req_off": med(off, "service_cpu_ms_per_req"),
        # The throughput ratio the service would reach with its core to itself.
        "cpu_ratio": round(
            med(off, "service_cpu_ms_per_req") / med(on, "service_cpu_ms_per_req"), 3
        ),
        "postgres_cpu_ms_per_req_on": med(on, "postgres_cpu_ms_per_req"),
        "postgres_cpu_ms_per_req_off": med(off, "postgres_cpu_ms_per_req"),
        "cpu_on": {k: med(on, f"cpu_{k}") for k in ("service", "postgres", "clients", "other")},
        "cpu_off": {k: med(off, f"cpu_{k}") for k in ("service", "postgres", "clients", "other")},
        "pinning": {k: v for k, v in cpus.items()} if cpus["service"] else "none",
        "machine": {"nproc": ncpu, "cpu": cpu_model(), "python": platform.python_version()},
        "command": shlex.join([sys.executable, "bench/recorder_overhead.py", *sys.argv[1:]]),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
