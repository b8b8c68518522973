"""`audit-service verify`, run for real in subprocesses against a log written through the
service and sealed: on PostgreSQL as the read-only verify role (docs/roles.sql), and on the
embedded SQLite default. Exit codes: 0 intact, 1 tampered, 2 cannot verify, 3 usage."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from audit_service.audit_log.context import system_event
from audit_service.audit_log.repository import insert_events
from audit_service.integrity import note
from tests.conftest import (
    LOG_SIGNING_KEY,
    Harness,
    _truncate,
    admin_connection,
    make_settings,
    start_harness,
)
from tests.integrity.helpers import seal
from tests.pg import free_port
from tests.test_cli import _clean_env

harness = asynccontextmanager(start_harness)
VKEY = note.Signer.from_private_key(LOG_SIGNING_KEY).verifier.vkey
OTHER_VKEY = note.Signer.generate("other.audit-service").verifier.vkey


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


async def verify(*args: str, cwd: Path, **env: str) -> Run:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "audit_service.cli",
        "verify",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=_clean_env(**env),
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    run = Run(proc.returncode, out.decode(), err.decode())
    assert "Traceback" not in run.err, run.err
    return run


async def on_pg(verifier_url: str, *args: str, cwd: Path) -> Run:
    return await verify("--database-url", verifier_url, "--vkey", VKEY, *args, cwd=cwd)


async def add_events(h: Harness, n: int, tag: str = "event") -> None:
    rows = [system_event("test.event", "test", f"{tag} {i}", n=i) for i in range(n)]
    async with h.app.state.sessionmaker() as session:
        await insert_events(session, rows)
        await session.commit()


async def event_at(h: Harness, position: int) -> str:
    async with h.app.state.sessionmaker() as session:
        value = await session.scalar(
            text(
                "SELECT e.event_id FROM audit_leaf l JOIN audit_event e ON e.id = l.event_pk "
                "WHERE l.position = :p"
            ),
            {"p": position},
        )
    assert value is not None
    return str(uuid.UUID(str(value)))


async def tamper(h: Harness, *statements: str, **params: int) -> None:
    """As the superuser, with the append-only triggers off for the transaction."""
    async with h.admin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        for statement in statements:
            await conn.execute(text(statement), params)


EDIT_ROW = (
    "UPDATE audit_event SET description = 'edited' "
    "WHERE id = (SELECT event_pk FROM audit_leaf WHERE position = :p)"
)


async def edit_rows(h: Harness, *positions: int) -> None:
    for p in positions:
        await tamper(h, EDIT_ROW, p=p)


def pinned_size(state: Path) -> int:
    checkpoint, _ = note.open_checkpoint(state.read_text(), [note.Verifier.from_vkey(VKEY)])
    return checkpoint.size


@asynccontextmanager
async def sealed_log(url: str, events: int = 20) -> AsyncIterator[Harness]:
    async with harness(make_settings(url)) as h:
        await add_events(h, events)
        await seal(h)
        yield h


@pytest.fixture
async def pg_log(pg_only_url: str) -> AsyncIterator[Harness]:
    async with sealed_log(pg_only_url) as h:
        yield h


async def test_an_untouched_log_is_intact_as_the_read_only_role(
    pg_log: Harness, pg_verifier_url: str, tmp_path: Path
) -> None:
    run = await on_pg(pg_verifier_url, cwd=tmp_path)
    assert run.code == 0, run
    assert "INTACT" in run.out
    assert "1 checkpoint(s), 1 validly signed" in run.out


async def test_json_document(pg_log: Harness, pg_verifier_url: str, tmp_path: Path) -> None:
    run = await on_pg(pg_verifier_url, "--json", cwd=tmp_path)
    assert run.code == 0, run
    doc = run.json()
    size = doc["tree_size"]
    assert size >= 20
    assert doc["status"] == "intact" and doc["reason"] is None
    assert doc["origin"] == "testserver/audit-service/test"
    assert doc["checked"] == size and doc["since"] == 0 and doc["jobs"] == 1
    assert doc["checkpoints"] == doc["valid_checkpoints"] == 1
    assert doc["newest_checkpoint"]["tree_size"] == size
    assert doc["newest_checkpoint"]["note"].startswith("testserver/audit-service/test\n")
    assert doc["problem_count"] == 0 and doc["problems"] == [] and doc["problem_counts"] == {}
    assert doc["problems_truncated"] is False


async def test_an_updated_row_is_tampering_with_its_event_id(
    pg_log: Harness, pg_verifier_url: str, tmp_path: Path
) -> None:
    event_id = await event_at(pg_log, 7)
    await edit_rows(pg_log, 7)

    run = await on_pg(pg_verifier_url, cwd=tmp_path)
    assert run.code == 1, run
    assert "TAMPERED" in run.out and event_id in run.out

    doc = (await on_pg(pg_verifier_url, "--json", cwd=tmp_path)).json()
    assert doc["status"] == "tampered"
    [problem] = doc["problems"]
    assert problem["kind"] == "modified"
    assert problem["position"] == 7 and problem["event_id"] == event_id


async def test_jobs_2_finds_the_same_as_jobs_1(
    pg_log: Harness, pg_verifier_url: str, tmp_path: Path
) -> None:
    await edit_rows(pg_log, 3, 11)
    one = await on_pg(pg_verifier_url, "--json", cwd=tmp_path)
    two = await on_pg(pg_verifier_url, "--json", "--jobs", "2", cwd=tmp_path)
    assert one.code == two.code == 1
    assert two.json()["jobs"] == 2
    assert [p["position"] for p in one.json()["problems"]] == [3, 11]
    assert two.json()["problems"] == one.json()["problems"]


async def test_cannot_verify_an_unreachable_database(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://nobody:secret-pw@127.0.0.1:{free_port()}/audit"
    run = await verify("--database-url", url, "--vkey", VKEY, cwd=tmp_path)
    assert run.code == 2, run
    assert "cannot read the log" in run.err
    assert "secret-pw" not in run.err + run.out


async def test_cannot_verify_without_a_checkpoint(
    pg_only_url: str, pg_verifier_url: str, tmp_path: Path
) -> None:
    async with harness(make_settings(pg_only_url)) as h:
        await add_events(h, 5)
    run = await on_pg(pg_verifier_url, cwd=tmp_path)
    assert run.code == 2, run
    assert "CANNOT VERIFY: there is no signed checkpoint" in run.out


async def test_cannot_verify_with_another_key(
    pg_log: Harness, pg_verifier_url: str, tmp_path: Path
) -> None:
    run = await verify(
        "--database-url", pg_verifier_url, "--vkey", OTHER_VKEY, "--json", cwd=tmp_path
    )
    assert run.code == 2, run
    doc = run.json()
    assert doc["status"] == "unverifiable"
    assert "trusted key" in doc["reason"]
    assert doc["valid_checkpoints"] == 0


async def test_cannot_verify_with_a_malformed_state_file(
    pg_log: Harness, pg_verifier_url: str, tmp_path: Path
) -> None:
    state = tmp_path / "pin"
    state.write_text("not a signed note\n")
    run = await on_pg(pg_verifier_url, "--state", str(state), cwd=tmp_path)
    assert run.code == 2, run
    assert f"--state {state}: the pinned checkpoint is not valid" in run.err
    assert state.read_text() == "not a signed note\n"  # never overwritten by a failed run


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--jobs", "0"], "a number of processes, 1..64"),
        (["--jobs", "many"], "a number of processes, 1..64"),
        (["--since", "abc"], "use a position, checkpoint:ID or state"),
        (["--since", "-1"], "use a position, checkpoint:ID or state"),
    ],
)
async def test_usage_errors_exit_3(tmp_path: Path, args: list[str], message: str) -> None:
    run = await verify("--database-url", "sqlite+aiosqlite:///x.db", *args, cwd=tmp_path)
    assert run.code == 3, run
    assert message in run.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "100000"], "beyond the tree"),
        (["--since", "checkpoint:99"], "no validly signed checkpoint #99"),
        (["--since", "state"], "--since state needs a --state file"),
    ],
)
async def test_usage_errors_against_the_log_exit_3(
    pg_log: Harness, pg_verifier_url: str, tmp_path: Path, args: list[str], message: str
) -> None:
    run = await on_pg(pg_verifier_url, *args, cwd=tmp_path)
    assert run.code == 3, run
    assert message in run.err


@pytest.mark.parametrize(
    "url", ["mysql://u:p@localhost/audit", "postgresql://u@localhost/audit", "not a url"]
)
async def test_a_bad_database_url_is_a_usage_error(url: str, tmp_path: Path) -> None:
    run = await verify("--database-url", url, "--vkey", VKEY, "--json", cwd=tmp_path)
    assert run.code == 3, run
    assert run.json() == {"status": "error", "exit_code": 3, "error": run.json()["error"]}
    assert "--database-url" in run.err


async def test_state_pins_and_then_catches_a_rollback(
    pg_log: Harness, pg_verifier_url: str, tmp_path: Path
) -> None:
    h = pg_log
    state = tmp_path / "pin"
    first = await on_pg(pg_verifier_url, "--state", str(state), cwd=tmp_path)
    assert first.code == 0, first
    cut = pinned_size(state)
    assert f"newest #1 at size {cut}" in first.out

    await add_events(h, 10, "more")
    top = await seal(h)
    second = await on_pg(pg_verifier_url, "--state", str(state), cwd=tmp_path)
    assert second.code == 0, second
    assert pinned_size(state) == top == cut + 10

    # Drop the tail: the last 10 events, their leaves and the checkpoint that covered them.
    await tamper(
        h,
        "DELETE FROM audit_event WHERE id IN (SELECT event_pk FROM audit_leaf "
        "WHERE position >= :cut)",
        "DELETE FROM audit_leaf WHERE position >= :cut",
        "DELETE FROM integrity_checkpoint WHERE tree_size > :cut",
        "UPDATE log_cursor SET next_position = :cut, cursor_id = (SELECT event_pk FROM "
        "audit_leaf WHERE position = :last)",
        cut=cut,
        last=cut - 1,
    )
    # Without the pin the shortened log looks whole: only the pin shows what was lost.
    assert (await on_pg(pg_verifier_url, cwd=tmp_path)).code == 0
    run = await on_pg(pg_verifier_url, "--state", str(state), "--json", cwd=tmp_path)
    assert run.code == 1, run
    kinds = {p["kind"]: p for p in run.json()["problems"]}
    assert kinds["rollback"]["tree_size"] == top
    assert pinned_size(state) == top  # a failed run leaves the pin as it was


async def test_state_catches_a_rewritten_history(
    pg_only_url: str, pg_verifier_url: str, tmp_path: Path
) -> None:
    state = tmp_path / "pin"
    async with sealed_log(pg_only_url):
        assert (await on_pg(pg_verifier_url, "--state", str(state), cwd=tmp_path)).code == 0
    pinned = state.read_text()
    # Someone with the signing key builds another log of the same size and origin.
    await _truncate(pg_only_url)
    async with harness(make_settings(pg_only_url)) as h:
        await add_events(h, 20, "rewritten")
        await seal(h)
    assert (await on_pg(pg_verifier_url, cwd=tmp_path)).code == 0
    run = await on_pg(pg_verifier_url, "--state", str(state), "--json", cwd=tmp_path)
    assert run.code == 1, run
    [problem] = run.json()["problems"]
    assert problem["kind"] == "rewritten_history"
    assert problem["tree_size"] == pinned_size(state) == run.json()["tree_size"]
    assert state.read_text() == pinned


async def test_since_recomputes_only_the_later_rows(
    pg_log: Harness, pg_verifier_url: str, tmp_path: Path
) -> None:
    h = pg_log
    await edit_rows(h, 4)
    run = await on_pg(pg_verifier_url, "--since", "10", "--json", cwd=tmp_path)
    assert run.code == 0, run
    doc = run.json()
    assert doc["since"] == 10 and doc["checked"] == doc["tree_size"] - 10

    assert (await on_pg(pg_verifier_url, "--since", "checkpoint:1", cwd=tmp_path)).code == 0
    assert (await on_pg(pg_verifier_url, "--since", "0", cwd=tmp_path)).code == 1

    # A leaf below --since still feeds the signed root: forging it is still found.
    await tamper(
        h, "UPDATE audit_leaf SET leaf_hash = decode(repeat('ab', 32), 'hex') WHERE position = 2"
    )
    run = await on_pg(pg_verifier_url, "--since", "10", "--json", cwd=tmp_path)
    assert run.code == 1, run
    positions = [p.get("position") for p in run.json()["problems"]]
    assert 2 in positions and 4 not in positions


async def test_the_embedded_sqlite_default(sqlite_template: Path, tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    db = tmp_path / "var" / "audit.db"
    shutil.copy(sqlite_template, db)
    async with sealed_log(f"sqlite+aiosqlite:///{db}"):
        pass
    # No --database-url, no --vkey: DATABASE_URL's default and AUDIT_LOG_SIGNING_KEY's keys.
    run = await verify(cwd=tmp_path, AUDIT_LOG_SIGNING_KEY=LOG_SIGNING_KEY)
    assert run.code == 0, run
    assert "INTACT" in run.out

    async with admin_connection(f"sqlite+aiosqlite:///{db}") as conn:
        await conn.execute(text("DROP TRIGGER audit_event_no_update"))
        await conn.execute(text("UPDATE audit_event SET description = 'edited' WHERE id = 5"))
    run = await verify("--json", cwd=tmp_path, AUDIT_LOG_SIGNING_KEY=LOG_SIGNING_KEY)
    assert run.code == 1, run
    assert [p["event_pk"] for p in run.json()["problems"]] == [5]

    missing = await verify(cwd=tmp_path / "var")
    assert missing.code == 2, missing
    assert "no SQLite database at var/audit.db" in missing.err
