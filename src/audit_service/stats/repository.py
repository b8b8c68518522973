"""All SQL of the statistics: the rollup's additive upserts and watermark, and the reads."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Select,
    Subquery,
    Table,
    and_,
    case,
    func,
    literal,
    literal_column,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from audit_service.audit_log import repository as events_repo
from audit_service.audit_log.repository import EventFilters
from audit_service.core.db import in_values, lock_for_transaction, upsert_for
from audit_service.stats.buckets import Range, pieces
from audit_service.stats.models import (
    BUCKET_SECONDS,
    DAY_SECONDS,
    HOUR_SECONDS,
    StatsActorBucket,
    StatsActorBucketDay,
    StatsActorTenantDay,
    StatsBucket,
    StatsBucketDay,
    StatsBucketHour,
    StatsFacet,
    StatsIpBucket,
    StatsIpBucketDay,
    StatsWatermark,
)

Bind = AsyncSession | AsyncConnection
buckets = cast(Table, StatsBucket.__table__)
actor_buckets = cast(Table, StatsActorBucket.__table__)
ip_buckets = cast(Table, StatsIpBucket.__table__)
buckets_hour = cast(Table, StatsBucketHour.__table__)
buckets_day = cast(Table, StatsBucketDay.__table__)
actor_buckets_day = cast(Table, StatsActorBucketDay.__table__)
ip_buckets_day = cast(Table, StatsIpBucketDay.__table__)
actor_tenant_day = cast(Table, StatsActorTenantDay.__table__)

# Each rollup with its levels, coarsest first: (seconds per row, table).
Levels = tuple[tuple[int, Table], ...]
BUCKET_LEVELS: Levels = (
    (DAY_SECONDS, buckets_day),
    (HOUR_SECONDS, buckets_hour),
    (BUCKET_SECONDS, buckets),
)
ACTOR_LEVELS: Levels = ((DAY_SECONDS, actor_buckets_day), (BUCKET_SECONDS, actor_buckets))
# Distinct and top actors without a source, module or action filter: the day rows per
# tenant and actor only (the 15-minute edges from the full table, read for the same columns).
ACTOR_TENANT_LEVELS: Levels = ((DAY_SECONDS, actor_tenant_day), (BUCKET_SECONDS, actor_buckets))
IP_LEVELS: Levels = ((DAY_SECONDS, ip_buckets_day), (BUCKET_SECONDS, ip_buckets))
# What the rollup adds to per round: the 15-minute table of each family, then each coarser
# level rolled up from the one before it (rollup.rolled_up; keys it lacks are summed over).
COARSER = {
    buckets: ((HOUR_SECONDS, buckets_hour), (DAY_SECONDS, buckets_day)),
    actor_buckets: ((DAY_SECONDS, actor_buckets_day), (DAY_SECONDS, actor_tenant_day)),
    ip_buckets: ((DAY_SECONDS, ip_buckets_day),),
}


def key_names(table: Table) -> tuple[str, ...]:
    return tuple(c.name for c in table.primary_key.columns)


def _per_actor_levels(scope: Scope) -> Levels:
    narrow = scope.source is None and scope.module is None and not scope.actions
    return ACTOR_TENANT_LEVELS if narrow else ACTOR_LEVELS


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


# Periods up to this long (seconds) read the 15-minute rows only (see _read).
SHORT_PERIOD = 2 * DAY_SECONDS


def levels_for(scope: Scope, *, per_actor: bool = False) -> Levels:
    """The smallest rollup that answers: per actor only when an actor is asked for."""
    return ACTOR_LEVELS if per_actor or scope.actor is not None else BUCKET_LEVELS


def where(
    bind: Bind, table: Table, scope: Scope, ranges: Sequence[Range] | None = None
) -> list[ColumnElement[bool]]:
    """The scope's filters on `table`; its buckets in `ranges` (default: [start, end))."""
    c = table.c
    spans = [(scope.start, scope.end)] if ranges is None else ranges
    within = [and_(c.bucket >= lo, c.bucket < hi) for lo, hi in spans]
    out: list[ColumnElement[bool]] = [within[0] if len(within) == 1 else or_(*within)]
    if scope.tenant_id is not None:
        out.append(c.tenant_id == scope.tenant_id)
    if scope.source is not None:
        out.append(c.source == scope.source)
    if scope.module is not None:
        out.append(c.module == scope.module)
    if scope.actions:
        out.append(in_values(bind, c.action, list(scope.actions)))
    if scope.actor is not None:
        out.append((c.actor_key if "actor_key" in c else c.actor_id) == scope.actor)
    return out


