"""Dialect helpers that only Postgres exercises."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from audit_service.core.db import (
    create_engine,
    create_sessionmaker,
    describe_error,
    is_outage,
    sqlstate,
    within_budget,
)


async def test_time_budget_cancels_and_leaves_the_transaction_usable(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        async with create_sessionmaker(engine)() as session:

            async def slow() -> object:
                return (await session.execute(text("SELECT pg_sleep(2)"))).scalar()

            async def fast() -> object:
                return await session.scalar(text("SELECT 41 + 1"))

            assert await within_budget(session, 50, slow) is None
            assert await within_budget(session, 1000, fast) == 42
            # The budget is scoped: the request's own timeout is what it was before.
            assert await session.scalar(text("SELECT current_setting('statement_timeout')")) == "0"
            assert await session.scalar(text("SELECT 1")) == 1
    finally:
        await engine.dispose()


async def test_time_budget_survives_cancels_at_every_point(pg_url: str) -> None:
    """Budgets close to the work's own duration: the cancel lands in the work, in the
    RELEASE after it, or not at all. Each time the budget returns (a value or None), the
    previous timeout is back and the transaction still works: no InFailedSQLTransaction."""
    engine = create_engine(pg_url)
    try:
        async with create_sessionmaker(engine)() as session:
            await session.execute(text("SET LOCAL statement_timeout = '5s'"))

            async def count() -> object:
                return await session.scalar(
                    text("SELECT count(*) FROM generate_series(1, 20000 + (random() * 5000)::int)")
                )

            outcomes = set()
            for attempt in range(300):
                got = await within_budget(session, 1 + attempt % 3, count)
                outcomes.add(got is None)
                assert await session.scalar(text("SELECT 1")) == 1
            assert outcomes == {True, False}, "the budget never (or always) ran out"
            setting = await session.scalar(text("SELECT current_setting('statement_timeout')"))
            assert setting == "5s"
    finally:
        await engine.dispose()


async def test_time_budget_propagates_other_errors_with_a_usable_transaction(
    pg_url: str,
) -> None:
    engine = create_engine(pg_url)
    try:
        async with create_sessionmaker(engine)() as session:

            async def broken() -> object:
                return await session.scalar(text("SELECT 1 / 0"))

            with pytest.raises(DBAPIError) as caught:
                await within_budget(session, 1000, broken)
            assert sqlstate(caught.value) == "22012"
            assert await session.scalar(text("SELECT 2")) == 2
            assert await session.scalar(text("SELECT current_setting('statement_timeout')")) == "0"
    finally:
        await engine.dispose()


async def test_outages_are_told_from_statement_errors(pg_url: str) -> None:
    refused = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/postgres")
    try:
        with pytest.raises(Exception) as caught:
            async with refused.connect():
                pass
        assert is_outage(caught.value)
    finally:
        await refused.dispose()
    engine = create_engine(pg_url)
    try:
        async with engine.connect() as conn:
            with pytest.raises(DBAPIError) as wrong:
                await conn.execute(text("SELECT 1 / 0"))
            assert not is_outage(wrong.value)
            assert "22012" in describe_error(wrong.value)
            assert "division by zero" in describe_error(wrong.value)
            await conn.rollback()
            # A connection the server ended (an admin restart, a crash) is an outage.
            pid = await conn.scalar(text("SELECT pg_backend_pid()"))
            async with engine.connect() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(DBAPIError) as gone:
                await conn.execute(text("SELECT 1"))
            assert is_outage(gone.value)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("dialect", ["postgres", "sqlite"])
async def test_bound_values_never_reach_error_text(
    dialect: str, pg_url: str, tmp_path: object
) -> None:
    url = pg_url if dialect == "postgres" else f"sqlite+aiosqlite:///{tmp_path}/h.db"
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            with pytest.raises(DBAPIError) as caught:
                await conn.execute(
                    text("SELECT CAST(:secret AS integer) FROM no_such_table"),
                    {"secret": "hunter2-password"},
                )
        assert "hunter2-password" not in str(caught.value)
        assert "hidden due to hide_parameters" in str(caught.value)
    finally:
        await engine.dispose()
