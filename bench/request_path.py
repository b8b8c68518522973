"""Request path cost: the service's endpoints against a bare FastAPI endpoint, in one run.

One run starts a private PostgreSQL (tests/pg.py) and migrates it, then starts each server the
same way (this script's own `--serve` mode: `uvicorn.run(app, loop="uvloop", http="httptools")`,
one worker, `gc.freeze()` as `audit-service serve` does, pinned with `taskset -c 1`) and drives
it with `wrk` (1 thread, keep-alive connections, pinned to CPU 0 with PostgreSQL; a Lua script
sets headers and bodies and prints latency percentiles):

  (a) bare     a FastAPI app with one `GET /ping` JSON route: the framework's floor;
  (b) me       `GET /me` with a bearer token, recorded (one audit event per request);
  (b') me_off  the same with AUDIT_RECORD_REQUESTS=false (the recorder middleware still runs:
               request id, session handling; only the event and its write are skipped);
  (c) events   single `POST /events` with an API key (one stored event per request);
  (d) predict  `POST /predict` with a bearer token, recorded;
  me_nocache, events_nocache: (b) and (c) with AUDIT_CACHE_SECONDS=0 (core/cache.py off), so
               the cache's share is measured on the same code.

Per phase: requests/s, p50/p99 (wrk), and CPU per request of the server and of PostgreSQL from
/proc/PID/stat (utime + stime before and after). CPU per request holds up when neighbours steal
CPU; throughput does not, so both are printed, with the load average.

With --profile, each service phase is then run again under `py-spy record --format raw
--nonblocking` and its samples are grouped into stages (HTTP parsing, middleware, dependency
resolution, JWT/key verification, rate limiting, validation, SQL, commit, serialisation, other).

Prints one JSON line (progress on stderr). Reproduce:

    python bench/request_path.py [--duration 10 --connections 32 --profile]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
for path in (str(REPO), str(BENCH)):
    if path not in sys.path:
        sys.path.insert(0, path)

from common import JWT_SECRET, children, cpu_model, free_port, proc_cpu

ADMIN_PASSWORD = "bench-admin-password-123"
SERVER_CPU = "1"
LOAD_CPU = "0"
HUGE = "100000000/second"
PHASES = ["bare", "me", "events", "predict", "me_off", "me_nocache", "events_nocache"]
PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))

# --- servers (this script re-run with --serve) ----------------------------------------------


def serve(kind: str, port: int) -> None:
    import uvicorn

    if kind == "bare":
        from fastapi import FastAPI

        app: Any = FastAPI()

        @app.get("/ping")
        async def ping() -> dict[str, Any]:
            return {"ok": True, "service": "bare"}

    else:
        from audit_service.core.config import Settings
        from audit_service.main import create_app

        app = create_app(Settings())
    gc.collect()
    gc.freeze()  # as `audit-service serve` does
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        workers=1,
        access_log=False,
        log_level="warning",
        proxy_headers=False,
    )


def start_server(kind: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = ["taskset", "-c", SERVER_CPU, sys.executable, __file__, "--serve", kind]
    process = subprocess.Popen([*command, "--port", str(port)], env=env, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    health = "/ping" if kind == "bare" else "/healthz"
    deadline = time.time() + 60
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{kind} server exited with {process.returncode}")
        try:
            if httpx.get(base + health, timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{kind} server did not come up")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(2)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- wrk ------------------------------------------------------------------------------------

LUA = r"""
local method, path, body_template = "%(method)s", "%(path)s", %(body)s
local prefix = "%(prefix)s"
wrk.method = method
%(headers)s
local counter = 0
request = function()
  counter = counter + 1
  local body = nil
  if body_template ~= nil then
    body = string.gsub(body_template, "@N@", prefix .. "-" .. counter)
  end
  return wrk.format(method, path, nil, body)