def counted(table: Table, scope: Scope) -> ColumnElement[Any]:
    """The events counted under the outcome filter: one outcome column, or all four."""
    if scope.outcome is not None:
        return cast(ColumnElement[Any], table.c[OUTCOME_COLUMNS[scope.outcome]])
    c = table.c
    return c.n_success + c.n_failure + c.n_denied + c.n_error


def _sum(value: ColumnElement[Any]) -> ColumnElement[Any]:
    return func.coalesce(func.sum(value), 0)


def _read(
    levels: Levels,
    scope: Scope,
    build: Callable[[Table, Sequence[Range]], Select[Any]],
    starts: Sequence[int] = (),
) -> Subquery:
    """One SELECT per level that has rows to read for the scope (`build(table, ranges)`),
    UNION ALL: the scope cut into `starts`' intervals (buckets.pieces)."""
    if scope.end - scope.start <= SHORT_PERIOD:
        # A short period reads few rows at any level: one SELECT of 15-minute rows plans
        # and runs faster than two or three (bench/stats.py at 10M, 1 day: 3-5 ms p50).
        plan = {levels[-1][0]: [(scope.start, scope.end)]}
    else:
        plan = pieces(starts, scope.start, scope.end, [size for size, _ in levels])
    tables = dict(levels)
    parts = [build(tables[size], ranges) for size, ranges in plan.items() if ranges]
    if not parts:  # an empty period: one level's (empty) answer
        parts = [build(levels[-1][1], [(scope.start, scope.start)])]
    return (parts[0] if len(parts) == 1 else union_all(*parts)).subquery()


def interval_of(
    column: ColumnElement[Any], starts: Sequence[int], end: int | None = None
) -> ColumnElement[Any]:
    """The index of the interval (starts ascending; the last ends at or before `end`) a
    row's bucket falls into, as SQL. Every row read lies inside one interval whole
    (buckets.pieces), so its start decides. Runs of intervals of equal length (hours and
    days between DST changes, all of them in UTC) are one arithmetic step each,
    `first + (bucket - start) / length` (integer division on both dialects); the runs are
    told apart by a balanced CASE over their starts (the values are integers, inlined)."""
    n = len(starts)
    lengths = [starts[k + 1] - starts[k] for k in range(n - 1)]
    runs: list[tuple[int, int, int]] = []  # (first index, its start, length; 0: one interval)
    k = 0
    while k < n:
        step = lengths[k] if k < n - 1 else 0
        j = k
        while j + 1 < n - 1 and lengths[j + 1] == step:
            j += 1
        if j + 1 == n - 1 and step and (end is None or end - starts[-1] <= step):
            j += 1  # the last interval, cut by the period's end, fits the run
        runs.append((k, starts[k], step if j > k else 0))
        k = j + 1

    def leaf(first: int, start: int, step: int) -> ColumnElement[Any]:
        if not step:
            return literal_column(str(first))
        # op("/"): integer division as both dialects spell it (SQLAlchemy's / is true division).
        since = (column - literal_column(str(start))).self_group()
        offset = since.op("/")(literal_column(str(step)))
        return literal_column(str(first)) + offset

    def tree(lo: int, hi: int) -> ColumnElement[Any]:
        if hi - lo == 1:
            return leaf(*runs[lo])
        mid = (lo + hi) // 2
        below = column < literal_column(str(int(runs[mid][1])))
        return case((below, tree(lo, mid)), else_=tree(mid, hi))

    return tree(0, len(runs))


