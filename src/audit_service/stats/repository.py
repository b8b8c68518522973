"""All SQL of the statistics: the rollup's additive upserts and watermark, and the reads."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, Table, case, func, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from audit_service.core.db import in_values, lock_for_transaction, upsert_for
from audit_service.stats.models import (
    StatsActorBucket,
    StatsBucket,
    StatsFacet,
    StatsIpBucket,
    StatsWatermark,
)

Bind = AsyncSession | AsyncConnection
buckets = cast(Table, StatsBucket.__table__)
actor_buckets = cast(Table, StatsActorBucket.__table__)
ip_buckets = cast(Table, StatsIpBucket.__table__)
facets = cast(Table, StatsFacet.__table__)
_watermark = cast(Table, StatsWatermark.__table__)

OUTCOME_COLUMNS = {
    "success": "n_success",
    "failure": "n_failure",
    "denied": "n_denied",
    "error": "n_error",
}
COUNT_COLUMNS = tuple(OUTCOME_COLUMNS.values())
IP_COUNT_COLUMNS = (*COUNT_COLUMNS, "logins_ok", "logins_failed")


# --- the rollup's writes ---------------------------------------------------------------------


async def lock_watermark(session: AsyncSession, name: str) -> int:
    """The rollup's watermark (-1: nothing counted yet), locked until this transaction ends,
    so a second rollup (a process that lost its lease but not its connection) waits and
    then reads the moved watermark instead of counting the same events again."""
    await lock_for_transaction(session, f"stats:{name}", _watermark)
    value = (
        await session.execute(select(_watermark.c.position).where(_watermark.c.name == name))
    ).scalar()
    return -1 if value is None else int(value)


async def read_watermark(bind: Bind, name: str) -> tuple[int, datetime | None]:
    row = (
        await bind.execute(
            select(_watermark.c.position, _watermark.c.updated_at).where(_watermark.c.name == name)
        )
    ).first()
    return (-1, None) if row is None else (int(row.position), row.updated_at)


async def move_watermark(session: AsyncSession, name: str, position: int, at: datetime) -> None:
    insert = upsert_for(session)
    stmt = insert(_watermark).values(name=name, position=position, updated_at=at)
    stmt = stmt.on_conflict_do_update(
        index_elements=[_watermark.c.name],
        set_={"position": stmt.excluded.position, "updated_at": stmt.excluded.updated_at},
    )
    await session.execute(stmt)


async def add_counts(
    session: AsyncSession,
    table: Table,
    counts: Sequence[str],
    rows: Mapping[tuple[Any, ...], Sequence[int]],
) -> None:
    """Add `rows` (primary key -> values of the `counts` columns) to what is stored:
    `INSERT … ON CONFLICT DO UPDATE SET n = n + excluded.n`. Keys are unique per call (the
    caller aggregates first): Postgres refuses to update one row twice in a statement."""
    if not rows:
        return
    keys = [c.name for c in table.primary_key.columns]
    stmt = upsert_for(session)(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c[k] for k in keys],
        set_={c: table.c[c] + stmt.excluded[c] for c in counts},
    )
    # One statement executed for many parameter sets, not a VALUES list of thousands of
    # rows: that was compiled anew every round (its length varies), and compiling it took
    # most of the service's CPU under ingest (py-spy, bench/stats.py freshness).
    await session.execute(
        stmt,
        [
            {**dict(zip(keys, key, strict=True)), **dict(zip(counts, n, strict=True))}
            for key, n in rows.items()
        ],
    )


async def add_facets(
    session: AsyncSession, rows: Mapping[tuple[str, str, str], tuple[int, datetime]]
) -> None:
    """Add `rows` ((field, value, actor type) -> (events, latest occurred_at)) to the
    facets: events add up, last_seen keeps the later of the two."""
    if not rows:
        return
    c = facets.c
    stmt = upsert_for(session)(facets)
    excluded = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=[c.field, c.value, c.actor_type],
        set_={
            "events": c.events + excluded.events,
            "last_seen": case(
                (excluded.last_seen > c.last_seen, excluded.last_seen), else_=c.last_seen
            ),
        },
    )
    # Many parameter sets for one cached statement (see add_counts).
    await session.execute(
        stmt,
        [
            {"field": f, "value": v, "actor_type": t, "events": n, "last_seen": seen}
            for (f, v, t), (n, seen) in rows.items()
        ],
    )


# --- the reads -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scope:
    """What a statistic counts: buckets in [start, end) (epoch seconds, bucket-aligned) and
    the filters, in rollup terms."""

    start: int
    end: int
    tenant_id: str | None = None
    source: str | None = None
    module: str | None = None
    actions: tuple[str, ...] = ()
    outcome: str | None = None
    actor: str | None = None

    def shifted(self, start: int, end: int) -> Scope:
        return Scope(
            start,
            end,
            self.tenant_id,
            self.source,
            self.module,
            self.actions,
            self.outcome,
            self.actor,
        )


def table_for(scope: Scope, *, per_actor: bool = False) -> Table:
    """The smallest table that answers: per actor only when an actor is asked for."""
    return actor_buckets if per_actor or scope.actor is not None else buckets


def where(bind: Bind, table: Table, scope: Scope) -> list[ColumnElement[bool]]:
    c = table.c
    out: list[ColumnElement[bool]] = [c.bucket >= scope.start, c.bucket < scope.end]
    if scope.tenant_id is not None:
        out.append(c.tenant_id == scope.tenant_id)
    if scope.source is not None:
        out.append(c.source == scope.source)
    if scope.module is not None:
        out.append(c.module == scope.module)
    if scope.actions:
        out.append(in_values(bind, c.action, list(scope.actions)))
    if scope.actor is not None:
        out.append((c.actor_key if table is ip_buckets else c.actor_id) == scope.actor)
    return out


def counted(table: Table, scope: Scope) -> ColumnElement[Any]:
    """The events counted under the outcome filter: one outcome column, or all four."""
    if scope.outcome is not None:
        return cast(ColumnElement[Any], table.c[OUTCOME_COLUMNS[scope.outcome]])
    c = table.c
    return c.n_success + c.n_failure + c.n_denied + c.n_error


def _sum(value: ColumnElement[Any]) -> ColumnElement[Any]:
    return func.coalesce(func.sum(value), 0)


async def outcome_totals(bind: Bind, scope: Scope, login_actions: Sequence[str]) -> dict[str, int]:
    """Sums of each outcome column, overall and for the login actions."""
    table = table_for(scope)
    c = table.c
    is_login = in_values(bind, c.action, list(login_actions))
    columns: list[Any] = []
    for name in OUTCOME_COLUMNS.values():
        columns.append(_sum(c[name]).label(name))
        columns.append(_sum(func.coalesce(_only(is_login, c[name]), 0)).label(f"login_{name}"))
    row = (await bind.execute(select(*columns).where(*where(bind, table, scope)))).one()
    return {k: int(v) for k, v in row._mapping.items()}


def _only(condition: ColumnElement[bool], value: ColumnElement[Any]) -> ColumnElement[Any]:
    return case((condition, value), else_=literal(0))


async def distinct_actors(bind: Bind, scope: Scope) -> tuple[int, int]:
    """(distinct actors with an id, of which users) with at least one counted event."""
    table = actor_buckets
    c = table.c
    per_actor = (
        select(c.actor_type, c.actor_id)
        .where(*where(bind, table, scope), c.actor_id != "")
        .group_by(c.actor_type, c.actor_id)
        .having(func.sum(counted(table, scope)) > 0)
        .subquery()
    )
    users = func.coalesce(func.sum(_only(per_actor.c.actor_type == "user", literal(1))), 0)
    row = (await bind.execute(select(func.count(), users).select_from(per_actor))).one()
    return int(row[0]), int(row[1])


async def per_bucket(
    bind: Bind, scope: Scope, group: str | None = None
) -> list[tuple[int, str | None, int]]:
    """(bucket, group value, count) for non-empty buckets, ascending; `group` is a key column
    or `outcome` (then one row per outcome with events)."""
    table = table_for(scope)
    c = table.c
    conditions = where(bind, table, scope)
    if group == "outcome":
        outcomes = [scope.outcome] if scope.outcome is not None else list(OUTCOME_COLUMNS)
        stmt: Select[Any] = (
            select(c.bucket, *[_sum(c[OUTCOME_COLUMNS[o]]) for o in outcomes])
            .where(*conditions)
            .group_by(c.bucket)
            .order_by(c.bucket)
        )
        out: list[tuple[int, str | None, int]] = []
        for row in (await bind.execute(stmt)).all():
            for o, n in zip(outcomes, row[1:], strict=True):
                if n:
                    out.append((int(row[0]), o, int(n)))
        return out
    keys: list[Any] = [c.bucket] if group is None else [c.bucket, c[group]]
    stmt = (
        select(*keys, _sum(counted(table, scope)))
        .where(*conditions)
        .group_by(*keys)
        .order_by(c.bucket)
    )
    rows = (await bind.execute(stmt)).all()
    if group is None:
        return [(int(r[0]), None, int(r[1])) for r in rows if r[1]]
    return [(int(r[0]), str(r[1]), int(r[2])) for r in rows if r[2]]


# dimension -> (table kind, key columns)
DIMENSIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "actor": ("actor", ("actor_type", "actor_id")),
    "action": ("bucket", ("action",)),
    "module": ("bucket", ("module",)),
    "source": ("bucket", ("source",)),
    "tenant": ("bucket", ("tenant_id",)),
    "ip": ("ip", ("ip",)),
}
# What the IP table can be filtered by (it has no source, module or action).
IP_FILTERS = ("tenant_id", "actor", "outcome")


def _dimension_table(dimension: str, scope: Scope) -> Table:
    kind = DIMENSIONS[dimension][0]
    if kind == "ip":
        return ip_buckets
    return table_for(scope, per_actor=kind == "actor")


async def top(
    bind: Bind, scope: Scope, dimension: str, limit: int
) -> tuple[list[tuple[tuple[str, ...], int]], int]:
    """The `limit` largest groups of `dimension` ((key values, count), largest first, ties
    by key) and the total over all groups."""
    table = _dimension_table(dimension, scope)
    c = table.c
    keys = [c[k] for k in DIMENSIONS[dimension][1]]
    conditions = where(bind, table, scope)
    if dimension == "actor":
        conditions.append(c.actor_id != "")
    n = _sum(counted(table, scope)).label("n")
    stmt = (
        select(*keys, n)
        .where(*conditions)
        .group_by(*keys)
        .having(func.sum(counted(table, scope)) > 0)
        .order_by(n.desc(), *keys)
        .limit(limit)
    )
    rows = [(tuple(str(v) for v in r[:-1]), int(r[-1])) for r in (await bind.execute(stmt)).all()]
    total = (await bind.execute(select(_sum(counted(table, scope))).where(*conditions))).scalar()
    return rows, int(total or 0)


async def counts_for(
    bind: Bind, scope: Scope, dimension: str, wanted: Iterable[tuple[str, ...]]
) -> dict[tuple[str, ...], int]:
    """Counts of the given groups of `dimension` (the previous period of a top list)."""
    wanted = list(wanted)
    if not wanted:
        return {}
    table = _dimension_table(dimension, scope)
    c = table.c
    names = DIMENSIONS[dimension][1]
    keys = [c[k] for k in names]
    conditions = where(bind, table, scope)
    # The first key column narrows by IN; the rest is matched in Python (an actor's type).
    conditions.append(in_values(bind, keys[0], sorted({w[0] for w in wanted})))
    stmt = select(*keys, _sum(counted(table, scope))).where(*conditions).group_by(*keys)
    found = {tuple(str(v) for v in r[:-1]): int(r[-1]) for r in (await bind.execute(stmt)).all()}
    return {w: found.get(w, 0) for w in wanted}


def prefix_end(prefix: str) -> str | None:
    """The least string after every string that starts with `prefix`, in code point order
    (None: there is none, the prefix is all U+10FFFF). With `value >= prefix AND value <
    prefix_end(prefix)` a prefix is an exact index range, with no LIKE to escape."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code == 0xD800:  # surrogates are not characters: UTF-8 cannot hold them
            code = 0xE000
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


