"""Chaos: a real `audit-service worker` killed with SIGKILL mid-batch, and a receiver down
for a while under a constant writer. Everything committed arrives; duplicates only of what
was in flight when things broke."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import LOG_SIGNING_KEY, Harness
from tests.forwarding.conftest import (
    deliver,
    destination_row,
    event_ids,
    harness_with,
    record,
    sequence,
    until,
    webhook,
)
from tests.forwarding.receivers import Reply, WebhookReceiver

ROOT = Path(__file__).resolve().parents[2]


def _worker_env(h: Harness, **extra: str) -> dict[str, str]:
    s = h.app.state.settings
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}",
        "DATABASE_URL": s.database_url,
        "AUDIT_JWT_SECRET": s.jwt_secret.get_secret_value(),
        "AUDIT_LOG_SIGNING_KEY": LOG_SIGNING_KEY,
        "AUDIT_LOG_ORIGIN": s.log_origin,
        "AUDIT_FORWARD_ALLOW_PRIVATE": "127.0.0.0/8",
        "AUDIT_FORWARD_BACKOFF_BASE": "0.05",
        "AUDIT_FORWARD_BACKOFF_MAX": "0.2",
        "AUDIT_JOB_LEASE_SECONDS": "2",
        "AUDIT_FORWARD_LEASE_SECONDS": "2",
        **extra,
    }


async def _worker(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "audit_service.cli",
        "worker",
        "--no-migrate",
        "--log-level",
        "warning",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def _wait(check: object, seconds: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():  # type: ignore[operator]
        assert loop.time() < deadline, what
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_kill_9_of_the_delivering_worker_mid_batch_loses_nothing(
    pg_only_url: str, receiver: WebhookReceiver
) -> None:
    """Worker 1 sends batch 2; the receiver takes it in and stalls; SIGKILL. Worker 2 takes
    the destination over once the lease runs out: every event arrives, and the only
    duplicates are batch 2's events (sent again with the same webhook-id)."""
    async with harness_with(pg_only_url) as h:
        await webhook(h, receiver, config={"batch_size": 10})
        await record(h, 30)
        await sequence(h)
        receiver.script = [Reply(200, b"{}"), Reply(mode="accept_hang")]
        env = _worker_env(h, AUDIT_FORWARD_TIMEOUT="60")
        procs = [await _worker(env)]
        try:
            await _wait(lambda: len(receiver.requests) >= 2, 20, "batch 2 never sent")
            await asyncio.sleep(0.2)  # mid-batch: sent, taken in, not answered
            procs[0].kill()
            assert await procs[0].wait() == -9
            in_flight = receiver.requests[1]
            await record(h, 10)  # committed while nobody delivers
            procs.append(await _worker(env))
            total = 40
            await _wait(
                lambda: len({e["event_id"] for e in receiver.events()}) >= total,
                25,
                "not everything arrived after the restart",
            )
        finally:
            for p in procs:
                if p.returncode is None:
                    p.kill()
                    await p.wait()
        counts = Counter(e["event_id"] for e in receiver.events())
        assert set(counts) == set(await event_ids(h))
        stalled = {e["event_id"] for e in json.loads(in_flight.body)}
        assert len(stalled) == 10
        assert {k for k, n in counts.items() if n > 1} == stalled
        assert max(counts.values()) == 2
        resent = [
            r
            for r in receiver.accepted
            if r.headers["webhook-id"] == in_flight.headers["webhook-id"]
        ]
        assert len(resent) == 2  # the same message id, taken in twice


@pytest.mark.slow
async def test_a_receiver_down_for_tens_of_seconds_under_a_constant_writer_loses_nothing(
    pg_only_url: str, receiver: WebhookReceiver
) -> None:
    """A writer commits 20 events/s throughout; the receiver is down for 20 s in the
    middle (connection refused) and answers 503 for a while after; once back everything
    committed arrives, nothing twice (the cursor waited)."""
    async with harness_with(pg_only_url) as h:
        d = await webhook(h, receiver, config={"batch_size": 50})
        stop = asyncio.Event()

        async def writer() -> None:
            while not stop.is_set():
                await record(h, 4)
                await asyncio.sleep(0.2)

        written = asyncio.create_task(writer())
        port = receiver.port
        try:
            await until(h, lambda: len(receiver.events()) >= 20, seconds=20)
            await receiver.stop()
            loop = asyncio.get_running_loop()
            down_until = loop.time() + 20
            while loop.time() < down_until:
                await deliver(h)
                await asyncio.sleep(0.1)
            status = await destination_row(h, d["id"])
            assert status["backlog"] >= 100 and status["last_error"]
            # Coming back badly: the first batch is taken in but never answered (the
            # sender times out and must send it again), then 503s, then all is well.
            receiver.script = [Reply(mode="accept_hang"), *[Reply(503, b"{}")] * 3]
            back = len(receiver.requests)
            await receiver.start(port)
            await until(h, lambda: len(receiver.requests) >= back + 5, seconds=20)
        finally:
            stop.set()
            await written
        ids = await event_ids(h)
        await until(h, lambda: len({e["event_id"] for e in receiver.events()}) >= len(ids), 30)
        counts = Counter(e["event_id"] for e in receiver.events())
        assert set(counts) == set(ids)
        hung = {e["event_id"] for e in json.loads(receiver.requests[back].body)}
        twice = {k for k, n in counts.items() if n > 1}
        assert twice == hung and max(counts.values()) == 2  # only the batch at the failure
        assert list(counts) == ids  # first arrivals in log order
        status = await destination_row(h, d["id"])
        assert status["backlog"] == 0 and status["delivered"] == len(ids)