async def outcome_totals(bind: Bind, scope: Scope, login_actions: Sequence[str]) -> dict[str, int]:
    """Sums of each outcome column, overall and for the login actions."""

    def build(table: Table, ranges: Sequence[Range]) -> Select[Any]:
        c = table.c
        is_login = in_values(bind, c.action, list(login_actions))
        columns: list[Any] = []
        for name in OUTCOME_COLUMNS.values():
            columns.append(_sum(c[name]).label(name))
            columns.append(_sum(_only(is_login, c[name])).label(f"login_{name}"))
        return select(*columns).where(*where(bind, table, scope, ranges))

    parts = _read(levels_for(scope), scope, build)
    row = (await bind.execute(select(*[_sum(col).label(col.name) for col in parts.c]))).one()
    return {k: int(v) for k, v in row._mapping.items()}


def _only(condition: ColumnElement[bool], value: ColumnElement[Any]) -> ColumnElement[Any]:
    return case((condition, value), else_=literal(0))


async def distinct_actors(bind: Bind, scope: Scope) -> tuple[int, int]:
    """(distinct actors with an id, of which users) with at least one counted event: exact,
    the union of each level's actors (day rows for whole UTC days, 15-minute rows at the
    edges), grouped once more."""

    def build(table: Table, ranges: Sequence[Range]) -> Select[Any]:
        c = table.c
        return (
            select(c.actor_type, c.actor_id, func.sum(counted(table, scope)).label("n"))
            .where(*where(bind, table, scope, ranges), c.actor_id != "")
            .group_by(c.actor_type, c.actor_id)
        )

    parts = _read(_per_actor_levels(scope), scope, build)
    per_actor = (
        select(parts.c.actor_type)
        .group_by(parts.c.actor_type, parts.c.actor_id)
        .having(func.sum(parts.c.n) > 0)
        .subquery()
    )
    users = func.coalesce(func.sum(_only(per_actor.c.actor_type == "user", literal(1))), 0)
    row = (await bind.execute(select(func.count(), users).select_from(per_actor))).one()
    return int(row[0]), int(row[1])


async def per_interval(
    bind: Bind, scope: Scope, starts: Sequence[int], group: str | None = None
) -> list[tuple[int, str | None, int]]:
    """(interval index, group value, count) of the non-empty groups, intervals beginning at
    `starts` (ascending; the first at or before scope.start), aggregated per interval in
    SQL; `group` is a key column or `outcome` (then one row per outcome with events)."""
    if not starts:
        return []
    outcomes = [scope.outcome] if scope.outcome is not None else list(OUTCOME_COLUMNS)
    by_outcome = group == "outcome"

    def build(table: Table, ranges: Sequence[Range]) -> Select[Any]:
        # Per bucket of the level first (an index-ordered aggregate): the interval CASE
        # then runs once per bucket and group, not once per row.
        c = table.c
        keys: list[Any] = [c.bucket]
        if group is not None and not by_outcome:
            keys.append(c[group])
        if by_outcome:
            sums = [func.sum(c[OUTCOME_COLUMNS[o]]).label(o) for o in outcomes]
        else:
            sums = [func.sum(counted(table, scope)).label("n")]
        labelled = [c.bucket, *[k.label("g") for k in keys[1:]]]
        return select(*labelled, *sums).where(*where(bind, table, scope, ranges)).group_by(*keys)

    parts = _read(levels_for(scope), scope, build, starts)
    i = interval_of(parts.c.bucket, starts, scope.end)
    # One interval: its index is a constant, and GROUP BY 0 would name a column.
    keys: list[Any] = [] if len(starts) == 1 else [i]
    columns: list[Any] = [i.label("i")]
    if group is not None and not by_outcome:
        keys.append(parts.c.g)
        columns.append(parts.c.g)
    values = [_sum(parts.c[o]) for o in outcomes] if by_outcome else [_sum(parts.c.n)]
    rows = (await bind.execute(select(*columns, *values).group_by(*keys))).all()
    out: list[tuple[int, str | None, int]] = []
    for row in rows:
        if by_outcome:
            out.extend(
                (int(row[0]), o, int(n)) for o, n in zip(outcomes, row[1:], strict=True) if n
            )
        elif group is None:
            if row[1]:
                out.append((int(row[0]), None, int(row[1])))
        elif row[2]:
            out.append((int(row[0]), str(row[1]), int(row[2])))
    out.sort(key=lambda r: (r[0], r[1] or ""))
    return out


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