end
local threads = {}
setup = function(thread) table.insert(threads, thread) end
ok, bad = 0, 0
response = function(status, headers, body)
  if status < 300 then ok = ok + 1 else bad = bad + 1 end
end
done = function(summary, latency, requests)
  local good, other = 0, 0
  for _, t in ipairs(threads) do good = good + t:get("ok"); other = other + t:get("bad") end
  io.write(string.format(
    'WRKJSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, ' ..
    '"errors": %%d, "ok": %%d, "not_ok": %%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout, good, other))
end
"""


def lua_script(method: str, path: str, headers: dict[str, str], body: str | None) -> str:
    lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    return LUA % {
        "method": method,
        "path": path,
        "body": "[[" + body + "]]" if body is not None else "nil",
        "headers": lines,
        "prefix": "@PREFIX@",
    }


def wrk(base: str, script: str, connections: int, duration: float) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script.replace("@PREFIX@", uuid.uuid4().hex[:12]))  # fresh idempotency keys
    try:
        out = subprocess.run(
            ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}",
             f"-d{max(1, round(duration))}s", "--timeout", "30s", "-s", f.name, base],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    finally:
        os.unlink(f.name)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            return dict(json.loads(line[8:]))
    raise RuntimeError(f"wrk printed no result: {out.stdout}{out.stderr}")


# --- PostgreSQL -------------------------------------------------------------------------------


class Postgres:
    def __init__(self) -> None:
        from tests.pg import TempPostgres

        self.server = TempPostgres()
        self.url = self.server.start()
        self.dsn = self.url.replace("postgresql+asyncpg", "postgresql")
        self.postmaster = int((self.server.data / "postmaster.pid").read_text().split()[0])
        for pid in [self.postmaster, *children(self.postmaster)]:
            os.sched_setaffinity(pid, [int(LOAD_CPU)])  # later backends inherit it

    def cpu(self) -> float:
        live = sum(proc_cpu(p) for p in children(self.postmaster))
        return proc_cpu(self.postmaster, reaped_children=True) + live

    def scalar(self, sql: str) -> Any:
        import asyncpg

        async def run() -> Any:
            conn = await asyncpg.connect(self.dsn)
            try:
                return await conn.fetchval(sql)
            finally:
                await conn.close()

        return asyncio.run(run())


# --- profile ----------------------------------------------------------------------------------

# Work stages, checked in this order against the whole stack: the first any frame matches
# wins (a SQL round trip made while resolving a dependency is SQL, not dependency resolution).
# SQLAlchemy's async layer runs its work in greenlets, whose stacks start afresh: a
# rollback there is the end of the request's transaction, counted with commit.
WORK: list[tuple[str, re.Pattern[str]]] = [
    (
        "commit",
        re.compile(
            r"\bcommit \(|\brollback \(|audit_log/writer\.py|Recorder\.finish|"
            r"audit_log/repository\.py:\d+\);?[^;]*insert_events"
        ),
    ),
    ("SQL", re.compile(r"sqlalchemy/|asyncpg/|aiosqlite/")),
    ("JWT/key verification", re.compile(r"jose/|/jwt/|decode_access_token|sha256_hex|hmac")),
    ("rate limiting", re.compile(r"/limits/|core/ratelimit\.py")),
    (
        "serialisation",
        re.compile(
            r"serialize_response|jsonable_encoder|JSONResponse|\brender \(|json/encoder|"
            r"orjson|problem_response"
        ),
    ),
    ("validation", re.compile(r"pydantic|request_body_to_args|_validate_value")),
]
# Structural stages: the innermost frame that matches one names the stage.
STRUCTURE: list[tuple[str, re.Pattern[str]]] = [
    ("dependency resolution", re.compile(r"fastapi/dependencies/")),
    (
        "routing + endpoint",
        re.compile(
            r"fastapi/routing|starlette/routing|core/routing|endpoints\.py|service\.py|"
            r"request_path\.py:\d+\)$"
        ),
    ),
    (
        "middleware",
        re.compile(
            r"starlette/middleware|fastapi/middleware|fastapi/_body_limit|fastapi/telemetry|"
            r"starlette/_exception_handler|core/middleware|audit_log/middleware|core/metrics|"
            r"audit_log/context|request_context"
        ),
    ),
    ("HTTP parsing", re.compile(r"uvicorn/protocols|httptools|h11")),
]
OTHER = "other (event loop, asyncio)"


def stage_of(stack: str) -> str:
    for name, pattern in WORK:
        if pattern.search(stack):
            return name
    for frame in reversed(stack.split(";")):
        for name, pattern in STRUCTURE:
            if pattern.search(frame):
                return name
    return OTHER


def profile(pid: int, duration: float, out: Path) -> None:
    subprocess.run(
        ["taskset", "-c", LOAD_CPU, PY_SPY, "record",
         "--pid", str(pid), "--format", "raw", "--rate", "250", "--nonblocking",
         "--duration", str(int(duration)), "--output", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip


def summarise(raw: Path) -> dict[str, float]:
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            counts[stage_of(stack)] += int(n)
    total = sum(counts.values()) or 1
    return {k: round(100 * v / total, 1) for k, v in counts.most_common()}


# --- phases -----------------------------------------------------------------------------------


def login(base: str) -> str:
    r = httpx.post(
        f"{base}/login", json={"username": "admin", "password": ADMIN_PASSWORD}, timeout=30
    )
    r.raise_for_status()
    return str(r.json()["access_token"])


EVENT = json.dumps(
    {
        "action": "exam.submitted",
        "module": "exams",
        "occurred_at": "2026-03-01T09:30:00+01:00",
        "actor_id": "student-1042",
        "actor_name": "Ada L.",
        "actor_role": "student",
        "target_type": "exam",
        "target_id": "algebra-2",
        "ip": "198.51.100.23",
        "metadata": {"answers": 40, "duration_s": 3120},
        "idempotency_key": "bench-@N@",
    }
)
PREDICT = json.dumps(
    {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
)


def scripts(token: str, key: str) -> dict[str, str]:
    bearer = {"Authorization": f"Bearer {token}"}
    json_h = {"Content-Type": "application/json"}
    return {
        "bare": lua_script("GET", "/ping", {}, None),
        "me": lua_script("GET", "/me", bearer, None),
        "me_off": lua_script("GET", "/me", bearer, None),
        "me_nocache": lua_script("GET", "/me", bearer, None),
        "events": lua_script("POST", "/events", {"X-API-Key": key, **json_h}, EVENT),
        "events_nocache": lua_script("POST", "/events", {"X-API-Key": key, **json_h}, EVENT),
        "predict": lua_script("POST", "/predict", {**bearer, **json_h}, PREDICT),
    }


def profile_phase(
    name: str, pid: int, base: str, script: str, args: argparse.Namespace
) -> dict[str, float]:
    """The phase's load again, this time sampled by py-spy; stage -> % of the samples."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / f"{name}.txt"
        loader = subprocess.Popen(
            ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{args.connections}",
             f"-d{round(args.profile_seconds) + 2}s", "-s", _write_tmp(script), base],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1)
        profile(pid, args.profile_seconds, raw)
        loader.wait()
        if args.keep_profiles:
            Path(args.keep_profiles).mkdir(parents=True, exist_ok=True)
            shutil.copy(raw, Path(args.keep_profiles) / raw.name)
        return summarise(raw)


PROFILED = ("bare", "me", "me_off", "events", "predict")
MEDIAN_KEYS = (
    "rps", "p50_ms", "p99_ms", "server_cpu_ms_per_req", "postgres_cpu_ms_per_req",
    "server_cpu_cores", "rows_per_req",
)  # fmt: skip


def median_phase(each: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure, the median over the rounds (each figure on its own), and every round's
    throughput and CPU per request."""
    out: dict[str, Any] = {k: round(statistics.median(p[k] for p in each), 3) for k in MEDIAN_KEYS}
    out["rounds_rps"] = [p["rps"] for p in each]
    out["rounds_cpu_ms"] = [p["server_cpu_ms_per_req"] for p in each]
    out["not_ok"] = sum(p["not_ok"] for p in each)
    out["errors"] = sum(p["errors"] for p in each)
    out["loadavg"] = [p["loadavg"][0] for p in each]
    return out


def measure(
    name: str,
    pid: int,
    base: str,
    script: str,
    pg: Postgres,
    args: argparse.Namespace,
) -> dict[str, Any]:
    wrk(base, script, args.connections, args.warmup)  # warm-up, not counted
    rows0 = pg.scalar("SELECT count(*) FROM audit_event")
    svc0, pg0, load0 = proc_cpu(pid), pg.cpu(), os.getloadavg()[0]
    result = wrk(base, script, args.connections, args.duration)
    svc1, pg1, load1 = proc_cpu(pid), pg.cpu(), os.getloadavg()[0]
    rows1 = pg.scalar("SELECT count(*) FROM audit_event")
    n = result["requests"]
    seconds = result["duration_us"] / 1e6
    return {
        "phase": name,
        "rps": round(n / seconds, 1),
        "p50_ms": round(result["p50_us"] / 1000, 2),
        "p99_ms": round(result["p99_us"] / 1000, 2),
        "requests": n,
        "ok": result["ok"],
        "not_ok": result["not_ok"],
        "errors": result["errors"],
        "server_cpu_ms_per_req": round((svc1 - svc0) / n * 1000, 3),
        "postgres_cpu_ms_per_req": round((pg1 - pg0) / n * 1000, 3),
        "server_cpu_cores": round((svc1 - svc0) / seconds, 2),
        "rows_per_req": round((rows1 - rows0) / n, 3),
        "loadavg": [round(load0, 2), round(load1, 2)],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from audit_service.core import migrations

    pg = Postgres()
    phases: dict[str, dict[str, Any]] = {}
    profiles: dict[str, dict[str, float]] = {}
    try:
        migrations.upgrade(pg.url)
        env = {
            **os.environ,
            "DATABASE_URL": pg.url,
            "AUDIT_JWT_SECRET": JWT_SECRET,
            "AUDIT_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "AUDIT_DEFAULT_RATE_LIMIT": HUGE,
            "AUDIT_INGEST_RATE_LIMIT": HUGE,
            "AUDIT_INGEST_IP_RATE_LIMIT": HUGE,
            "AUDIT_PREDICT_RATE_LIMIT": HUGE,
            "AUDIT_LOGIN_RATE_LIMIT": HUGE,
            "AUDIT_RUN_JOBS": "false",  # background jobs would share the server's core
        }
        cli = str(Path(sys.executable).with_name("audit-service"))
        key = subprocess.run(
            [cli, "api-keys", "create", "--name", "exam-platform", "--scope", "events:write"],
            env={**env, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])},
            cwd=REPO, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        token = ""
        plan: list[tuple[str, dict[str, str], list[str], str]] = [("bare", {}, ["bare"], "")]
        for label, src in [
            ("", REPO),
            *([("@baseline", Path(args.baseline))] if args.baseline else []),
        ]:
            path_env = {"PYTHONPATH": os.pathsep.join([str(src / "src"), str(src)])}
            plan += [
                ("service", path_env, ["me", "events", "predict"], label),
                ("service", {**path_env, "AUDIT_RECORD_REQUESTS": "false"}, ["me_off"], label),
            ]
            if not label:  # this checkout's cache (core/cache.py) off: same code, no cache
                plan.append(
                    ("service", {**path_env, "AUDIT_CACHE_SECONDS": "0"},
                     ["me_nocache", "events_nocache"], label)
                )  # fmt: skip
        runs: dict[str, list[dict[str, Any]]] = {}
        for round_no in range(args.rounds):
            # Odd rounds run the service variants in reverse order: neither gets the quieter
            # minutes of the shared box every time.
            order = plan if round_no % 2 == 0 else [plan[0], *reversed(plan[1:])]
            for kind, extra, names, label in order:
                names = [n for n in names if n in args.phases]
                if not names:
                    continue
                process, base = start_server(kind, {**env, **extra})
                try:
                    if kind != "bare":
                        token = login(base)
                    lua = scripts(token, key)
                    for name in names:
                        phase = measure(name + label, process.pid, base, lua[name], pg, args)
                        phase["round"] = round_no + 1
                        print(json.dumps(phase), file=sys.stderr, flush=True)
                        runs.setdefault(name + label, []).append(phase)
                        if args.profile and round_no == 0 and name in PROFILED:
                            profiles[name + label] = profile_phase(
                                name + label, process.pid, base, lua[name], args
                            )
                            print(
                                json.dumps({name + label: profiles[name + label]}),
                                file=sys.stderr,
                                flush=True,
                            )
                finally:
                    stop_server(process)
        for name, each in runs.items():
            phases[name] = median_phase(each)
    finally:
        pg.server.stop()

    def ratio(a: str, b: str) -> float | None:
        if a not in phases or b not in phases:
            return None
        return round(phases[a]["rps"] / phases[b]["rps"], 3)

    def cpu_ratio(a: str, b: str) -> float | None:
        """How many of `a` the CPU of one `b` buys (b's CPU per request / a's)."""
        if a not in phases or b not in phases:
            return None
        return round(phases[b]["server_cpu_ms_per_req"] / phases[a]["server_cpu_ms_per_req"], 3)

    return {
        "bench": "request_path",
        "connections": args.connections,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "phases": phases,
        "ratios": {
            # The targets: >= 0.33, >= 0.90, >= 1500/s with p99 < 50 ms.
            "me_vs_bare_rps": ratio("me", "bare"),
            "me_vs_bare_cpu": cpu_ratio("me", "bare"),
            "me_on_vs_off_rps": ratio("me", "me_off"),
            "me_on_vs_off_cpu": cpu_ratio("me", "me_off"),
            "me_cache_vs_nocache_cpu": cpu_ratio("me", "me_nocache"),
            "events_cache_vs_nocache_cpu": cpu_ratio("events", "events_nocache"),
            "events_per_s": phases.get("events", {}).get("rps"),
            "events_p99_ms": phases.get("events", {}).get("p99_ms"),
            "predict_vs_bare_rps": ratio("predict", "bare"),
        },
        "profile_pct": profiles or None,
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "machine": {
            "nproc": os.cpu_count(),
            "cpu": cpu_model(),
            "python": platform.python_version(),
        },
        "command": shlex.join([sys.executable, "bench/request_path.py", *sys.argv[1:]]),
    }


def _write_tmp(text: str) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(text.replace("@PREFIX@", uuid.uuid4().hex[:12]))
    return f.name


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=32, help="wrk keep-alive connections")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds a phase")
    parser.add_argument("--rounds", type=int, default=3, help="the plan this often; medians")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument(
        "--phases",
        type=lambda v: v.split(","),
        default=PHASES,
        help=f"comma-separated subset of {','.join(PHASES)}",
    )
    parser.add_argument(
        "--baseline",
        help="another checkout (e.g. `git archive main src`): its service phases run too",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy stage breakdown too")
    parser.add_argument("--profile-seconds", type=float, default=8.0)
    parser.add_argument("--keep-profiles", help="directory to keep py-spy's raw output in")
    parser.add_argument("--serve", choices=("bare", "service"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    if args.profile and not Path(PY_SPY).exists():
        raise SystemExit("py-spy is needed for --profile: pip install py-spy")
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
