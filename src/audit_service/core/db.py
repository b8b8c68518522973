"""Engines, sessions and the few places Postgres and SQLite differ."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Integer,
    Select,
    String,
    Table,
    Text,
    case,
    event,
    false,
    func,
    literal,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import base as pg_base
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import ClauseElement, ColumnElement, TextClause
from sqlalchemy.types import TypeEngine, UserDefinedType

from audit_service.kit.models import UTCDateTime, utcnow

WROTE = "audit_service.wrote"
SQLITE_SNAPSHOT = "SERIALIZABLE"  # SQLite's only level but dirty reads; marks snapshot readers
T = TypeVar("T")


def create_engine(
    url: str, *, idle_in_transaction_timeout: float | None = None, **kwargs: Any
) -> AsyncEngine:
    # Bound values can hold user data (descriptions, metadata, usernames): keep them out of
    # the messages of SQLAlchemy's exceptions, which end up in logs.
    kwargs.setdefault("hide_parameters", True)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_size", 20)
    kwargs.setdefault("max_overflow", 20)
    # No pool_pre_ping: with asyncpg it costs three round trips on every checkout, i.e. on
    # every request. A connection that died with its server fails one request instead (and
    # is discarded); the recorder's writer reconnects by itself.
    kwargs.setdefault("pool_recycle", 1800)
    if idle_in_transaction_timeout:
        # A session left idle inside a transaction holds back the log's horizon (every
        # consumer waits for it): Postgres ends it. (Behind PgBouncer, add this parameter
        # to its ignore_startup_parameters or set it on the role.)
        server_settings = {
            "idle_in_transaction_session_timeout": str(int(idle_in_transaction_timeout * 1000))
        }
        connect_args = kwargs.setdefault("connect_args", {})
        connect_args.setdefault("server_settings", {}).update(server_settings)
    return create_async_engine(url, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the single writer; busy_timeout makes writers queue instead
    # of failing with "database is locked" when the recorder and a request write together.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    """A real BEGIN for transactions that ask for a snapshot (exports, `snapshot_isolation`).

    The driver's own handling only BEGINs before the first write, so a read-only transaction
    (an export's count, then its stream) read a fresh snapshot per statement and announced
    one row fewer than it sent. SQLAlchemy's recipe (driver autocommit mode plus a BEGIN on
    every "begin") was tried and measured: every ordinary request transaction then starts
    its snapshot at its first read, and when it later writes after another connection
    committed (the recorder commits all the time), SQLite refuses the upgrade at once with
    "database is locked" (busy_timeout does not apply): 19 of 30 concurrent user creations
    beside 60 reads failed. So ordinary transactions keep the driver's deferred BEGIN
    before the first write (which waits its turn), and only snapshot readers, which never
    write, get a BEGIN at their start.
    """
    if conn.get_execution_options().get("isolation_level") == SQLITE_SNAPSHOT:
        conn.exec_driver_sql("BEGIN")


def create_sessionmaker(
    engine: AsyncEngine, info: dict[str, Any] | None = None
) -> async_sessionmaker[AsyncSession]:
    # `info` is copied into every session's own (the process's cache, core/cache.py).
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=True, info=info)


def is_postgres(bind: AsyncEngine | AsyncSession) -> bool:
    engine = bind.bind if isinstance(bind, AsyncSession) else bind
    return engine is not None and engine.dialect.name == "postgresql"


def session_wrote(session: AsyncSession) -> bool:
    """Whether this session changed anything (so the request's event must share its commit).

    The mark is never cleared: sessions live for one request, and a savepoint's release
    (which fires commit events) must not hide the writes made inside it.
    """
    return bool(tables_written(session.sync_session))


def tables_written(session: Session) -> set[str]:
    """The tables this session changed ("" for a write whose table is not known); the cache
    drops them after its commit and never serves them to it before (core/cache.py)."""
    written: set[str] = session.info.get(WROTE, set())
    return written


def _mark(session: Session, table: Any) -> None:
    session.info.setdefault(WROTE, set()).add(table if isinstance(table, str) else "")


@event.listens_for(Session, "after_flush")
def _mark_flush(session: Session, _flush_context: Any) -> None:
    for obj in (*session.new, *session.dirty, *session.deleted):
        _mark(session, getattr(type(obj), "__tablename__", None))


@event.listens_for(Session, "do_orm_execute")
def _mark_dml(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        # `update(ApiKey)` and `insert(table)` alike name their table.
        _mark(state.session, getattr(getattr(state.statement, "table", None), "name", None))


async def ping(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


class Explain(Executable, ClauseElement):
    """`EXPLAIN (FORMAT JSON) <statement>` as an executable construct (bind params intact)."""

    inherit_cache = False

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement


@compiles(Explain, "postgresql")
def _compile_explain(element: Explain, compiler: Any, **kw: Any) -> str:
    return "EXPLAIN (FORMAT JSON) " + str(compiler.process(element.statement, **kw))


async def estimated_rows(session: AsyncSession, statement: Select[Any]) -> int:
    """The planner's row estimate for a query: instant, unlike count(*) on millions of rows."""
    plan = await session.scalar(Explain(statement))
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def snapshot_isolation(engine: AsyncEngine | AsyncConnection) -> str:
    """The isolation level giving one consistent snapshot for a long read (exports)."""
    return "REPEATABLE READ" if engine.dialect.name == "postgresql" else SQLITE_SNAPSHOT


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error (asyncpg's `sqlstate`, as SQLAlchemy's adapter
    exposes it as `orig.pgcode`/`orig.sqlstate`), or None (SQLite has none)."""
    seen: BaseException | None = exc
    while seen is not None:
        orig = getattr(seen, "orig", None)
        for candidate in (seen, orig, getattr(orig, "__cause__", None)):
            code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
            if isinstance(code, str):
                return code
        seen = seen.__cause__  # not __context__: an error merely raised nearby is not ours
    return None


def describe_error(exc: BaseException) -> str:
    """Class, message and SQLSTATE of a failure, for logs. Engines hide bound parameters,
    so the message carries no stored values."""
    orig = getattr(exc, "orig", None) or exc
    message = " ".join(str(orig).split())[:500]
    code = sqlstate(exc)
    return f"{type(exc).__name__} ({type(orig).__name__}): {message}" + (
        f" [SQLSTATE {code}]" if code else ""
    )


# Class 08 (connection exception) and 57P01-57P03 (admin/crash shutdown, cannot connect now).
_OUTAGE_SQLSTATES = ("08", "57P01", "57P02", "57P03")
_OUTAGE_CLASS_NAMES = {
    "CannotConnectNowError",
    "ConnectionDoesNotExistError",
    "InterfaceError",  # asyncpg: "connection is closed", "cannot perform operation"
    "InternalClientError",
    "ConnectionFailureError",
}


def is_outage(exc: BaseException) -> bool:
    """Whether an error means "the database is unreachable", not "this statement is wrong":
    refused/reset sockets, a server restarting or shutting down, a dead pooled connection."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, OSError | ConnectionError | TimeoutError):
            return True
        # asyncpg's own classes only: SQLAlchemy's InterfaceError also wraps e.g. SQLite's
        # "Error binding parameter", which is bad input, not an outage.
        if type(seen).__name__ in _OUTAGE_CLASS_NAMES and type(seen).__module__.startswith(
            "asyncpg"
        ):
            return True
        code = getattr(seen, "sqlstate", None)
        if isinstance(code, str) and code.startswith(_OUTAGE_SQLSTATES):
            return True
        seen = seen.__cause__ or getattr(seen, "orig", None)
    return False


STATEMENT_TIMEOUT = "57014"  # query_canceled: statement_timeout (or a cancel request)


async def within_budget(
    session: AsyncSession, milliseconds: int, work: Callable[[], Awaitable[T]]
) -> T | None:
    """Run `work` under a statement timeout on Postgres; None if the budget ran out.

    A savepoint contains the cancellation, and the previous timeout is put back afterwards,
    so the rest of the request's transaction is unaffected. Other dialects just run it.
    """
    if not is_postgres(session):
        return await work()
    previous = await session.scalar(text("SELECT current_setting('statement_timeout')"))
    # A savepoint of our own (not the ORM's begin_nested) so that every failure path can
    # roll it back explicitly: after a cancelled statement the transaction is aborted and
    # any statement but ROLLBACK TO SAVEPOINT fails with InFailedSQLTransaction, the restore
    # below included. The cancel can also land late, on the statement after the slow one
    # (the RELEASE): that is handled the same way. The old timeout is put back only once
    # the savepoint has ended and the transaction is usable again.
    await session.execute(text("SAVEPOINT within_budget"))
    result: T | None = None
    try:
        await session.execute(
            text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": str(milliseconds)}
        )
        result = await work()
        await session.execute(text("RELEASE SAVEPOINT within_budget"))
    except DBAPIError as exc:
        timed_out = sqlstate(exc) == STATEMENT_TIMEOUT
        if not timed_out and is_outage(exc):
            raise  # the connection is gone: nothing to roll back
        await session.execute(text("ROLLBACK TO SAVEPOINT within_budget"))
        await session.execute(text("RELEASE SAVEPOINT within_budget"))
        if not timed_out:
            raise
        result = None
    await session.execute(
        text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": previous}
    )
    return result


def epoch_seconds(bind: AsyncSession | AsyncConnection, column: Any) -> ColumnElement[Any]:
    """A timestamp column as whole seconds since the Unix epoch (UTC), an integer on both
    dialects, so that interval arithmetic (integer division) means the same on each.
    SQLite stores UTC text: strftime('%s') reads it."""
    engine = bind.bind if isinstance(bind, AsyncSession) else bind
    assert engine is not None, "a session without a bind"
    if engine.dialect.name == "postgresql":
        return sql_cast(func.floor(func.extract("epoch", column)), BigInteger)
    return sql_cast(func.strftime("%s", column), Integer)


# --- Postgres export fast path --------------------------------------------------------------


def is_postgres_conn(conn: AsyncConnection) -> bool:
    return conn.dialect.name == "postgresql"


def utc_iso(column: Any) -> Any:
    """A timestamptz as ISO 8601 UTC text with microseconds, as the Python writers emit it."""
    return func.to_char(
        func.timezone("UTC", column), literal_column("""'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'""")
    )


def neutralized_text(column: Any) -> Any:
    """Text that a spreadsheet would run as a formula gets a leading quote (OWASP)."""
    starts: list[Any] = [literal_column(f"'{c}'") for c in ("=", "+", "-", "@")]
    starts += [literal_column(r"E'\t'"), literal_column(r"E'\r'")]
    quote: Any = literal_column("''''")
    return case((func.left(column, 1).in_(starts), quote.concat(column)), else_=column)


async def copy_out(
    conn: AsyncConnection, statement: Select[Any], **options: Any
) -> AsyncIterator[bytes]:
    """Stream `COPY (statement) TO STDOUT` in the connection's transaction, with backpressure:
    the server is read only as fast as the client takes the bytes."""
    compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    args = [params[name] for name in compiled.positiontup or ()]
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    chunks: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=16)

    async def keep(data: bytes | bytearray | memoryview) -> None:
        await chunks.put(bytes(data))  # copy: the driver may reuse its buffer

    async def run() -> None:
        try:
            await driver.copy_from_query(str(compiled), *args, output=keep, **options)
        except asyncio.CancelledError:
            raise
        except BaseException:
            await chunks.put(None)
            raise
        await chunks.put(None)

    task = asyncio.create_task(run())
    try:
        while (chunk := await chunks.get()) is not None:
            yield chunk
        await task  # surfaces a failed COPY
    finally:
        if not task.done():
            # The client went away mid-COPY: stop reading, and drop the connection (it is
            # mid-protocol, unusable), which also ends the query on the server.
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await conn.invalidate()