def _dimension_levels(dimension: str, scope: Scope) -> Levels:
    kind = DIMENSIONS[dimension][0]
    if kind == "ip":
        return IP_LEVELS
    if kind == "actor":
        return _per_actor_levels(scope)
    return levels_for(scope)


def _grouped(
    bind: Bind,
    scope: Scope,
    dimension: str,
    extra: Callable[[Table], list[ColumnElement[bool]]] = lambda _: [],
) -> Subquery:
    """Per level, the count per group of `dimension` (key columns + `n`), UNION ALL."""
    names = DIMENSIONS[dimension][1]

    def build(table: Table, ranges: Sequence[Range]) -> Select[Any]:
        c = table.c
        conditions = where(bind, table, scope, ranges) + extra(table)
        if dimension == "actor":
            conditions.append(c.actor_id != "")
        keys = [c[k] for k in names]
        return (
            select(*keys, func.sum(counted(table, scope)).label("n"))
            .where(*conditions)
            .group_by(*keys)
        )

    return _read(_dimension_levels(dimension, scope), scope, build)


async def top(
    bind: Bind, scope: Scope, dimension: str, limit: int
) -> tuple[list[tuple[tuple[str, ...], int]], int]:
    """The `limit` largest groups of `dimension` ((key values, count), largest first, ties
    by key) and the total over all groups."""
    parts = _grouped(bind, scope, dimension)
    keys = [parts.c[k] for k in DIMENSIONS[dimension][1]]
    n = _sum(parts.c.n).label("n")
    # The total over all groups in the same query: a window over the grouped rows, computed
    # before the LIMIT (groups whose count is 0 add nothing to it).
    total = func.sum(n).over().label("total")
    ranked = select(*keys, n, total).group_by(*keys).order_by(n.desc(), *keys).limit(limit + 1)
    found = (await bind.execute(ranked)).all()
    whole = int(found[0][-1] or 0) if found else 0
    rows = [(tuple(str(v) for v in r[:-2]), int(r[-2])) for r in found if r[-2]][:limit]
    return rows, whole


async def counts_for(
    bind: Bind, scope: Scope, dimension: str, wanted: Iterable[tuple[str, ...]]
) -> dict[tuple[str, ...], int]:
    """Counts of the given groups of `dimension` (the previous period of a top list)."""
    wanted = list(wanted)
    if not wanted:
        return {}
    names = DIMENSIONS[dimension][1]
    first = sorted({w[0] for w in wanted})
    # The first key column narrows by IN; the rest is matched in Python (an actor's type).
    parts = _grouped(
        bind, scope, dimension, lambda table: [in_values(bind, table.c[names[0]], first)]
    )
    keys = [parts.c[k] for k in names]
    stmt = select(*keys, _sum(parts.c.n)).group_by(*keys)
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

    def build(table: Table, ranges: Sequence[Range]) -> Select[Any]:
        c = table.c
        return (
            select(c.ip, c.actor_key, func.sum(c.logins_failed).label("f"))
            .where(*where(bind, table, scope, ranges))
            .group_by(c.ip, c.actor_key)
        )

    parts = _read(IP_LEVELS, scope, build)
    c = parts.c
    failed = func.sum(c.f)
    tried = func.count(func.distinct(case((c.f > 0, c.actor_key))))
    stmt = (
        select(c.ip, failed, tried)
        .group_by(c.ip)
        .having(failed > above)
        .order_by(failed.desc(), c.ip)
        .limit(limit)
    )
    return [(str(r[0]), int(r[1]), int(r[2])) for r in (await bind.execute(stmt)).all()]


async def events_per_interval(
    session: AsyncSession, filters: EventFilters, starts: Sequence[int], end: int
) -> list[tuple[int, int]]:
    """(interval index, events) counted over the raw events rather than the rollups: for the
    filters the rollups do not carry (actor by name, IP, text, target) and for edges of a
    period off the 15-minute grid. Intervals begin at `starts` (see interval_of)."""
    if not starts:
        return []
    if len(starts) == 1:
        # One interval: its index is a constant, and GROUP BY 0 would name a column.
        return await events_repo.count_per_interval(session, filters, None)
    return await events_repo.count_per_interval(
        session, filters, lambda seconds: interval_of(seconds, starts, end)
    )
