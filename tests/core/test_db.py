"""Dialect helpers that only Postgres exercises."""

from __future__ import annotations

from sqlalchemy import text

from audit_service.core.db import create_engine, create_sessionmaker, within_budget


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