async def driver_connection(session: AsyncSession) -> Any:
    """The asyncpg connection under a Postgres session, for the few hot paths that skip
    SQLAlchemy's per-row result processing (the log sequencer reads thousands of rows per
    round). The session's transaction must have begun (a statement ran through it): then
    what runs on the driver belongs to that transaction and commits with the session."""
    conn = await session.connection()
    driver = (await conn.get_raw_connection()).driver_connection
    if driver is None or not driver.is_in_transaction():
        raise RuntimeError("driver_connection() needs a session whose transaction has begun")
    return driver


def in_values(bind: AsyncSession | AsyncConnection, column: Any, values: list[Any]) -> Any:
    """`column IN (values)`. On Postgres the values travel as one array parameter, unpacked
    by `unnest` (one prepared statement for every list length, and a hash or index join
    whatever the table's statistics say: `= ANY(CAST($1 AS varchar(300)[]))` was planned as
    a filter that coerced the whole array once per row, quadratic). SQLite gets IN."""
    engine = bind.bind if isinstance(bind, AsyncSession) else bind
    if engine is not None and engine.dialect.name == "postgresql":
        element = Text() if isinstance(column.type, String) else column.type
        return column.in_(select(func.unnest(literal(values, ARRAY(element)))))
    return column.in_(values)


