"""The client library: long batches report whole-list indexes and what was stored, retries of
the same list store no duplicates, a revoked key keeps events buffered, buffered events are
flushed at exit, and the `audit-service-client` wheel works with nothing but httpx."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from audit_service.client import (
    AsyncAuditClient,
    AuditRejected,
    AuditUnavailable,
    RetryPolicy,
)
from audit_service.main import create_app
from tests.conftest import Harness, make_settings
from tests.ingestion.helpers import bearer, ingested, make_key
from tests.ingestion.test_client import serving
from tests.pg import free_port

FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02)
ROOT = Path(__file__).resolve().parents[2]


def _client(h: Harness, key: str, **kw: Any) -> AsyncAuditClient:
    transport = httpx.ASGITransport(app=h.app)
    return AsyncAuditClient("http://testserver", key, transport=transport, retry=FAST, **kw)


def ev(i: int, **extra: Any) -> dict[str, Any]:
    return {"action": "exam.started", "actor_id": f"student-{i}", **extra}


async def test_long_batch_failure_reports_whole_list_indexes_and_retry_is_exact(
    h: Harness,
) -> None:
    key = await make_key(h)
    events = [ev(i) for i in range(2_500)]
    events[1_500]["action"] = "Not An Action"
    events[1_700]["ip"] = "not-an-ip"
    async with _client(h, key) as client:
        with pytest.raises(AuditRejected) as caught:
            await client.send_batch(events)
        exc = caught.value
        assert exc.rejected_indexes() == {1_500, 1_700}
        assert {tuple(e["loc"][:3]) for e in exc.errors} == {
            ("body", "events", 1_500),
            ("body", "events", 1_700),
        }
        # The first request (events 0-999) was stored; from 1,000 on nothing was.
        assert exc.offset == 1_000
        assert exc.stored is not None and exc.stored.inserted == 1_000
        assert len(await ingested(h)) == 1_000
        # Fix the two events and send the same list again: no duplicates.
        events[1_500]["action"] = "exam.started"
        del events[1_700]["ip"]
        again = await client.send_batch(events)
    assert (again.inserted, again.duplicates) == (1_500, 1_000)
    stored = await ingested(h)
    assert len(stored) == 2_500
    assert len({e.idempotency_key for e in stored}) == 2_500
    assert [r.id for r in again.results[:1_000]] == [r.id for r in exc.stored.results]


async def test_a_revoked_key_keeps_buffered_events(h: Harness) -> None:
    admin = await h.auth()
    r = await h.client.post(
        "/admin/api-keys", headers=admin, json={"name": "exam-platform", "scopes": ["events:write"]}
    )
    key, key_id = r.json()["key"], r.json()["id"]
    refused: list[Any] = []
    client = _client(h, key, flush_interval=60, on_error=lambda e, x: refused.append(e))
    await client.record(ev(1))
    await client.flush()
    assert len(await ingested(h)) == 1
    assert (await h.client.delete(f"/admin/api-keys/{key_id}", headers=admin)).status_code == 204

    await client.record(ev(2))
    await client.record(ev(3))
    with pytest.raises(AuditUnavailable) as caught:
        await client.flush()
    assert caught.value.status == 401
    assert client.pending == 2 and refused == []
    # Every further record() keeps its event and says delivery is failing.
    with pytest.raises(AuditUnavailable):
        await client.record(ev(4))
    assert client.pending == 3
    # Fixed configuration (a new key): everything buffered is delivered.
    client._o.headers["Authorization"] = f"Bearer {await make_key(h, 'exam-platform')}"
    await client.aclose()
    assert sorted(e.actor_id for e in await ingested(h)) == [f"student-{i}" for i in range(1, 5)]


_AT_EXIT = """
import sys, time
from audit_service_client import AuditClient, RetryPolicy
url, key, exit_timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
client = AuditClient(url, key, flush_interval=600, exit_timeout=exit_timeout,
                     retry=RetryPolicy(max_attempts=1000, base_delay=0.05, max_delay=0.1))
for i in range(3):
    client.record(action="exam.started", actor_id=f"exit-{i}")
print("recorded", client.pending, flush=True)
# No close(): the interpreter exits with three events buffered.
"""


async def _run(python: str, *args: str, cwd: Path) -> tuple[int, str, float]:
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        python,
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(), time.monotonic() - started


async def test_buffered_events_are_flushed_at_exit(h: Harness, db_url: str, tmp_path: Path) -> None:
    key = await make_key(h)
    script = tmp_path / "exit.py"
    script.write_text(_AT_EXIT)
    async with serving(create_app(make_settings(db_url)), free_port()) as url:
        rc, out, _ = await _run(sys.executable, str(script), url, key, "10", cwd=tmp_path)
    assert rc == 0 and "recorded 3" in out, out
    assert sorted(e.actor_id for e in await ingested(h)) == ["exit-0", "exit-1", "exit-2"]
    # Nobody listening: the exit waits at most exit_timeout, then says what was lost.
    rc, out, took = await _run(
        sys.executable, str(script), f"http://127.0.0.1:{free_port()}", key, "1", cwd=tmp_path
    )
    assert rc == 0 and took < 8, (took, out)
    assert "audit events lost at exit (3 buffered)" in out, out


@pytest.mark.slow
# The wheel and its httpx-only install do not depend on the database: one dialect (CI time).
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_client_wheel_with_only_httpx(h: Harness, db_url: str, tmp_path: Path) -> None:
    key = await make_key(h)
    # Build from a copy: an in-tree build leaves build/ and *.egg-info behind.
    source = tmp_path / "src"
    shutil.copytree(ROOT / "clients" / "python", source)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", "--no-deps", "-w", str(wheels), str(source)]
    await asyncio.to_thread(subprocess.run, build, check=True, capture_output=True)
    (wheel,) = wheels.glob("audit_service_client-*.whl")

    venv = tmp_path / "venv"
    await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True
    )
    python = str(venv / "bin" / "python")
    install = [python, "-m", "pip", "--disable-pip-version-check", "-q", "install", str(wheel)]
    await asyncio.to_thread(subprocess.run, install, check=True, capture_output=True)
    rc, listing, _ = await _run(python, "-m", "pip", "list", "--format=freeze", cwd=tmp_path)
    installed = {line.split("==")[0].lower() for line in listing.split()}
    assert "httpx" in installed and "audit-service-client" in installed
    assert not installed & {"fastapi", "sqlalchemy", "asyncpg", "pydantic", "audit-service"}

    program = tmp_path / "post.py"
    program.write_text(
        textwrap.dedent(
            """
            import sys
            from audit_service_client import AuditClient
            with AuditClient(sys.argv[1], sys.argv[2]) as audit:
                one = audit.send(action="exam.submitted", actor_id="wheel-1")
                batch = audit.send_batch(
                    [{"action": "exam.started", "actor_id": f"wheel-b{i}"} for i in range(1200)]
                )
                audit.record(action="exam.ended", actor_id="wheel-2")
            print("ok", one.duplicate, batch.inserted)
            """
        )
    )
    async with serving(create_app(make_settings(db_url)), free_port()) as url:
        rc, out, _ = await _run(python, str(program), url, key, cwd=tmp_path)
    assert rc == 0 and "ok False 1200" in out, out
    actors = {e.actor_id for e in await ingested(h)}
    assert {"wheel-1", "wheel-2", "wheel-b0", "wheel-b1199"} <= actors and len(actors) == 1202
    assert (await h.client.get("/healthz", headers=bearer(key))).status_code == 200
