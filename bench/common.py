"""Helpers the benchmark scripts share (run them as `python bench/<script>.py`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.pg import TempPostgres

JWT_SECRET = "bench-" + "x" * 40


@asynccontextmanager
async def admin_client(
    app: Any, password: str, request_timeout: float = 120
) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process (ASGI, no socket) client of a running `app`, logged in as the bootstrap
    admin: the requests go through auth, rate limits and the recorder."""
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://bench", timeout=request_timeout
    ) as client:
        r = await client.post("/login", json={"username": "admin", "password": password})
        r.raise_for_status()
        client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        yield client


SERVICE = "exam-platform"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(ppid: int) -> list[int]:
    """Pids whose parent is `ppid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == ppid:
                found.append(int(entry.name))
    return found


TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int, reaped_children: bool = False) -> float:
    """utime + stime of one process (and of its exited children), seconds; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    used = int(fields[11]) + int(fields[12])
    if reaped_children:
        used += int(fields[13]) + int(fields[14])
    return used / TICKS


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


class RawConnection:
    """A minimal keep-alive HTTP/1.1 client: a few µs of CPU per request, where httpx spends
    milliseconds at 32 connections and would need more CPU than the service it loads."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send a complete request; (status, body) of the response."""
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.reader, self.writer
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, chunked, close = 0, False, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        body = b""
        if chunked:
            parts = []
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                parts.append((await reader.readexactly(size + 2))[:-2])
            await reader.readuntil(b"\r\n")
            body = b"".join(parts)
        elif length:
            body = await reader.readexactly(length)
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class ServiceBench:
    """What the service benchmarks share: a private PostgreSQL (tests/pg.py), migrated; with
    --pin auto (2+ CPUs) CPU 0 kept for the service and PostgreSQL plus this process on the
    rest; the service's environment (`env`, plus `extra_env`) and an `events:write` API key
    for SERVICE made with the CLI (`key`). Starting the service is the subclass's business."""

    def __init__(self, args: argparse.Namespace, extra_env: Mapping[str, str] = {}) -> None:
        self.args = args
        ncpu = os.cpu_count() or 1
        pin = args.pin == "auto" and ncpu >= 2
        self.service_cpus = [0] if pin else None
        self.other_cpus = list(range(1, ncpu)) if pin else None
        self.pg = TempPostgres()
        self.url = self.pg.start()
        self.dsn = self.url.replace("postgresql+asyncpg", "postgresql")
        self.postmaster = int((self.pg.data / "postmaster.pid").read_text().split()[0])
        if self.other_cpus:
            for pid in [self.postmaster, *children(self.postmaster)]:
                os.sched_setaffinity(pid, self.other_cpus)  # later backends inherit it
            os.sched_setaffinity(0, self.other_cpus)
        from audit_service.core import migrations

        migrations.upgrade(self.url)
        self.env = {
            **os.environ,
            "DATABASE_URL": self.url,
            "AUDIT_JWT_SECRET": JWT_SECRET,
            "AUDIT_BOOTSTRAP_ADMIN_PASSWORD": "bench-admin-password-123",
            "AUDIT_INGEST_RATE_LIMIT": "1000000/second",
            **extra_env,
        }
        self.cli = str(Path(sys.executable).with_name("audit-service"))
        made = subprocess.run(
            [self.cli, "api-keys", "create", "--name", SERVICE, "--scope", "events:write"],
            env=self.env, cwd=REPO, capture_output=True, text=True, check=True,
        )  # fmt: skip
        self.key = made.stdout.strip()

    def pg_pids(self) -> list[int]:
        return [self.postmaster, *children(self.postmaster)]


def start_service(
    cli: str, env: Mapping[str, str], port: int, cpus: list[int] | None = None
) -> subprocess.Popen[bytes]:
    """`audit-service serve` on 127.0.0.1:`port` with `env` (jobs as `env` says), once its
    /healthz answers (pinned to `cpus` if given)."""
    pin = ["taskset", "-c", ",".join(map(str, cpus))] if cpus else []
    argv = ["serve", "--no-migrate", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen([*pin, cli, *argv, "--log-level", "warning"], env=env, cwd=REPO)
    deadline = time.time() + 60
    while True:
        if proc.poll() is not None or time.time() > deadline:
            stop_service(proc)
            raise RuntimeError("the service did not start")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)


def stop_service(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT, then SIGKILL after 30 s."""
    proc.send_signal(2)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