# --- Migrations ------------------------------------------------------------------------------

# Any fixed 64-bit number, the same in every replica: "audit-service migrations".
MIGRATION_LOCK_KEY = 0x61756469745F6D67


class RoleError(Exception):
    """The connection cannot take on the requested role (the message is the server's)."""


async def assume_role(conn: AsyncConnection, role: str) -> None:
    """`SET ROLE role` for the rest of this connection: what it creates, the role owns.

    In production the schema owner cannot log in; an administrator's own login, a member of
    it, migrates as it (the server's logs name the person, the objects the owner). Committed
    at once: a SET inside a transaction that rolls back would be undone with it."""
    if conn.dialect.name != "postgresql":
        raise RoleError("database roles exist on PostgreSQL only (SQLite has none)")
    quoted = conn.dialect.identifier_preparer.quote_identifier(role)
    try:
        await conn.execute(text(f"SET ROLE {quoted}"))
    except DBAPIError as exc:
        await conn.rollback()
        # The server's own words ("role … does not exist", "permission denied to set role
        # …") name only the role; the statement and its parameters are left out.
        raise RoleError(str(exc.orig).splitlines()[0]) from None
    await conn.commit()


@contextlib.asynccontextmanager
async def migration_lock(conn: AsyncConnection) -> AsyncIterator[None]:
    """Serialise migration runs across processes (replicas starting together).

    Postgres: a session-level advisory lock held on the migrating connection for the whole
    run, so a second `migrate` waits, then finds the schema at head and does nothing. It is
    committed at once so Alembic's own transaction starts clean; the lock outlives commits
    and dies with the connection if the process does. SQLite needs none: its writer lock
    already serialises the DDL transaction.
    """
    if conn.dialect.name != "postgresql":
        yield
        return
    await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    await conn.commit()
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            await conn.rollback()
            await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            await conn.commit()


