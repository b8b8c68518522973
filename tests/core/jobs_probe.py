"""Runs test_jobs' probe job until SIGTERM: `python -m tests.core.jobs_probe URL LEASE`.

Real separate processes (own interpreter, own engine, own clock reads) for the tests that
must not rely on sharing an event loop.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from audit_service.core.db import create_engine
from audit_service.core.jobs import JobRuntime
from tests.core.test_jobs import probe


async def main(url: str, lease: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    engine = create_engine(url)
    runtime = JobRuntime(engine, [probe(0.1)], lease_seconds=lease, poll_seconds=0.1)
    await runtime.start()
    print("started", runtime.holder, flush=True)
    await stop.wait()
    await runtime.stop(5)
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
