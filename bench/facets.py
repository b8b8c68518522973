"""p50/p95 of the facet query (stats/repository.py `facet_values`, what
GET /admin/activity/facets runs) on a migrated database whose stats_facet is filled.

    python bench/facets.py --database-url postgresql+asyncpg://postgres@127.0.0.1:55441/postgres

`--synthetic-actors N` first adds N actor rows (`syn-0000001`…, Zipf-like counts) to see the
query with far more distinct values than the seeded world's ~10,000 actors (removed again at
the end)."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from sqlalchemy import text

from audit_service.core.db import create_engine
from audit_service.stats import repository as repo

CASES = [
    ("action", None),
    ("module", None),
    ("source", None),
    ("tenant_id", None),
    ("actor", None),
    ("actor", "9"),
    ("actor", "syn-"),
    ("actor", "syn-00012"),
    ("actor", "zz-no-such"),
    ("action", "exam."),
]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--synthetic-actors", type=int, default=0)
    args = parser.parse_args()
    engine = create_engine(args.database_url)
    try:
        if args.synthetic_actors:
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO stats_facet (field, value, actor_type, events, last_seen) "
                        "SELECT 'actor', 'syn-' || lpad(i::text, 7, '0'), 'user', "
                        "1 + (1000000 / i), now() FROM generate_series(1, :n) AS i"
                    ),
                    {"n": args.synthetic_actors},
                )
                await conn.execute(text("ANALYZE stats_facet"))
        async with engine.connect() as conn:
            rows = await conn.scalar(text("SELECT count(*) FROM stats_facet"))
            out = {"stats_facet_rows": rows, "runs": args.runs, "cases": []}
            for field, prefix in CASES:
                times = []
                for _ in range(args.runs):
                    t = time.perf_counter()
                    found = await repo.facet_values(conn, field, prefix, 20)
                    times.append((time.perf_counter() - t) * 1000)
                times.sort()
                out["cases"].append(
                    {
                        "field": field,
                        "prefix": prefix,
                        "items": len(found),
                        "p50_ms": round(statistics.median(times), 2),
                        "p95_ms": round(times[int(len(times) * 0.95) - 1], 2),
                    }
                )
        print(json.dumps(out, indent=1))
    finally:
        if args.synthetic_actors:
            async with engine.begin() as conn:
                await conn.execute(text("DELETE FROM stats_facet WHERE value LIKE 'syn-%'"))
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
