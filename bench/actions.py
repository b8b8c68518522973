"""GET /admin/actions: the listing's database cost, per-action queries (before) vs one
statement (now), on a private PostgreSQL with many distinct actions.

    .venv/bin/python bench/actions.py [--actions 173] [--events 1000000] [--runs 40]

Starts its own PostgreSQL (tests/pg.py, binaries from $PG_BIN or the PATH), migrates it,
loads `--events` rows spread over `--actions` actions (a few large ones past the 10,000-event
exact-count cap, most small, as ingested actions are) with generate_series, ANALYZEs, then
times both listings `--runs` times each, interleaved. Prints one JSON line with p50/p99 in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import literal_column, select, text
from tests.pg import TempPostgres

from audit_service.audit_log import repository as events
from audit_service.audit_log.models import AuditEvent
from audit_service.core import migrations
from audit_service.core.db import create_engine, create_sessionmaker, estimated_rows
from audit_service.ingestion import repository as repo

EXACT_UP_TO = 10_000

SEED = """
INSERT INTO audit_event (event_id, occurred_at, recorded_at, source, actor_type, actor_id,
                         action, module, outcome, metadata)
SELECT gen_random_uuid(), now() - (g * interval '1 second'), now(), 'exam-platform', 'user',
       'student-' || (g % 5000),
       -- a skewed spread: action k gets roughly 1/(k+1) of the rows
       'mod' || (a % 11) || '.action_' || a, 'mod' || (a % 11), 'success', '{}'::jsonb
FROM generate_series(1, :n) AS g,
     LATERAL (SELECT least(:actions - 1,
                           floor(power(:actions + 1, random()) - 1)::int + (g * 0)) AS a) AS pick
"""


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--actions", type=int, default=173)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()

    server = TempPostgres()
    url = server.start()
    try:
        migrations.upgrade(url)
        engine = create_engine(url)
        async with engine.begin() as conn:
            started = time.perf_counter()
            await conn.execute(text(SEED), {"n": args.events, "actions": args.actions})
            # Every action gets at least one event, so all --actions exist.
            await conn.execute(
                text(
                    "INSERT INTO audit_event (event_id, occurred_at, recorded_at, source,"
                    " actor_type, actor_id, action, module, outcome, metadata)"
                    " SELECT gen_random_uuid(), now(), now(), 'exam-platform', 'user', 'x',"
                    " 'mod' || (a % 11) || '.action_' || a, 'mod' || (a % 11), 'success', '{}'"
                    " FROM generate_series(0, :k - 1) AS a"
                ),
                {"k": args.actions},
            )
            seeded = time.perf_counter() - started
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE audit_event"))
        sessions = create_sessionmaker(engine)

        async def before() -> int:
            # What `events.action_counts` did on Postgres, statement for statement (the loose
            # scan, then per action its latest module, the planner estimate and a capped
            # count), minus the 20 ms statement-timeout savepoint around each count: that
            # wrapper fails the listing with InFailedSQLTransaction once a count times out.
            async with sessions() as s:
                names = [r[0] for r in await s.execute(text(events._DISTINCT_ACTIONS))]
                for action in names:
                    await s.scalar(
                        select(AuditEvent.module)
                        .where(AuditEvent.action == action)
                        .order_by(AuditEvent.occurred_at.desc())
                        .limit(1)
                    )
                    filters = events.EventFilters(actions=(action,))
                    matching = (
                        select(literal_column("1"))
                        .select_from(AuditEvent)
                        .where(*filters.conditions())
                    )
                    if await estimated_rows(s, matching) <= 20 * EXACT_UP_TO:
                        await s.scalar(events._capped_count(filters, EXACT_UP_TO + 1))
                await repo.list_schemas(s)
                return len(names)

        async def now() -> int:
            async with sessions() as s:
                rows = await repo.list_actions(
                    s, cap=EXACT_UP_TO + 1, skip_count_above=2 * EXACT_UP_TO
                )
                return len(rows)

        async with sessions() as s:
            rows = await repo.list_actions(s, cap=EXACT_UP_TO + 1, skip_count_above=2 * EXACT_UP_TO)
            counted = sum(r.counted is not None for r in rows)
            exact = await s.execute(text("SELECT action, count(*) FROM audit_event GROUP BY 1"))
            truth = dict(exact.all())
            worst = (
                max(
                    abs((r.estimate or 0) - truth[r.action]) / truth[r.action]
                    for r in rows
                    if r.counted is None
                )
                if counted < len(rows)
                else 0.0
            )
        timings: dict[str, list[float]] = {"before": [], "now": []}
        found = {}
        for _ in range(args.runs):
            for name, work in (("before", before), ("now", now)):
                t = time.perf_counter()
                found[name] = await work()
                timings[name].append((time.perf_counter() - t) * 1000)
        await engine.dispose()

        def p(values: list[float], q: int) -> float:
            return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 1)

        print(
            json.dumps(
                {
                    "actions": found,
                    "events": args.events + args.actions,
                    "seed_s": round(seeded, 1),
                    "runs": args.runs,
                    "now_counted_actions": counted,
                    "now_worst_estimate_error": round(worst, 3),
                    **{f"{k}_p50_ms": p(v, 50) for k, v in timings.items()},
                    **{f"{k}_p99_ms": p(v, 99) for k, v in timings.items()},
                }
            )
        )
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