async def lock_for_transaction(session: AsyncSession, name: str, table: Table) -> None:
    """Serialize transactions on `name` until this one ends, so a read-check-write in it
    cannot interleave with another's.

    Postgres: a transaction-scoped advisory lock. SQLite has one writer at a time: a write
    statement that changes nothing (on `table`) takes that lock now, and the reads after it
    see every earlier commit (pysqlite begins the transaction at the first write)."""
    if is_postgres(session):
        await session.execute(advisory_xact_lock(name))
    else:
        column = next(iter(table.primary_key.columns))
        await session.execute(update(table).where(false()).values({column: column}))


async def write_lock_for_update(session: AsyncSession, table: Table) -> None:
    """Call before a SELECT … FOR UPDATE whose row the transaction will then change.

    Postgres: nothing (the row lock does it). SQLite ignores FOR UPDATE, and pysqlite begins
    the transaction only at the first write, so the SELECT reads outside any transaction: two
    callers read the same row, then both write from it (two sequencers appended the same
    events). Taking the write lock first makes the second wait, then read what the first
    committed."""
    if not is_postgres(session):
        await lock_for_transaction(session, table.name, table)


def advisory_xact_lock(name: str) -> TextClause:
    """Postgres: the transaction-scoped advisory lock `lock_for_transaction` takes for `name`
    (also for a migration that must not interleave with a job's transaction)."""
    return text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))").bindparams(name=name)


