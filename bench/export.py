"""Export throughput and memory: 1,000,000 rows in each format from a real uvicorn process.

Prints rows/s per format, the service's RSS before/peak (sampled from /proc), and the
latency of /healthz and of an /admin/activity page requested while each export streams.

    python bench/export.py --database-url URL [--rows 1000000] [--formats csv,json,ndjson,xlsx]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from common import free_port

from audit_service.core.db import create_engine

PASSWORD = "bench-admin-password"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def since_for(url: str, rows: int) -> str:
    """The `since` that makes the newest `rows` events match (an index walk, not a count)."""
    engine = create_engine(url)
    async with engine.connect() as conn:
        value = (
            await conn.execute(
                text(
                    "SELECT occurred_at FROM audit_event ORDER BY occurred_at DESC, id DESC "
                    "OFFSET :n LIMIT 1"
                ),
                {"n": rows - 1},
            )
        ).scalar_one()
    await engine.dispose()
    return str(value.isoformat())


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--formats", default="csv,ndjson,json,xlsx")
    parser.add_argument(
        "--xlsx-rows",
        type=int,
        default=200_000,
        help="XLSX is slow (pure Python): measure on fewer rows",
    )
    args = parser.parse_args()
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "AUDIT_JWT_SECRET": "e" * 40,
        "AUDIT_BOOTSTRAP_ADMIN_PASSWORD": PASSWORD,
        "AUDIT_DEFAULT_RATE_LIMIT": "1000000/minute",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "audit_service.cli",
            "serve",
            "--no-migrate",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    results: dict[str, Any] = {}
    try:
        async with httpx.AsyncClient(base_url=base, timeout=None) as client:
            for _ in range(100):
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            r = await client.post("/login", json={"username": "admin", "password": PASSWORD})
            r.raise_for_status()
            client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
            await client.get("/admin/activity")  # warm up
            baseline = rss_mb(server.pid)
            for fmt in args.formats.split(","):
                rows = args.xlsx_rows if fmt == "xlsx" else args.rows
                since = await since_for(args.database_url, rows)
                results[fmt] = await run_export(client, server.pid, fmt, since, baseline)
                print(f"{fmt:7} {results[fmt]}", file=sys.stderr)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(
        json.dumps(
            {
                "bench": "export",
                "rows": args.rows,
                "results": results,
                "baseline_rss_mb": round(baseline, 1),
                "command": " ".join(["python", *sys.argv]),
            }
        )
    )


async def run_export(
    client: httpx.AsyncClient, pid: int, fmt: str, since: str, baseline: float
) -> dict[str, Any]:
    peak = baseline
    probes: list[float] = []
    page_probes: list[float] = []
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mb(pid))
            started = time.perf_counter()
            await client.get("/healthz")
            probes.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            await client.get("/admin/activity?page_size=50")
            page_probes.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    started = time.perf_counter()
    size = 0
    async with client.stream(
        "GET", "/admin/activity/export", params={"format": fmt, "since": since}
    ) as response:
        response.raise_for_status()
        row_count = int(response.headers["x-export-row-count"])
        first_byte = None
        async for chunk in response.aiter_raw():
            if first_byte is None:
                first_byte = time.perf_counter() - started
            size += len(chunk)
    elapsed = time.perf_counter() - started
    done.set()
    await sampler
    return {
        "rows": row_count,
        "seconds": round(elapsed, 2),
        "rows_per_s": round(row_count / elapsed),
        "mb": round(size / 1e6, 1),
        "first_byte_s": round(first_byte or 0, 3),
        "rss_growth_mb": round(peak - baseline, 1),
        "healthz_p50_ms": round(statistics.median(probes), 1) if probes else None,
        "healthz_max_ms": round(max(probes), 1) if probes else None,
        "page_p50_ms": round(statistics.median(page_probes), 1) if page_probes else None,
    }


if __name__ == "__main__":
    asyncio.run(main())
