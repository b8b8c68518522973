"""Helpers for the statistics tests: events in through the API, the log sequenced and
rolled up as the jobs would, and the GROUP BY over the raw rows the rollups must equal."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import text

from audit_service.audit_log.sequencer import no_fence
from audit_service.integrity.jobs import make_sequencer
from audit_service.stats import rollup
from tests.conftest import Harness
from tests.ingestion.helpers import bearer, make_key

OUTCOMES = ("success", "failure", "denied", "error")


async def key_for(h: Harness, source: str) -> str:
    keys: dict[str, str] = h.app.state.__dict__.setdefault("_test_keys", {})
    if source not in keys:
        keys[source] = await make_key(h, source)
    return keys[source]


async def post_events(h: Harness, source: str, events: list[dict[str, Any]]) -> None:
    key = await key_for(h, source)
    for i in range(0, len(events), 1000):
        chunk = [{"idempotency_key": uuid.uuid4().hex, **e} for e in events[i : i + 1000]]
        r = await h.client.post("/events/batch", headers=bearer(key), json={"events": chunk})
        assert r.status_code in (200, 201), r.text


def event(when: datetime, **fields: Any) -> dict[str, Any]:
    return {"action": "exam.submitted", "actor_id": "u1", "occurred_at": when.isoformat(), **fields}


async def roll_up(h: Harness, batch: int = 5000) -> int:
    """Sequence everything committed, then count it; returns the watermark."""
    await make_sequencer().catch_up(h.app.state.sessionmaker, no_fence)
    r = await rollup.catch_up(h.app.state.sessionmaker, no_fence, batch=batch)
    return r.watermark


def _bucket_sql(dialect: str, size: int = 900) -> str:
    if dialect == "postgresql":
        return f"(floor(extract(epoch FROM e.occurred_at) / {size}) * {size})::bigint"
    return f"(CAST(strftime('%s', e.occurred_at) AS INTEGER) / {size} * {size})"


# Each rollup table with its level (seconds per row) and the family it belongs to.
LEVEL_TABLES = {
    "bucket": ("stats_bucket", 900, "bucket"),
    "bucket_hour": ("stats_bucket_hour", 3600, "bucket"),
    "bucket_day": ("stats_bucket_day", 86400, "bucket"),
    "actor": ("stats_actor_bucket", 900, "actor"),
    "actor_day": ("stats_actor_bucket_day", 86400, "actor"),
    "actor_tenant_day": ("stats_actor_tenant_day", 86400, "actor_tenant"),
    "ip": ("stats_ip_bucket", 900, "ip"),
    "ip_day": ("stats_ip_bucket_day", 86400, "ip"),
}


async def raw_group_by(h: Harness, watermark: int) -> dict[str, Counter[tuple[Any, ...]]]:
    """What each rollup table (every level) must hold, by GROUP BY over the raw rows the
    watermark covers (key + outcome or login kind -> count)."""
    out: dict[str, Counter[tuple[Any, ...]]] = {}
    for name, (_, size, family) in LEVEL_TABLES.items():
        level = await _raw_group_by(h, watermark, size)
        out[name] = level[family]
        if family == "ip":
            out["login" + name[2:]] = level["login"]
    return out


async def _raw_group_by(
    h: Harness, watermark: int, size: int
) -> dict[str, Counter[tuple[Any, ...]]]:
    dialect = h.engine.dialect.name
    bucket = _bucket_sql(dialect, size)
    concat = "'name:' || e.actor_name"
    base = (
        f"FROM audit_event e JOIN audit_leaf l ON l.event_pk = e.id WHERE l.position <= {watermark}"
    )
    queries = {
        "bucket": f"SELECT {bucket}, COALESCE(e.tenant_id, ''), e.source, e.module, e.action, "
        f"e.actor_type, e.outcome, count(*) {base} GROUP BY 1, 2, 3, 4, 5, 6, 7",
        "actor": f"SELECT {bucket}, COALESCE(e.tenant_id, ''), e.source, e.module, e.action, "
        f"e.actor_type, COALESCE(e.actor_id, ''), e.outcome, count(*) {base} "
        "GROUP BY 1, 2, 3, 4, 5, 6, 7, 8",
        "actor_tenant": f"SELECT {bucket}, COALESCE(e.tenant_id, ''), e.actor_type, "
        f"COALESCE(e.actor_id, ''), e.outcome, count(*) {base} GROUP BY 1, 2, 3, 4, 5",
        "ip": f"SELECT {bucket}, COALESCE(e.tenant_id, ''), e.ip, e.actor_type, "
        f"COALESCE(e.actor_id, {concat}, ''), e.outcome, count(*) {base} AND e.ip IS NOT NULL "
        "GROUP BY 1, 2, 3, 4, 5, 6",
        "login": f"SELECT {bucket}, COALESCE(e.tenant_id, ''), e.ip, e.actor_type, "
        f"COALESCE(e.actor_id, {concat}, ''), CASE WHEN e.outcome = 'success' THEN 'ok' "
        f"ELSE 'failed' END, count(*) {base} AND e.ip IS NOT NULL "
        "AND e.action IN ('auth.login', 'auth.login_failed') "
        "AND e.outcome IN ('success', 'failure', 'denied') GROUP BY 1, 2, 3, 4, 5, 6",
    }
    out: dict[str, Counter[tuple[Any, ...]]] = {}
    async with h.engine.connect() as conn:
        for name, sql in queries.items():
            rows = (await conn.execute(text(sql))).all()
            out[name] = Counter({tuple(r[:-1]): int(r[-1]) for r in rows})
    return out


async def stored_rollups(h: Harness) -> dict[str, Counter[tuple[Any, ...]]]:
    """The rollup tables, unpivoted into the same shape (zero counts left out)."""
    family_keys = {
        "bucket": "bucket, tenant_id, source, module, action, actor_type",
        "actor": "bucket, tenant_id, source, module, action, actor_type, actor_id",
        "actor_tenant": "bucket, tenant_id, actor_type, actor_id",
        "ip": "bucket, tenant_id, ip, actor_type, actor_key",
    }
    out: dict[str, Counter[tuple[Any, ...]]] = {}
    async with h.engine.connect() as conn:
        for name, (table, _, family) in LEVEL_TABLES.items():
            keys = family_keys[family]
            cols = ", ".join(f"n_{o}" for o in OUTCOMES)
            extra = ", logins_ok, logins_failed" if family == "ip" else ""
            rows = (await conn.execute(text(f"SELECT {keys}, {cols}{extra} FROM {table}"))).all()  # noqa: S608
            width = len(keys.split(","))
            counter: Counter[tuple[Any, ...]] = Counter()
            logins: Counter[tuple[Any, ...]] = Counter()
            for r in rows:
                key = tuple(int(v) if i == 0 else v for i, v in enumerate(r[:width]))
                for o, n in zip(OUTCOMES, r[width : width + 4], strict=True):
                    if n:
                        counter[(*key, o)] = int(n)
                if family == "ip":
                    for kind, n in zip(("ok", "failed"), r[width + 4 :], strict=True):
                        if n:
                            logins[(*key, kind)] = int(n)
            out[name] = counter
            if family == "ip":
                out["login" + name[2:]] = logins
    return out