async def facet_values(
    bind: Bind, field: str, prefix: str | None, limit: int
) -> list[tuple[str, str, int, datetime]]:
    """(value, actor type, events, last_seen) of `field`, most events first, ties by value;
    only values starting with `prefix` (case-sensitive) when given."""
    c = facets.c
    conditions: list[ColumnElement[bool]] = [c.field == field]
    if prefix:
        conditions.append(c.value >= prefix)
        end = prefix_end(prefix)
        if end is not None:
            conditions.append(c.value < end)
    stmt = (
        select(c.value, c.actor_type, c.events, c.last_seen)
        .where(*conditions)
        .order_by(c.events.desc(), c.value, c.actor_type)
        .limit(limit)
    )
    rows = (await bind.execute(stmt)).all()
    return [(str(r[0]), str(r[1]), int(r[2]), r[3]) for r in rows]


async def failed_logins_by_ip(
    bind: Bind, scope: Scope, above: int, limit: int
) -> list[tuple[str, int, int]]:
    """(ip, failed logins, distinct actors tried) of the IPs with more than `above` failed
    logins in the scope (tenant and actor filters only: IP rollups have no source, module
    or action), most failures first."""
    t = ip_buckets
    c = t.c
    failed = func.sum(c.logins_failed)
    tried = func.count(func.distinct(case((c.logins_failed > 0, c.actor_key))))
    stmt = (
        select(c.ip, failed, tried)
        .where(*where(bind, t, scope))
        .group_by(c.ip)
        .having(failed > above)
        .order_by(failed.desc(), c.ip)
        .limit(limit)
    )
    return [(str(r[0]), int(r[1]), int(r[2])) for r in (await bind.execute(stmt)).all()]
