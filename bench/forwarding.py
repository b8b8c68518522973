"""What forwarding does under load (issue 11, "Measured"): lag, backlog drain, replay, and
what it costs ingest. One JSON line per phase on stdout (progress on stderr).

One run starts a private PostgreSQL (tests/pg.py), migrates it, makes an API key, and real
receivers on loopback in this process (a webhook receiver that checks every Standard
Webhooks signature, a Splunk HEC emulator; Debian's rsyslogd over TLS as the tests start
it), then:

  (a) lag      `audit-service serve` with its jobs (sequencer and forwarding.deliver
               in-process, as `make run`), a webhook destination; --rate events/s of
               100-event batches for --seconds (open loop). Per event: the time from its
               batch's 2xx response (the commit precedes it) to the receiver's 2xx.
  (b) drain    --backlog events COPYed in, sequenced by `audit-service worker` while every
               destination is paused; then each destination in turn (webhook, HEC, rsyslog
               TLS) is resumed from the start of the log: events/s until its cursor is at
               the end (the cursor only moves once the receiver accepted).
  (c) replay   a replay of the whole backlog to the webhook while the service ingests
               --replay-live-rate events/s that the same destination delivers live:
               replay events/s, and the live lag meanwhile.
  (d) ingest   --ingest-events in 1,000-event batches from --batch-clients clients as fast
               as they go, `serve` with its jobs: once with every destination paused, once
               with the webhook delivering live. Throughput of both, and the drop.

Reproduce (≤ 10 min on a 2-core box):

    PYTHONPATH=src:. .venv/bin/python bench/forwarding.py
    .venv/bin/python bench/forwarding.py --phases lag,drain --seconds 10 --backlog 20000
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import httpx

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from common import ServiceBench, cpu_model, free_port
from ingest import COPY_COLUMNS, Connection, _cpu_s, _pct, copy_records, make_events
from standardwebhooks import Webhook
from tests.forwarding.rsyslog import running_rsyslog

from audit_service.integrity import note
from audit_service.kit.webhooks import new_secret

PASSWORD = "bench-admin-password-123"  # ServiceBench's bootstrap admin password
HEC_TOKEN = "bench-hec-token"


def _pcts(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    v = list(values)
    return {
        "n": len(v),
        "p50_ms": _pct(v, 0.5),
        "p90_ms": _pct(v, 0.9),
        "p99_ms": _pct(v, 0.99),
        "max_ms": round(max(v) * 1000, 2),
    }


# --- receivers -------------------------------------------------------------------------------


class Receiver:
    """A lean HTTP/1.1 keep-alive server: per accepted event its `id` and arrival time (no
    bodies kept). `kind` webhook: every signature verified with the standardwebhooks
    library; hec: the token checked, concatenated objects parsed."""

    def __init__(self, kind: str, secret: str = "") -> None:
        self.kind = kind
        self.webhook = Webhook(secret) if secret else None
        self.arrivals: dict[int, float] = {}  # event pk -> first arrival
        self.events = 0  # accepted, duplicates included
        self.requests = 0
        self.bad = 0
        self.cpu_s = 0.0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    def _accept(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        t0 = time.process_time()
        try:
            if self.kind == "webhook":
                assert self.webhook is not None
                try:
                    self.webhook.verify(body, headers, json_parse=False)
                except Exception:
                    self.bad += 1
                    return 401, b'{"error":"bad signature"}'
                value = json.loads(body)
                ids = [e["id"] for e in (value if isinstance(value, list) else [value])]
            else:
                if headers.get("authorization") != f"Splunk {HEC_TOKEN}":
                    return 403, b'{"text":"Invalid token","code":4}'
                decoder, text, at, ids = json.JSONDecoder(), body.decode(), 0, []
                while at < len(text):
                    obj, at = decoder.raw_decode(text, at)
                    ids.append(obj["event"]["id"])
            now = time.perf_counter()
            for i in ids:
                self.arrivals.setdefault(i, now)
            self.events += len(ids)
            self.requests += 1
            return 200, b'{"text":"Success","code":0}'
        finally:
            self.cpu_s += time.process_time() - t0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    k, sep, v = line.partition(":")
                    if sep:
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, answer = self._accept(headers, body)
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Length: {len(answer)}\r\n"
                    "Content-Type: application/json\r\n\r\n".encode()
                    + answer
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


# --- the bench -------------------------------------------------------------------------------


class Bench(ServiceBench):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(
            args,
            {
                "AUDIT_INGEST_IP_RATE_LIMIT": "1000000/second",
                "AUDIT_DEFAULT_RATE_LIMIT": "1000000/minute",
                "AUDIT_LOGIN_RATE_LIMIT": "1000000/minute",
                "AUDIT_LOG_SIGNING_KEY": note.Signer.generate("bench.audit-service").private_key,
                "AUDIT_LOG_ORIGIN": "bench.example/audit-service/forwarding",
                "AUDIT_FORWARD_ALLOW_PRIVATE": "127.0.0.0/8",
                "AUDIT_FORWARD_BACKOFF_BASE": "0.1",
                "AUDIT_FORWARD_BACKOFF_MAX": "1",
            },
        )
        self.procs: list[subprocess.Popen[bytes]] = []
        self.port = 0
        self.secret = new_secret()
        self.destinations: dict[str, int] = {}
        self.receivers: dict[str, Receiver] = {}
        self.token = ""

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
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("the service did not start")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz").status_code == 200:
                    return proc
            except httpx.HTTPError:
                time.sleep(0.1)

    def spy(self, pid: int, name: str) -> subprocess.Popen[bytes] | None:
        """py-spy record (collapsed stacks) of `pid` until stopped, with --py-spy."""
        if not self.args.py_spy:
            return None
        out = Path(self.args.py_spy_dir) / f"{name}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        argv = [self.args.py_spy, "record", "-p", str(pid), "-r", "50", "-f", "raw"]
        return subprocess.Popen(
            [*argv, "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    @staticmethod
    def unspy(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is not None:
            proc.send_signal(2)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

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

    # --- the API -----------------------------------------------------------------------------

    async def api(self, method: str, path: str, body: Any = None) -> Any:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=60) as c:
            if not self.token:
                r = await c.post("/login", json={"username": "admin", "password": PASSWORD})
                r.raise_for_status()
                self.token = r.json()["access_token"]
            r = await c.request(
                method, path, json=body, headers={"Authorization": f"Bearer {self.token}"}
            )
            if r.status_code >= 300:
                raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
            return r.json() if r.content else None

    async def create_destinations(self, syslog: Any) -> None:
        """Paused, from the start of the log: webhook, HEC, rsyslog over TLS."""
        for kind, receiver in (("webhook", "webhook"), ("hec", "hec")):
            r = Receiver(receiver, self.secret if kind == "webhook" else "")
            await r.start()
            self.receivers[kind] = r
        base = {"start": "beginning", "paused": True, "filter": {"sources": ["exam-platform"]}}
        made = await self.api(
            "POST",
            "/admin/forwarding/destinations",
            {
                **base,
                "name": "bench-webhook",
                "kind": "webhook",
                "config": {"url": f"http://127.0.0.1:{self.receivers['webhook'].port}/hook"},
                "secrets": {"webhook_secrets": [self.secret]},
            },
        )
        self.destinations["webhook"] = made["id"]
        made = await self.api(
            "POST",
            "/admin/forwarding/destinations",
            {
                **base,
                "name": "bench-hec",
                "kind": "splunk_hec",
                "config": {"url": f"http://127.0.0.1:{self.receivers['hec'].port}"},
                "secrets": {"hec_token": HEC_TOKEN},
            },
        )
        self.destinations["hec"] = made["id"]
        if syslog is not None:
            made = await self.api(
                "POST",
                "/admin/forwarding/destinations",
                {
                    **base,
                    "name": "bench-rsyslog-tls",
                    "kind": "syslog",
                    "config": {
                        "host": "127.0.0.1",
                        "port": syslog.tls_port,
                        "transport": "tls",
                        "ca_file": str(syslog.ca_file),
                        "server_name": syslog.server_name,
                    },
                },
            )
            self.destinations["rsyslog_tls"] = made["id"]

    async def set_paused(self, name: str, paused: bool) -> None:
        action = "pause" if paused else "resume"
        await self.api("POST", f"/admin/forwarding/destinations/{self.destinations[name]}/{action}")

    async def pause_all(self) -> None:
        for name in self.destinations:
            await self.set_paused(name, True)

    # --- the database ------------------------------------------------------------------------

    async def tree_size(self, conn: asyncpg.Connection) -> int:
        return int(await conn.fetchval("SELECT next_position FROM log_cursor WHERE id = 1"))

    async def cursor(self, conn: asyncpg.Connection, name: str) -> int:
        return int(
            await conn.fetchval(
                "SELECT cursor FROM forward_destination WHERE id = $1", self.destinations[name]
            )
        )

    async def preload(self, n: int, seed: int) -> None:
        records = copy_records(make_events(n, seed=seed), self.key[:16])
        conn = await asyncpg.connect(self.dsn)
        try:
            for i in range(0, n, 1000):
                await conn.copy_records_to_table(
                    "audit_event", records=records[i : i + 1000], columns=COPY_COLUMNS
                )
            await conn.execute("VACUUM ANALYZE audit_event")
        finally:
            await conn.close()

    async def wait_until(self, check: Any, within: float, what: str) -> float:
        deadline = time.perf_counter() + within
        while time.perf_counter() < deadline:
            if await check():
                return time.perf_counter()
            await asyncio.sleep(0.02)
        raise RuntimeError(f"{what}: not within {within} s")

    # --- load --------------------------------------------------------------------------------

    async def open_loop(
        self,
        rate: float,
        seconds: float,
        per_batch: int,
        seed: int,
        stop: asyncio.Event | None = None,
    ) -> tuple[list[tuple[float, list[int]]], dict[int, int], float]:
        """`rate` events/s of `per_batch` batches for `seconds` (or until `stop`): (response
        time, event pks) per batch, statuses, and the p99 of how late a batch was sent.
        With `stop`, batches are made as they go (no minutes of events made up front)."""
        count = max(1, int(rate * seconds / per_batch))

        def body(i: int) -> bytes:
            return json.dumps(
                {"events": make_events(per_batch, seed=seed * 1_000_000 + i)}
            ).encode()

        bodies = [] if stop is not None else [body(i) for i in range(count)]
        every = per_batch / rate
        pool: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(8):
            pool.put_nowait(Connection("127.0.0.1", self.port, self.key))
        responses: list[tuple[float, list[int]]] = []
        statuses: dict[int, int] = {}
        late: list[float] = []

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

        start = time.perf_counter()
        tasks = []
        for i in range(count):
            if stop is not None and stop.is_set():
                break
            prepared = bodies[i] if bodies else body(i)
            due = start + i * every
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            late.append(time.perf_counter() - due)
            tasks.append(asyncio.create_task(send(prepared)))
        await asyncio.gather(*tasks)
        while not pool.empty():
            pool.get_nowait().close()
        return responses, statuses, _pct(late, 0.99)

    def lags(self, receiver: Receiver, responses: list[tuple[float, list[int]]]) -> list[float]:
        out = []
        for done, ids in responses:
            for i in ids:
                if i in receiver.arrivals:
                    out.append(max(0.0, receiver.arrivals[i] - done))
        return out

    # --- (a) lag at a sustained rate ---------------------------------------------------------

    async def lag(self, rate: float, seconds: float) -> dict[str, Any]:
        service = self.serve(jobs=True)
        await self.set_paused("webhook", False)
        conn = await asyncpg.connect(self.dsn)
        receiver = self.receivers["webhook"]
        sizes: list[tuple[float, int]] = []  # (seen at, tree size): when events got positions
        stop = asyncio.Event()

        async def watch() -> None:
            watcher = await asyncpg.connect(self.dsn)
            try:
                while not stop.is_set():
                    sizes.append((time.perf_counter(), await self.tree_size(watcher)))
                    await asyncio.sleep(0.02)
            finally:
                await watcher.close()

        try:
            before_requests = receiver.requests
            await asyncio.sleep(2)  # the jobs claim their leases
            watching = asyncio.create_task(watch())
            cpu0 = _cpu_s([service.pid])
            t0 = time.perf_counter()
            responses, statuses, late = await self.open_loop(rate, seconds, 100, seed=11)
            sent_for = time.perf_counter() - t0
            ids = [i for _, batch in responses for i in batch]

            async def arrived() -> bool:
                return all(i in receiver.arrivals for i in ids)

            await self.wait_until(arrived, 120, "lag: not every event arrived")
            cpu = _cpu_s([service.pid]) - cpu0
            requests = receiver.requests - before_requests
            stop.set()
            await watching
            positions = dict(
                await conn.fetch(
                    "SELECT event_pk, position FROM audit_leaf WHERE event_pk = ANY($1)", ids
                )
            )
        finally:
            stop.set()
            await conn.close()
            await self.pause_all()
            self.stop_all()
        seen = [size for _, size in sizes]
        sequenced: list[float] = []
        for done, batch in responses:
            for i in batch:
                k = bisect.bisect_right(seen, positions[i])
                if k < len(sizes):
                    sequenced.append(max(0.0, sizes[k][0] - done))
        return {
            "phase": "lag",
            "target_events_per_s": rate,
            "sent_events_per_s": round(len(ids) / sent_for),
            "events": len(ids),
            "statuses": statuses,
            "send_late_p99_ms": late,
            "webhook_requests": requests,
            "requests_per_s": round(requests / sent_for, 1),
            "service_cpu_share": round(cpu / sent_for, 2),
            "commit_to_receiver": _pcts(self.lags(receiver, responses)),
            # Where the time goes: the first part, commit -> a log position (the sequencer).
            "commit_to_sequenced": _pcts(sequenced),
        }

    # --- (b) backlog drain -------------------------------------------------------------------

    async def drain(self, n: int) -> dict[str, Any]:
        self.serve(jobs=False)  # for the API only
        await self.pause_all()
        await self.preload(n, seed=21)
        worker = self.worker()
        conn = await asyncpg.connect(self.dsn)
        out: dict[str, Any] = {"phase": "drain", "backlog_events": n}
        try:
            before = await self.tree_size(conn)
            total = int(await conn.fetchval("SELECT count(*) FROM audit_event"))

            async def sequenced() -> bool:
                return await self.tree_size(conn) >= total

            t0 = time.perf_counter()
            await self.wait_until(sequenced, 900, "drain: the sequencer did not catch up")
            out["sequencer_s"] = round(time.perf_counter() - t0, 1)
            # The other consumers of the log (statistics, detections) catch up on the same
            # backlog in the worker: wait until it is quiet, so the drains measure forwarding.
            quiet_from = time.perf_counter()
            while time.perf_counter() - quiet_from < 30:
                c0 = _cpu_s([worker.pid])
                await asyncio.sleep(1.0)
                if _cpu_s([worker.pid]) - c0 < 0.1:
                    break
            out["other_consumers_s"] = round(time.perf_counter() - quiet_from, 1)
            out["sequenced_before"] = before
            end = await self.tree_size(conn)
            for name in self.destinations:
                start_cursor = await self.cursor(conn, name)
                delivered_before = int(
                    await conn.fetchval(
                        "SELECT delivered FROM forward_destination WHERE id = $1",
                        self.destinations[name],
                    )
                )
                cpu0 = _cpu_s([worker.pid])
                spy = self.spy(worker.pid, f"drain-{name}")
                t1 = time.perf_counter()
                await self.set_paused(name, False)

                async def caught_up(name: str = name) -> bool:
                    return await self.cursor(conn, name) >= end - 1

                done = await self.wait_until(caught_up, 900, f"drain {name}")
                took = done - t1
                cpu = _cpu_s([worker.pid]) - cpu0
                self.unspy(spy)
                await self.set_paused(name, True)
                delivered = (
                    int(
                        await conn.fetchval(
                            "SELECT delivered FROM forward_destination WHERE id = $1",
                            self.destinations[name],
                        )
                    )
                    - delivered_before
                )
                row: dict[str, Any] = {
                    "positions": end - 1 - start_cursor,
                    "delivered": delivered,
                    "seconds": round(took, 2),
                    "events_per_s": round(delivered / took),
                    "worker_cpu_us_per_event": round(cpu / max(delivered, 1) * 1e6, 1),
                }
                if name in self.receivers:
                    r = self.receivers[name]
                    row["receiver_events"] = r.events
                    row["receiver_requests"] = r.requests
                    row["receiver_cpu_s"] = round(r.cpu_s, 2)
                out[name] = row
                print(json.dumps({"drain": name, **row}), file=sys.stderr, flush=True)
        finally:
            await conn.close()
            self.stop_all()
        return out

    # --- (c) replay beside live delivery -----------------------------------------------------

    async def replay(self, n: int, live_rate: float) -> dict[str, Any]:
        service = self.serve(jobs=True)
        spy = self.spy(service.pid, "replay-serve")
        receiver = self.receivers["webhook"]
        await self.set_paused("webhook", False)
        conn = await asyncpg.connect(self.dsn)
        try:
            await asyncio.sleep(2)
            end = await self.tree_size(conn)
            t0 = time.perf_counter()
            made = await self.api(
                "POST",
                f"/admin/forwarding/destinations/{self.destinations['webhook']}/replays",
                {"from_position": max(0, end - n), "to_position": end - 1},
            )
            stop = asyncio.Event()
            live = asyncio.create_task(self.open_loop(live_rate, 3600, 50, seed=31, stop=stop))

            async def replay_done() -> bool:
                state = await conn.fetchval(
                    "SELECT state FROM forward_replay WHERE id = $1", made["id"]
                )
                return bool(state in ("done", "failed"))

            done = await self.wait_until(replay_done, 900, "replay")
            took = done - t0
            self.unspy(spy)
            stop.set()
            live_responses, _, _ = await live
            live_ids = [i for _, batch in live_responses for i in batch]

            async def live_arrived() -> bool:
                return all(i in receiver.arrivals for i in live_ids)

            await self.wait_until(live_arrived, 120, "replay: live events did not arrive")
            row = await conn.fetchrow(
                "SELECT state, delivered, to_position - from_position + 1 AS size"
                " FROM forward_replay WHERE id = $1",
                made["id"],
            )
        finally:
            await conn.close()
            await self.pause_all()
            self.stop_all()
        return {
            "phase": "replay",
            "state": row["state"],
            "range_positions": row["size"],
            "delivered": row["delivered"],
            "seconds": round(took, 2),
            "events_per_s": round(row["delivered"] / took),
            "live_events_per_s_target": live_rate,
            "live_events": len(live_ids),
            "live_commit_to_receiver": _pcts(self.lags(receiver, live_responses)),
            "receiver_requests": receiver.requests,
        }

    # --- (d) ingest with forwarding on / off -------------------------------------------------

    async def ingest(self, n: int) -> dict[str, Any]:
        events = make_events(n, seed=41)
        bodies = [json.dumps({"events": events[i : i + 1000]}).encode() for i in range(0, n, 1000)]
        out: dict[str, Any] = {"phase": "ingest", "events": n}
        receiver = self.receivers["webhook"]
        conn = await asyncpg.connect(self.dsn)
        try:
            for mode in ("off", "on"):
                service = self.serve(jobs=True)
                if mode == "on":
                    # A new webhook destination, live from the end of the log: only what
                    # this run ingests.
                    made = await self.api(
                        "POST",
                        "/admin/forwarding/destinations",
                        {
                            "name": "bench-webhook-live",
                            "kind": "webhook",
                            "config": {"url": f"http://127.0.0.1:{receiver.port}/live"},
                            "secrets": {"webhook_secrets": [self.secret]},
                            "filter": {"sources": ["exam-platform"]},
                        },
                    )
                    self.destinations["live"] = made["id"]
                await asyncio.sleep(2)
                queue = [
                    b.replace(b'"idempotency_key": "', f'"idempotency_key": "{mode}-'.encode())
                    for b in reversed(bodies)
                ]
                statuses: dict[int, int] = {}

                async def client(
                    queue: list[bytes] = queue, statuses: dict[int, int] = statuses
                ) -> None:
                    c = Connection("127.0.0.1", self.port, self.key)
                    while queue:
                        status, _ = await c.post("/events/batch", queue.pop())
                        statuses[status] = statuses.get(status, 0) + 1
                    c.close()

                cpu0 = _cpu_s([service.pid])
                t0 = time.perf_counter()
                await asyncio.gather(*(client() for _ in range(self.args.batch_clients)))
                took = time.perf_counter() - t0
                result: dict[str, Any] = {
                    "seconds": round(took, 2),
                    "events_per_s": round(n / took),
                    "statuses": statuses,
                    "service_cpu_s": round(_cpu_s([service.pid]) - cpu0, 1),
                }
                if mode == "on":
                    # Everything ingested is sequenced and then delivered.
                    async def sequenced() -> bool:
                        total = int(await conn.fetchval("SELECT count(*) FROM audit_event"))
                        return await self.tree_size(conn) >= total

                    await self.wait_until(sequenced, 600, "ingest: sequencing")
                    end = await self.tree_size(conn)

                    async def forwarded(end: int = end) -> bool:
                        return await self.cursor(conn, "live") >= end - 1

                    await self.wait_until(forwarded, 600, "ingest: forwarding to the end")
                    result["forwarded_all_after_s"] = round(time.perf_counter() - t0 - took, 2)
                out[mode] = result
                await self.pause_all()
                self.stop_all()
        finally:
            await conn.close()
        out["drop"] = round(1 - out["on"]["events_per_s"] / out["off"]["events_per_s"], 3)
        return out


def emit(row: dict[str, Any]) -> None:
    print(json.dumps(row), flush=True)


async def run(args: argparse.Namespace) -> None:
    phases = args.phases.split(",")
    bench = Bench(args)
    started = time.perf_counter()
    try:
        with contextlib.ExitStack() as stack:
            syslog = None
            if "drain" in phases and not args.no_rsyslog:
                directory = Path(tempfile.mkdtemp(prefix="bench-rsyslog-"))
                syslog = stack.enter_context(running_rsyslog(directory))
            bench.serve(jobs=False)
            await bench.create_destinations(syslog)
            bench.stop_all()
            if "lag" in phases:
                emit(await bench.lag(args.rate, args.seconds))
            if "drain" in phases:
                emit(await bench.drain(args.backlog))
            if "replay" in phases:
                emit(await bench.replay(args.backlog, args.replay_live_rate))
            if "ingest" in phases:
                emit(await bench.ingest(args.ingest_events))
    finally:
        bench.close()
        for r in bench.receivers.values():
            await r.stop()
    emit(
        {
            "phase": "machine",
            "seconds": round(time.perf_counter() - started, 1),
            "nproc": os.cpu_count(),
            "cpu": cpu_model(),
            "python": platform.python_version(),
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
            "pinning": (
                {"service_and_worker": bench.service_cpus, "rest": bench.other_cpus}
                if bench.service_cpus
                else "none"
            ),
            "command": shlex.join([sys.executable, "bench/forwarding.py", *sys.argv[1:]]),
        }
    )


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--phases", default="lag,drain,replay,ingest")
    p.add_argument("--rate", type=float, default=1000, help="events/s for (a)")
    p.add_argument("--seconds", type=float, default=30, help="duration of (a)")
    p.add_argument("--backlog", type=int, default=100_000, help="events for (b) and (c)")
    p.add_argument("--replay-live-rate", type=float, default=200, help="events/s during (c)")
    p.add_argument("--ingest-events", type=int, default=50_000, help="per mode, for (d)")
    p.add_argument("--batch-clients", type=int, default=4)
    p.add_argument("--py-spy", default="", help="path of py-spy: profile drain and replay")
    p.add_argument("--py-spy-dir", default=str(Path(tempfile.gettempdir()) / "bench-fwd-py-spy"))
    p.add_argument("--no-rsyslog", action="store_true", help="skip the rsyslog TLS drain")
    p.add_argument(
        "--pin",
        choices=("auto", "none"),
        default="none",
        help="auto: service and worker on CPU 0; PostgreSQL, receivers and load on the rest",
    )
    args = p.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