def code_point_string(length: int) -> TypeEngine[str]:
    """VARCHAR(length) ordered by code point on both dialects, so that the values starting
    with a prefix are exactly one index range, `[prefix, successor of prefix)`.

    Postgres: column collation "C" (byte order of UTF-8 = code point order); under the
    database's usual linguistic collation (en_US.UTF-8, ICU) comparisons skip punctuation
    and fold case at first level, so a range is not a prefix. SQLite's default BINARY
    collation already compares UTF-8 bytes."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


# --- upserts and the shared clock (background-job leases) -----------------------------------


def upsert_for(bind: AsyncConnection | AsyncSession) -> Callable[..., Any]:
    """The dialect's `insert()` with `on_conflict_do_update`/`on_conflict_do_nothing`: both
    dialects spell `INSERT … ON CONFLICT … DO UPDATE … WHERE … RETURNING` the same way."""
    engine = bind.bind if isinstance(bind, AsyncSession) else bind
    assert engine is not None, "a session without a bind"
    name = engine.dialect.name
    return pg_insert if name == "postgresql" else sqlite_insert


def db_clock(bind: AsyncConnection, plus: timedelta = timedelta(0)) -> ColumnElement[Any]:
    """ "Now" (+ `plus`) as the database sees it, for comparisons between processes.

    On Postgres the server's clock: processes on several hosts must agree on when a lease
    expires, and their own clocks may drift. `statement_timestamp()`, not `now()`: `now()` is
    the start of the transaction. SQLite lives on one host, so this process's clock serves.
    """
    if bind.dialect.name == "postgresql":
        now: ColumnElement[Any] = func.statement_timestamp()
        return now + literal(plus) if plus else now
    return literal(utcnow() + plus, UTCDateTime())


# --- the commit-order key (audit_event.txid, Postgres) --------------------------------------


class XID8(UserDefinedType[int]):
    """Postgres' 64-bit transaction id type; declared so schema reflection knows it."""

    cache_ok = True

    def get_col_spec(self, **_kw: Any) -> str:
        return "xid8"


pg_base.ischema_names.setdefault("xid8", XID8)


# --- long sequential reads (verify) ---------------------------------------------------------


async def tune_for_scan(conn: AsyncConnection) -> None:
    """Session settings for a process that reads the whole log in many chunked queries.

    Postgres: no JIT (the planner's cost estimate for a chunk of thousands of joined rows
    crosses jit_above_cost, and compiling took ~50 ms per query, longer than running it) and
    no parallel workers (verify runs its own processes; on a small box the gather workers only
    compete with them for the same cores).
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SET jit = off"))
        await conn.execute(text("SET max_parallel_workers_per_gather = 0"))


async def fetch_rows(conn: AsyncConnection, statement: Select[Any] | Any) -> list[Any]:
    """All rows of `statement`, as cheaply as the driver allows; each row is a sequence in
    the statement's column order.

    Postgres: asyncpg's records straight from the driver (binary protocol, decoded in C),
    skipping SQLAlchemy's per-row result processing, which costs several times the decoding
    at verify's scale. The values are the driver's own: aware UTC datetimes, UUIDs (asyncpg's
    subclass of uuid.UUID), JSON already decoded by the dialect's codec — what the ORM hands
    out, except that no TypeDecorator runs (so only for columns without one that matters).
    Elsewhere: SQLAlchemy rows.
    """
    if conn.dialect.name != "postgresql":
        return list((await conn.execute(statement)).all())
    compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    args = [params[name] for name in compiled.positiontup or ()]
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    return list(await driver.fetch(str(compiled), *args))
