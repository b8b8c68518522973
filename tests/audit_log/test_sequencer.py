"""The log position: every committed event gets exactly one gap-free position, in commit
order, never skipping the rows of slower transactions."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import inspect, select, text

from audit_service.audit_log import log
from audit_service.audit_log.context import system_event
from audit_service.audit_log.models import AuditEvent, AuditLeaf
from audit_service.audit_log.repository import insert_events
from audit_service.audit_log.sequencer import no_fence
from audit_service.core.db import create_engine, create_sessionmaker
from audit_service.integrity import merkle, note
from audit_service.integrity import repository as irepo
from audit_service.integrity.entry import build_entry
from audit_service.integrity.jobs import make_sequencer
from audit_service.integrity.service import (
    Checkpointer,
    entry_keys,
    leaf_hashes,
    needed_keys,
    root_at,
)
from tests.conftest import Harness


async def _leaves(h: Harness) -> list[tuple[int, int, bytes]]:
    async with h.app.state.sessionmaker() as s:
        rows = (await s.execute(select(AuditLeaf).order_by(AuditLeaf.position))).scalars()
        return [(r.position, r.event_pk, r.leaf_hash) for r in rows]


async def _event(h: Harness, n: int = 1, **kw: object) -> None:
    async with h.app.state.sessionmaker() as s:
        await insert_events(
            s, [system_event("test.event", "test", f"event {i}", **kw) for i in range(n)]
        )
        await s.commit()


async def test_every_event_once_in_order_with_leaf_hashes_tiles_and_a_checkpoint(
    h: Harness,
) -> None:
    headers = await h.auth()
    for _ in range(3):
        assert (await h.client.get("/me", headers=headers)).status_code == 200
    await _event(h, 600)
    sequencer = make_sequencer()
    done = await sequencer.catch_up(h.app.state.sessionmaker, no_fence)
    events = await h.events()
    assert done.tree_size == len(events) == done.sequenced
    leaves = await _leaves(h)
    assert [p for p, _, _ in leaves] == list(range(len(events)))
    assert sorted(pk for _, pk, _ in leaves) == [e.id for e in events]
    # Each leaf is the v1 entry of its row under the stored keys.
    async with h.app.state.sessionmaker() as s:
        by_pk = {e.id: e for e in events}
        attrs = inspect(AuditEvent).column_attrs
        rows = [
            {a.columns[0].name: getattr(by_pk[pk], a.key) for a in attrs} for _, pk, _ in leaves
        ]
        keys = await irepo.read_keys(s, needed_keys(rows))
        assert [lh for _, _, lh in leaves] == leaf_hashes(rows, keys)
        # The tiles give the same root as the leaves themselves.
        tree = merkle.MemoryTree(lh for _, _, lh in leaves)
        assert await root_at(s, len(leaves)) == tree.root()
        for size in (1, 255, 256, 257, len(leaves) - 1):
            assert await root_at(s, size) == tree.root(size)

    # A second catch-up finds nothing new.
    again = await sequencer.catch_up(h.app.state.sessionmaker, no_fence)
    assert (again.sequenced, again.tree_size) == (0, len(events))

    signer = note.Signer.generate("test-log")
    cp = Checkpointer(signer, "example.test/audit-service/t1")
    async with h.app.state.sessionmaker() as s:
        assert await cp.maybe_sign(s) == len(events)
        await s.commit()
        # Nothing grew, not idle long enough: no new checkpoint.
        assert await cp.maybe_sign(s) is None
        latest = await irepo.latest_checkpoint(s)
    checkpoint, _ = note.open_checkpoint(
        latest.note, [signer.verifier], origin="example.test/audit-service/t1"
    )
    assert (checkpoint.size, checkpoint.root_hash) == (len(events), tree.root())
    assert note.find_cosignatures(latest.note, [cp.cosigners[0].verifier])


async def test_follow_reads_the_log_in_position_order(h: Harness) -> None:
    await _event(h, 5)
    await make_sequencer().catch_up(h.app.state.sessionmaker, no_fence)
    async with h.app.state.sessionmaker() as s:
        first = await log.follow(s, after=-1, limit=3)
        rest = await log.follow(s, after=first[-1].position, limit=100)
    got = first + rest
    assert [f.position for f in got] == list(range(len(got)))
    assert len(first) == 3
    assert [f.event["action"] for f in got if f.event].count("test.event") == 5


async def test_personal_values_only_as_commitments(h: Harness) -> None:
    async with h.app.state.sessionmaker() as s:
        row = system_event("test.event", "test", "x")
        row.update(
            ip="198.51.100.23",
            user_agent="agent/1",
            actor_type="user",
            actor_id="u-42",
            actor_name="Alice Example",
        )
        await insert_events(s, [row])
        await s.commit()
    await make_sequencer().catch_up(h.app.state.sessionmaker, no_fence)
    async with h.app.state.sessionmaker() as s:
        keys = (await s.execute(text("SELECT kind, name FROM integrity_key"))).all()
    assert {("day", datetime.now(UTC).date().isoformat()), ("subject", "user:u-42")} <= {
        tuple(k) for k in keys
    }
    event = (await h.events(action="test.event"))[0]
    attrs = inspect(AuditEvent).column_attrs
    row = {a.columns[0].name: getattr(event, a.key) for a in attrs}
    async with h.app.state.sessionmaker() as s:
        entry = build_entry(row, entry_keys(row, await irepo.read_keys(s, needed_keys([row]))))
    assert b"198.51.100.0/24" in entry
    for personal in (b"198.51.100.23", b"agent/1", b"u-42", b"Alice"):
        assert personal not in entry


@pytest.mark.usefixtures("pg_only_url")
async def test_a_slow_transaction_is_never_skipped(pg_only_url: str) -> None:
    engine = create_engine(pg_only_url)
    sessions = create_sessionmaker(engine)
    sequencer = make_sequencer()
    try:
        slow = await engine.connect()
        trans = await slow.begin()
        # Takes its txid (and its identity value) first...
        await insert_events(slow, [system_event("test.slow", "test", "slow")])
        async with sessions() as s:  # ...then a faster one commits after it.
            await insert_events(s, [system_event("test.fast", "test", "fast")])
            await s.commit()
        r = await sequencer.catch_up(sessions, no_fence)
        # The fast one committed, but its txid is above the open transaction's: it waits.
        assert r.tree_size == 0
        assert r.lag_seconds is not None
        await trans.commit()
        await slow.close()
        r = await sequencer.catch_up(sessions, no_fence)
        async with sessions() as s:
            got = await log.follow(s, after=-1, limit=10)
        assert [f.event["action"] for f in got if f.event] == ["test.slow", "test.fast"]
        assert r.tree_size == 2 and r.lag_seconds is None
    finally:
        await engine.dispose()


async def test_rows_written_before_the_txid_column_are_sequenced_first_by_id(
    pg_only_url: str, pg_admin_url: str
) -> None:
    engine = create_engine(pg_only_url)
    sessions = create_sessionmaker(engine)
    try:
        async with engine.begin() as conn:
            await insert_events(conn, [system_event("test.new", "test", "new")])
            for i in range(3):
                await insert_events(conn, [system_event("test.old", "test", f"old {i}")])
        # As if written before migration 0009: no txid. A rewrite: the superuser, with the
        # append-only triggers off for the transaction.
        admin = create_engine(pg_admin_url)
        try:
            async with admin.begin() as conn:
                await conn.execute(text("SET LOCAL session_replication_role = replica"))
                await conn.execute(
                    text("UPDATE audit_event SET txid = NULL WHERE action = 'test.old'")
                )
        finally:
            await admin.dispose()
        r = await make_sequencer().catch_up(sessions, no_fence)
        async with sessions() as s:
            got = await log.follow(s, after=-1, limit=10)
        assert [f.event["action"] for f in got if f.event] == ["test.old"] * 3 + ["test.new"]
        assert r.tree_size == 4
    finally:
        await engine.dispose()


@pytest.mark.slow
async def test_32_writers_and_a_transaction_held_open_lose_and_duplicate_nothing(
    pg_only_url: str,
) -> None:
    engine = create_engine(pg_only_url, pool_size=40)
    sessions = create_sessionmaker(engine)
    sequencer = make_sequencer()
    stop = asyncio.Event()
    written: list[uuid.UUID] = []

    async def writer(i: int) -> None:
        while not stop.is_set():
            async with sessions() as s:
                rows = [system_event("test.w", "test", f"w{i}") for _ in range(1 + i % 3)]
                await insert_events(s, rows)
                await s.commit()
                written.extend(r["event_id"] for r in rows)
            await asyncio.sleep(0)

    async def held_open() -> None:
        async with engine.connect() as conn, conn.begin():
            row = system_event("test.held", "test", "held 10 s")
            await insert_events(conn, [row])
            await asyncio.sleep(10)
            written.append(row["event_id"])

    async def sequence() -> None:
        while not stop.is_set():
            async with sessions() as s:
                await sequencer.run_round(s, no_fence)
            await asyncio.sleep(0.05)

    try:
        tasks = [asyncio.create_task(writer(i)) for i in range(32)]
        seq = asyncio.create_task(sequence())
        await held_open()
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*tasks, seq)
        r = await sequencer.catch_up(sessions, no_fence)
        async with sessions() as s:
            got = await log.follow(s, after=-1, limit=10_000_000)
        ids = [f.event["event_id"] for f in got if f.event]
        assert [f.position for f in got] == list(range(len(got)))
        assert len(ids) == len(set(ids)) == len(written) == r.tree_size
        assert set(ids) == set(written)
    finally:
        await engine.dispose()


async def test_concurrent_sequencers_append_each_event_once(h: Harness) -> None:
    """Two sequencers at once (a job and a `verify` catching up, or a process that lost its
    lease): the cursor's lock makes the second wait and see the moved cursor. On SQLite,
    where FOR UPDATE means nothing, two rounds used to read the same cursor and both append
    (UNIQUE audit_leaf.event_pk)."""
    sequencer = dataclasses.replace(make_sequencer(), batch_size=7)
    for _ in range(4):
        await _event(h, 30)
        await asyncio.gather(
            *(sequencer.catch_up(h.app.state.sessionmaker, no_fence) for _ in range(4))
        )
    events = await h.events()
    leaves = await _leaves(h)
    assert [p for p, _, _ in leaves] == list(range(len(events)))
    assert sorted(pk for _, pk, _ in leaves) == [e.id for e in events]
