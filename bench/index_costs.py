"""What each index of audit_event costs per inserted row, measured on the real (10M-row) table.

Issue 14 asks to "measure each index's per-row cost at 10M rows, then choose". Building a 10M
copy per index set would take hours; PostgreSQL's DDL is transactional instead, so each run
is one transaction that drops the indexes it does not want (instant: the files are unlinked
only at commit), binary-COPYs N rows taken from the table itself (fresh event ids, no
idempotency keys), reads the backend's CPU time from /proc, and rolls back. The table and its
indexes stay as they were; the rolled-back rows are dead tuples, so the script VACUUMs at the
end. Candidate indexes that do not exist yet (`--candidates`) are built inside the run's
transaction once per configuration (minutes on 10M rows) and rolled back with it.

    python bench/index_costs.py --database-url postgresql://postgres@127.0.0.1:55433/postgres

Must run on the same machine as the server (it reads /proc/<backend pid>/stat). Prints one
line per configuration: backend CPU-µs per row (median of --runs), the difference to the
primary-key-only baseline, rows/s of wall time and WAL bytes written per row.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

TICK = os.sysconf("SC_CLK_TCK")
PK = "pk_audit_event"
CANDIDATES = {
    # Words with prefix matching: far fewer entries per row than one per trigram.
    "ix_candidate_description_tsv_simple": (
        "CREATE INDEX ix_candidate_description_tsv_simple ON audit_event "
        "USING gin (to_tsvector('simple', coalesce(description, '')))"
    ),
    # The trigram index without the pending list: every insert pays its entries at once.
    "ix_candidate_description_trgm_nofastupdate": (
        "CREATE INDEX ix_candidate_description_trgm_nofastupdate ON audit_event "
        "USING gin (description gin_trgm_ops) WITH (fastupdate = off)"
    ),
}


def uuid7() -> uuid.UUID:
    """RFC 9562 version 7: 48-bit Unix milliseconds, then random bits."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (
        (ms << 80) | (0x7 << 76) | ((rand >> 68) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    )
    return uuid.UUID(int=value)


def backend_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


async def sample_rows(
    conn: asyncpg.Connection, n: int, new_id: Any
) -> tuple[list[str], list[tuple[Any, ...]]]:
    columns = [
        r["column_name"]
        for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'audit_event' AND column_name NOT IN ('id', 'txid') "
            "ORDER BY ordinal_position"
        )
    ]
    quoted = ", ".join(f'"{c}"' for c in columns)
    records = await conn.fetch(f"SELECT {quoted} FROM audit_event ORDER BY id DESC LIMIT {n}")
    rows = []
    for record in records:
        row = dict(record)
        row["event_id"] = new_id()
        row["idempotency_key"] = None
        rows.append(tuple(row[c] for c in columns))
    return columns, rows


async def run_once(
    conn: asyncpg.Connection,
    pid: int,
    keep: Sequence[str],
    build: Sequence[str],
    existing: Sequence[str],
    columns: list[str],
    rows: list[tuple[Any, ...]],
) -> tuple[float, float, float]:
    tr = conn.transaction()
    await tr.start()
    try:
        for name in existing:
            if name not in keep:
                if await conn.fetchval(
                    "SELECT conname FROM pg_constraint WHERE conname = $1", name
                ):
                    await conn.execute(f'ALTER TABLE audit_event DROP CONSTRAINT "{name}"')
                else:
                    await conn.execute(f'DROP INDEX "{name}"')
        for name in build:
            await conn.execute(CANDIDATES[name])
        lsn0 = await conn.fetchval("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")
        cpu0, wall0 = backend_cpu(pid), time.perf_counter()
        await conn.copy_records_to_table("audit_event", records=rows, columns=columns)
        cpu1, wall1 = backend_cpu(pid), time.perf_counter()
        lsn1 = await conn.fetchval("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")
    finally:
        await tr.rollback()
    return cpu1 - cpu0, wall1 - wall0, float(lsn1 - lsn0)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="postgresql://… (asyncpg form)")
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--candidates", action="store_true", help="also the candidate indexes")
    parser.add_argument(
        "--event-ids", choices=("uuid4", "uuid7"), default="uuid4", help="new rows' event_id"
    )
    parser.add_argument("--only", default="", help="comma-separated configuration labels")
    args = parser.parse_args()
    url = args.database_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(url)
    await conn.execute("SET maintenance_work_mem = '1GB'")
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    total = await conn.fetchval(
        "SELECT reltuples::bigint FROM pg_class WHERE relname = 'audit_event'"
    )
    existing = [
        r["indexname"]
        for r in await conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'audit_event' ORDER BY indexname"
        )
    ]
    columns, rows = await sample_rows(
        conn, args.rows, uuid7 if args.event_ids == "uuid7" else uuid.uuid4
    )
    print(
        f"audit_event ≈ {total:,} rows; COPY of {len(rows):,} rows per run, {args.runs} runs, "
        f"event ids {args.event_ids}"
    )
    configs: list[tuple[str, list[str], list[str]]] = [("primary key only", [PK], [])]
    configs += [(name, [PK, name], []) for name in existing if name != PK]
    configs.append(("all indexes", existing, []))
    trgm = "ix_audit_event_description_trgm"
    configs.append(("all but trigram", [n for n in existing if n != trgm], []))
    if args.candidates:
        for name in CANDIDATES:
            configs.append((f"candidate {name} alone", [PK], [name]))
        configs.append(
            (
                "all but trigram + tsvector simple",
                [n for n in existing if n != trgm],
                ["ix_candidate_description_tsv_simple"],
            )
        )
    if args.only:
        wanted = {"primary key only", *args.only.split(",")}
        configs = [c for c in configs if c[0] in wanted]
    base = None
    for label, keep, build in configs:
        samples = [
            await run_once(conn, pid, keep, build, existing, columns, rows)
            for _ in range(args.runs)
        ]
        cpu = statistics.median(s[0] for s in samples) / len(rows) * 1e6
        wall = statistics.median(s[1] for s in samples)
        wal = statistics.median(s[2] for s in samples) / len(rows)
        base = cpu if base is None else base
        print(
            f"{label:55s} {cpu:7.1f} CPU-µs/row  (+{cpu - base:6.1f} over pk)  "
            f"{len(rows) / wall:9,.0f} rows/s wall  {wal:7,.0f} WAL bytes/row",
            flush=True,
        )
    await conn.execute("VACUUM audit_event")
    await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
