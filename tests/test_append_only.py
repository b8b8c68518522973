"""The log tables' triggers (migrations 0001, 0004, 0009) refuse rewrites for every role —
on PostgreSQL even the superuser, so a stolen owner password or a missing REVOKE still meets
them; on the embedded SQLite they are the only guard (it has no roles). The privileges of the
service's role are tests/deploy/test_roles.py."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.conftest import Harness
from tests.ingestion.helpers import bearer, event, make_key
from tests.integrity.helpers import seal

# Every log table and the statements each must refuse (all rows, as a rewrite would).
REFUSED = {
    "audit_event": ("UPDATE audit_event SET description = 'rewritten'", "DELETE FROM audit_event"),
    "audit_leaf": ("UPDATE audit_leaf SET position = position + 1000", "DELETE FROM audit_leaf"),
    "integrity_checkpoint": (
        "UPDATE integrity_checkpoint SET tree_size = tree_size + 1",
        "DELETE FROM integrity_checkpoint",
    ),
    "integrity_log": ("UPDATE integrity_log SET origin = 'evil'", "DELETE FROM integrity_log"),
    "integrity_tile": ("DELETE FROM integrity_tile",),  # UPDATE: below, growth only
    "integrity_key": ("UPDATE integrity_key SET key = key",),  # DELETE: erasure, see below
}
CASES = [(table, sql) for table, statements in REFUSED.items() for sql in statements]


async def _sealed(h: Harness) -> None:
    key = await make_key(h)
    r = await h.client.post("/events", headers=bearer(key), json=event())
    assert r.status_code == 201
    assert await seal(h) >= 3


async def _count(h: Harness, table: str) -> int:
    async with h.admin() as conn:
        return int(await conn.scalar(text(f"SELECT count(*) FROM {table}")))  # noqa: S608


async def _refused(h: Harness, sql: str, match: str) -> None:
    with pytest.raises(DBAPIError, match=match):
        async with h.admin() as conn:
            await conn.execute(text(sql))


@pytest.mark.parametrize(("table", "sql"), CASES)
async def test_the_triggers_refuse_rewrites_of_the_log(h: Harness, table: str, sql: str) -> None:
    await _sealed(h)
    before = await _count(h, table)
    assert before > 0
    verb = sql.split()[0]
    await _refused(h, sql, f"{table} is append-only: {verb} refused")
    assert await _count(h, table) == before


@pytest.mark.parametrize("table", list(REFUSED))
async def test_truncate_of_the_log_is_refused_by_a_statement_trigger(
    pg_only_url: str, table: str
) -> None:
    """Row triggers never see TRUNCATE: a BEFORE TRUNCATE statement trigger on each."""
    from tests.conftest import make_settings, start_harness

    async for h in start_harness(make_settings(pg_only_url)):
        await _sealed(h)
        before = await _count(h, table)
        await _refused(h, f"TRUNCATE {table}", f"{table} is append-only: TRUNCATE refused")
        assert await _count(h, table) == before


async def test_a_tile_only_grows(h: Harness) -> None:
    """A partial tile's row grows in place (the service's role may UPDATE it); any other
    change — shrinking, an edited hash, a full tile touched at all — is refused."""
    await _sealed(h)
    select_tile = text("SELECT data FROM integrity_tile WHERE level = 0 AND idx = 0")
    update_tile = text("UPDATE integrity_tile SET data = :data WHERE level = 0 AND idx = 0")
    async with h.engine.connect() as conn:
        data = bytes(await conn.scalar(select_tile))
    assert 0 < len(data) < 256 * 32
    grown = data + bytes(32)
    for changed in (
        data[:-32],  # shrunk
        bytes([data[0] ^ 1]) + data[1:],  # an edited hash
        bytes([data[0] ^ 1]) + data[1:] + bytes(32),  # grown, but the old part edited
    ):
        with pytest.raises(DBAPIError, match="integrity_tile may only grow"):
            async with h.engine.begin() as conn:
                await conn.execute(update_tile, {"data": changed})
    async with h.engine.begin() as conn:  # the service's own role: growth is its job
        await conn.execute(update_tile, {"data": grown})
        assert bytes(await conn.scalar(select_tile)) == grown

    full = bytes(range(256)) * 32
    async with h.engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO integrity_tile (level, idx, data) VALUES (3, 7, :data)"),
            {"data": full},
        )
    with pytest.raises(DBAPIError, match="integrity_tile may only grow"):
        async with h.admin() as conn:  # a full tile never changes, whoever asks
            await conn.execute(
                text("UPDATE integrity_tile SET data = :data WHERE level = 3 AND idx = 7"),
                {"data": full[:-32] + bytes(32)},
            )


async def test_the_triggers_let_a_commitment_key_be_erased(h: Harness) -> None:
    """Erasing a key is how a data subject's commitments become unlinkable (GDPR art. 17)
    without breaking a proof: the triggers allow DELETE on integrity_key; on PostgreSQL the
    service's role has no such privilege (tests/deploy/test_roles.py)."""
    await _sealed(h)
    before = await _count(h, "integrity_key")
    assert before > 0
    async with h.admin() as conn:
        await conn.execute(text("DELETE FROM integrity_key WHERE kind = 'day'"))
    assert await _count(h, "integrity_key") < before
