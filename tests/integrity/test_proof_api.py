"""The proof API: everything a verifier needs over HTTP alone — the signed checkpoint, the
keys that verify it, the tiles to rebuild its root, inclusion proofs (c2sp.org/tlog-proof@v1)
and consistency proofs — each checked here with the RFC 9162 verifiers, not with the
service's own word for it."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from sqlalchemy import text

from audit_service.audit_log.context import system_event
from audit_service.audit_log.repository import insert_events
from audit_service.audit_log.sequencer import no_fence
from audit_service.core.db import create_engine
from audit_service.integrity import merkle, note
from audit_service.integrity.jobs import make_sequencer
from audit_service.integrity.proofs import TLOG_PROOF_V1, format_tlog_proof, parse_tlog_proof
from audit_service.integrity.tiles import Tile, TileHashReader, tiles_for_size
from tests.conftest import LOG_SIGNING_KEY, Harness, make_settings, start_harness
from tests.integrity.helpers import seal

PROBLEM = "application/problem+json"
API = "/admin/integrity"


def b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


async def add_events(h: Harness, n: int) -> list[uuid.UUID]:
    rows = [system_event("test.event", "test", f"event {i}", n=i) for i in range(n)]
    async with h.app.state.sessionmaker() as session:
        await insert_events(session, rows)
        await session.commit()
    return [r["event_id"] for r in rows]


async def event_at(h: Harness, position: int) -> uuid.UUID:
    async with h.app.state.sessionmaker() as session:
        value = await session.scalar(
            text(
                "SELECT e.event_id FROM audit_leaf l JOIN audit_event e ON e.id = l.event_pk "
                "WHERE l.position = :p"
            ),
            {"p": position},
        )
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


async def sequence(h: Harness) -> int:
    done = await make_sequencer().catch_up(h.app.state.sessionmaker, no_fence)
    return done.tree_size


class Verifier:
    """What an outside verifier holds: the vkeys and origin (from GET /vkeys, pinned once)
    and an HTTP client; every hash it uses comes from the API and is checked against a
    signed root."""

    def __init__(self, h: Harness, headers: dict[str, str]) -> None:
        self.h, self.headers = h, headers
        self.verifiers: list[note.Verifier] = []
        self.origin: str | None = None
        self.tiles: dict[Tile, bytes] = {}

    async def get(self, path: str, **params: Any) -> Any:
        r = await self.h.client.get(API + path, params=params, headers=self.headers)
        assert r.status_code == 200, r.text
        return r

    async def pin_keys(self) -> None:
        body = (await self.get("/vkeys")).json()
        self.origin = body["origin"]
        self.verifiers = [note.Verifier.from_vkey(k["vkey"]) for k in body["vkeys"]]

    def open(self, signed: str) -> note.Checkpoint:
        checkpoint, _ = note.open_checkpoint(signed, self.verifiers, origin=self.origin)
        return checkpoint

    async def checkpoint(self) -> tuple[note.Checkpoint, str]:
        signed = (await self.get("/checkpoint")).text
        return self.open(signed), signed

    async def tile(self, tile: Tile) -> bytes:
        r = await self.get("/" + tile.path)
        assert r.headers["content-type"] == "application/octet-stream"
        assert "immutable" in r.headers["cache-control"]
        assert len(r.content) == tile.width * merkle.HASH_SIZE
        return r.content

    async def compute(self, tree_size: int, fn: Any) -> Any:
        """Run a merkle computation over tiles fetched from the API (as with_tiles does
        over the database: fetch what it asked for, run it again)."""

        class Missing(Exception):
            pass

        def read(tiles: Sequence[Tile]) -> list[bytes]:
            if missing := [t for t in tiles if t not in self.tiles]:
                raise Missing(missing)
            return [self.tiles[t] for t in tiles]

        while True:
            try:
                return fn(TileHashReader(tree_size, read))
            except Missing as need:
                for t in need.args[0]:
                    self.tiles[t] = await self.tile(t)


async def verifier(h: Harness, role: str | None = None) -> Verifier:
    v = Verifier(h, await h.auth("carol", "auditor") if role else await h.auth())
    await v.pin_keys()
    return v


async def test_a_verifier_with_only_the_api_rebuilds_the_signed_root_from_the_tiles(
    h: Harness,
) -> None:
    await add_events(h, 600)
    size = await seal(h)
    v = await verifier(h, "auditor")
    assert v.origin == "testserver/audit-service/test"
    assert [k.sig_type for k in v.verifiers] == [note.ED25519, note.COSIGNATURE_V1]
    r = await v.get("/checkpoint")
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["cache-control"] == "private, no-cache"
    checkpoint = v.open(r.text)
    assert checkpoint.size == size > 512
    # The timestamped cosignature verifies with the 0x04 key too.
    assert set(note.find_cosignatures(r.text, v.verifiers)) == {v.verifiers[1].vkey}
    root = await v.compute(size, lambda src: merkle.root_hash(src, size))
    assert root == checkpoint.root_hash
    # Every tile of the tree is served, and level 0 holds exactly the stored leaf hashes.
    for tile in tiles_for_size(size):
        await v.tile(tile)
    async with h.app.state.sessionmaker() as session:
        leaves = [
            bytes(row[0])
            for row in await session.execute(
                text("SELECT leaf_hash FROM audit_leaf ORDER BY position LIMIT 256")
            )
        ]
    assert (await v.tile(Tile(0, 0))) == b"".join(leaves)


async def test_inclusion_proofs_verify_against_the_signed_checkpoint(h: Harness) -> None:
    headers = await h.auth()
    assert (await h.client.get("/me", headers=headers)).status_code == 200
    ids = await add_events(h, 300)
    size = await seal(h)
    v = await verifier(h)
    checkpoint, signed = await v.checkpoint()
    login = (await h.events(action="auth.login"))[0]
    # First (the bootstrap admin's creation), a real request's event (IP, user agent and
    # actor committed with keys), an event in the second tile, and the last one signed.
    wanted = [await event_at(h, 0), login.event_id, ids[280], await event_at(h, size - 1)]
    positions = []
    for event_id in wanted:
        body = (await v.get(f"/events/{event_id}/proof")).json()
        assert body["event_id"] == str(event_id)
        assert body["tree_size"] == size and body["checkpoint"] == signed
        entry = b64(body["entry"])
        leaf = merkle.leaf_hash(entry)
        assert leaf == b64(body["leaf_hash"])
        fields = json.loads(entry)
        assert (fields[0], fields[2]) == ("audit/v1", str(event_id))
        hashes = [b64(x) for x in body["hashes"]]
        merkle.verify_inclusion(body["position"], size, leaf, hashes, checkpoint.root_hash)
        # The same proof, computed by the verifier from the tiles.
        assert hashes == await v.compute(
            size, lambda src, p=body["position"]: merkle.inclusion_proof(src, p, size)
        )
        # The tlog-proof text carries the same facts, the entry as its extra data.
        proof = parse_tlog_proof(body["proof"])
        assert (proof.index, proof.hashes, proof.checkpoint, proof.extra) == (
            body["position"],
            hashes,
            signed,
            entry,
        )
        # /admin/activity/{id} shows the same position.
        r = await h.client.get(f"/admin/activity/{event_id}", headers=v.headers)
        assert r.json()["log_position"] == body["position"]
        positions.append(body["position"])
    assert positions[0] == 0 and positions[-1] == size - 1
    # A wrong leaf or another root fails verification.
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(0, size, merkle.leaf_hash(b"forged"), [], checkpoint.root_hash)
    login_entry = json.loads(b64((await v.get(f"/events/{login.event_id}/proof")).json()["entry"]))
    assert login.ip is not None and login.ip not in json.dumps(login_entry)


async def test_size_picks_the_first_checkpoint_holding_that_many_events(h: Harness) -> None:
    ids = await add_events(h, 40)
    first = await seal(h)
    await add_events(h, 40)
    second = await seal(h)
    v = await verifier(h)
    checkpoints = {}
    for size in (first, second):
        r = await h.client.get(
            f"{API}/consistency", params={"old": 0, "new": size}, headers=v.headers
        )
        checkpoints[size] = v.open(r.json()["checkpoint"])
    event = ids[10]
    for asked, expected in ((None, second), (first, first), (20, first), (first + 1, second)):
        params = {} if asked is None else {"size": asked}
        body = (await v.get(f"/events/{event}/proof", **params)).json()
        assert body["tree_size"] == expected, asked
        merkle.verify_inclusion(
            body["position"],
            expected,
            b64(body["leaf_hash"]),
            [b64(x) for x in body["hashes"]],
            checkpoints[expected].root_hash,
        )
    position = body["position"]
    # Trees too small to hold the event, and trees beyond the log.
    await add_events(h, 5)
    tree = await sequence(h)
    for bad in (position, 0, -1, tree + 1, 2**63, "x"):
        r = await h.client.get(f"{API}/events/{event}/proof?size={bad}", headers=v.headers)
        assert r.status_code == 422, (bad, r.text)
        assert r.headers["content-type"] == PROBLEM
        assert r.json()["errors"][0]["loc"] == ["query", "size"]
    # Sequenced but not signed yet: a clear 409 to retry.
    r = await h.client.get(f"{API}/events/{event}/proof?size={tree}", headers=v.headers)
    assert r.status_code == 409
    assert r.json()["title"] == "Event not yet in a signed checkpoint"
    assert r.headers["retry-after"] == "1"


async def test_events_that_are_unknown_unsequenced_or_unsigned_get_clear_answers(
    h: Harness,
) -> None:
    headers = await h.auth()
    [early] = await add_events(h, 1)
    await seal(h)
    [late] = await add_events(h, 1)
    url = f"{API}/events/{late}/proof"
    r = await h.client.get(url, headers=headers)
    assert (r.status_code, r.headers["content-type"]) == (409, PROBLEM)
    assert r.json()["title"] == "Event not yet sequenced"
    assert r.headers["retry-after"] == "1"
    r = await h.client.get(f"/admin/activity/{late}", headers=headers)
    assert r.json()["log_position"] is None
    await sequence(h)
    r = await h.client.get(url, headers=headers)
    assert r.status_code == 409
    assert r.json()["title"] == "Event not yet in a signed checkpoint"
    r = await h.client.get(f"/admin/activity/{late}", headers=headers)
    assert isinstance(r.json()["log_position"], int)
    await seal(h)
    assert (await h.client.get(url, headers=headers)).status_code == 200
    r = await h.client.get(f"{API}/events/{uuid.uuid4()}/proof", headers=headers)
    assert (r.status_code, r.json()["title"]) == (404, "Not Found")
    for bad in ("not-a-uuid", "1", f"{early}x"):
        r = await h.client.get(f"{API}/events/{bad}/proof", headers=headers)
        assert (r.status_code, r.headers["content-type"]) == (422, PROBLEM), bad
    # A typo in a parameter is refused, not silently ignored.
    r = await h.client.get(f"{API}/events/{early}/proof?sise=1", headers=headers)
    assert r.status_code == 422


async def test_consistency_proofs_verify_between_signed_checkpoints(h: Harness) -> None:
    v = await verifier(h)
    r = await h.client.get(f"{API}/consistency?old=0", headers=v.headers)
    assert (r.status_code, r.headers["content-type"]) == (503, PROBLEM)
    await add_events(h, 300)
    old_size = await seal(h)
    old_cp, _ = await v.checkpoint()
    await add_events(h, 700)
    new_size = await seal(h)
    new_cp, new_signed = await v.checkpoint()
    for params in ({"old": old_size, "new": new_size}, {"old": old_size}):
        body = (await v.get("/consistency", **params)).json()
        assert (body["old_size"], body["new_size"]) == (old_size, new_size)
        assert body["checkpoint"] == new_signed
        hashes = [b64(x) for x in body["hashes"]]
        merkle.verify_consistency(old_size, new_size, old_cp.root_hash, new_cp.root_hash, hashes)
        assert hashes == await v.compute(
            new_size, lambda src: merkle.consistency_proof(src, old_size, new_size)
        )
    # A rewritten old tree would not be consistent.
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(old_size, new_size, new_cp.root_hash, new_cp.root_hash, hashes)
    for params in ({"old": 0, "new": new_size}, {"old": new_size, "new": new_size}):
        body = (await v.get("/consistency", **params)).json()
        assert body["hashes"] == []
    # A size that was never signed has no checkpoint, but the proof is still served.
    body = (await v.get("/consistency", old=old_size, new=old_size + 1)).json()
    assert body["checkpoint"] is None and body["hashes"]
    tree = await sequence(h)
    for params, field in (
        ({"old": new_size, "new": old_size}, "old"),
        ({"old": tree + 1}, "old"),
        ({"old": -1, "new": 1}, "old"),
        ({"old": 1, "new": -1}, "new"),
        ({"old": 1, "new": tree + 1}, "new"),
        ({"old": 1, "new": 2**63}, "new"),
        ({"new": 1}, "old"),
        ({"old": "one"}, "old"),
    ):
        r = await h.client.get(f"{API}/consistency", params=params, headers=v.headers)
        assert (r.status_code, r.headers["content-type"]) == (422, PROBLEM), params
        assert r.json()["errors"][0]["loc"] == ["query", field], params


async def test_checkpoint_is_503_with_retry_after_until_one_is_signed(h: Harness) -> None:
    headers = await h.auth()
    r = await h.client.get(f"{API}/checkpoint", headers=headers)
    assert (r.status_code, r.headers["content-type"]) == (503, PROBLEM)
    assert r.json()["title"] == "No checkpoint signed yet"
    assert r.headers["retry-after"] == "1"
    # The keys are known before anything is signed.
    body = (await h.client.get(f"{API}/vkeys", headers=headers)).json()
    assert body["origin"] == "testserver/audit-service/test" and len(body["vkeys"]) == 2
    assert [k["type"] for k in body["vkeys"]] == ["ed25519", "cosignature/v1"]
    for k in body["vkeys"]:
        verifier = note.Verifier.from_vkey(k["vkey"])
        assert (verifier.name, f"{verifier.key_id:08x}") == (k["name"], k["key_id"])


async def test_while_keys_rotate_vkeys_lists_every_key_and_each_verifies(db_url: str) -> None:
    new_key = note.Signer.generate("test2.audit-service")
    settings = make_settings(db_url, log_signing_key=f"{new_key.private_key}\n{LOG_SIGNING_KEY}")
    async for h in start_harness(settings):
        await seal(h)
        headers = await h.auth()
        body = (await h.client.get(f"{API}/vkeys", headers=headers)).json()
        names = [(k["name"], k["type"]) for k in body["vkeys"]]
        assert names == [
            ("test2.audit-service", "ed25519"),
            ("test.audit-service", "ed25519"),
            ("test2.audit-service", "cosignature/v1"),
            ("test.audit-service", "cosignature/v1"),
        ]
        signed = (await h.client.get(f"{API}/checkpoint", headers=headers)).text
        for vkey in body["vkeys"][:2]:
            note.open_checkpoint(signed, [note.Verifier.from_vkey(vkey["vkey"])])
        cosigners = [note.Verifier.from_vkey(k["vkey"]) for k in body["vkeys"][2:]]
        assert len(note.find_cosignatures(signed, cosigners)) == 2


async def test_tiles_are_served_exactly_and_bad_paths_are_refused(h: Harness) -> None:
    headers = await h.auth()
    await add_events(h, 300)
    size = await seal(h)  # one full level-0 tile, a partial one, a partial level-1 tile
    width = size - 256

    async def get(path: str) -> Any:
        return await h.client.get(f"{API}/tile/{path}", headers=headers)

    full = (await get("0/000")).content
    assert len(full) == 8192
    # An index beyond any bigint (schemathesis found it): a 404, not a 500.
    huge = await get("0/x928/x170/x221/x292/x055/x999/x804/x701/x935/x003/x085/971")
    assert huge.status_code == 404
    assert huge.headers["content-type"] == "application/problem+json"
    # Older widths of a tile are prefixes of it: of the full tile as of the partial one.
    assert (await get("0/000.p/5")).content == full[: 5 * 32]
    partial = (await get(f"0/001.p/{width}")).content
    assert len(partial) == width * 32
    assert (await get("0/001.p/1")).content == partial[:32]
    assert len((await get("1/000.p/1")).content) == 32
    for path, status in (
        (f"0/001.p/{width + 1}", 404),  # wider than the log has
        ("0/001", 404),  # not full yet
        ("0/002.p/1", 404),
        ("5/000", 404),
        ("63/x999/999", 404),
        ("entries/000", 404),  # entry bundles are not served
        ("entries/000.p/3", 404),
        ("0/1", 400),
        ("00/000", 400),
        ("64/000", 400),
        ("0/000.p/0", 400),
        ("0/000.p/256", 400),
        ("0/000.p/05", 400),
        ("0/x000/001", 400),
        ("0/001/000", 400),
        ("0/", 400),
        ("0", 400),
        ("x/000", 400),
        ("0/ab3", 400),
        ("0/%C3%A9", 400),
        ("0/" + "x001/" * 60 + "000", 422),  # longer than any real path
    ):
        r = await get(path)
        assert (r.status_code, r.headers["content-type"]) == (status, PROBLEM), (path, r.text)
    r = await get("entries/000")
    assert "not served" in r.json()["detail"]


async def test_every_route_needs_admin_or_auditor_and_is_recorded(h: Harness) -> None:
    [event] = await add_events(h, 1)
    await seal(h)
    routes = {
        "/checkpoint": "integrity.checkpoint_viewed",
        "/vkeys": "integrity.vkeys_viewed",
        "/tile/0/000.p/1": "integrity.tile_viewed",
        f"/events/{event}/proof": "integrity.inclusion_proof_viewed",
        "/consistency?old=1": "integrity.consistency_proof_viewed",
    }
    user = await h.auth("bob", "user")
    auditor = await h.auth("carol", "auditor")
    admin = await h.auth()
    answers: dict[str, Any] = {}
    for path, action in routes.items():
        r = await h.client.get(API + path)
        assert (r.status_code, r.headers["content-type"]) == (401, PROBLEM), path
        r = await h.client.get(API + path, headers=user)
        assert (r.status_code, r.headers["content-type"]) == (403, PROBLEM), path
        for headers in (auditor, admin):
            r = await h.client.get(API + path, headers=headers)
            assert r.status_code == 200, (path, r.text)
            answers[path] = r
        recorded = await h.events(action=action)
        assert [(e.outcome, e.actor_name) for e in recorded] == [
            ("denied", None),
            ("denied", "bob"),
            ("success", "carol"),
            ("success", "admin"),
        ], path
        assert all(e.module == "integrity" for e in recorded)
    [proof_event] = [
        e
        for e in await h.events(action="integrity.inclusion_proof_viewed")
        if e.actor_name == "admin"
    ]
    assert (proof_event.target_type, proof_event.target_id) == ("audit_event", str(event))
    proved = answers[f"/events/{event}/proof"].json()
    assert proof_event.event_metadata["position"] == proved["position"]
    assert proof_event.event_metadata["tree_size"] == proved["tree_size"]
    [tile_event] = [
        e for e in await h.events(action="integrity.tile_viewed") if e.actor_name == "admin"
    ]
    assert tile_event.target_id == "tile/0/000.p/1"
    # Failures are recorded too, with what was asked.
    r = await h.client.get(f"{API}/consistency?old=5&new=1", headers=admin)
    assert r.status_code == 422
    failed = (await h.events(action="integrity.consistency_proof_viewed"))[-1]
    assert failed.outcome == "failure"


# --- tampering (PostgreSQL: the log tables refuse rewrites, the owner switches that off) ----


@pytest.fixture
async def pg(pg_only_url: str) -> AsyncIterator[Harness]:
    async for harness in start_harness(make_settings(pg_only_url)):
        yield harness


async def tamper(url: str, sql: str, **params: Any) -> None:
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(text(sql), params)
    await engine.dispose()


async def test_an_edited_row_is_refused_as_not_matching_its_leaf(
    pg: Harness, pg_admin_url: str
) -> None:
    ids = await add_events(pg, 3)
    await seal(pg)
    headers = await pg.auth()
    await tamper(
        pg_admin_url,
        "UPDATE audit_event SET description = 'nothing happened' WHERE event_id = :e",
        e=ids[1],
    )
    r = await pg.client.get(f"{API}/events/{ids[1]}/proof", headers=headers)
    assert (r.status_code, r.headers["content-type"]) == (409, PROBLEM)
    assert r.json()["title"] == "Entry does not match its leaf"
    assert (await pg.client.get(f"{API}/events/{ids[0]}/proof", headers=headers)).status_code == 200


async def test_a_forged_tile_is_refused_instead_of_served_as_a_proof(
    pg: Harness, pg_admin_url: str
) -> None:
    ids = await add_events(pg, 8)
    await seal(pg)
    headers = await pg.auth()
    # Position 4's proof needs the hash of leaf 5: replace it in the level-0 tile.
    await tamper(
        pg_admin_url,
        "UPDATE integrity_tile SET data = overlay(data placing :h from 161 for 32) "
        "WHERE level = 0 AND idx = 0",
        h=b"\x00" * 32,
    )
    r = await pg.client.get(f"{API}/events/{ids[3]}/proof", headers=headers)
    assert (r.status_code, r.headers["content-type"]) == (409, PROBLEM)
    assert r.json()["title"] == "Stored tree does not match its checkpoint"


# --- the tlog-proof format ------------------------------------------------------------------

# The example of c2sp.org/tlog-proof (signatures abbreviated there; the checkpoint is kept
# as text, so they do not matter to the parser).
SPEC_EXAMPLE = """c2sp.org/tlog-proof@v1
extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ
index 73894
gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=
B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=
EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=
RoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=
AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=

example.com/fancylog
109482
sFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=

— example.com/fancylog hI2DJw[...]1roloI=
"""


def test_tlog_proof_spec_example_parses_and_round_trips() -> None:
    proof = parse_tlog_proof(SPEC_EXAMPLE)
    assert proof.index == 73894 and len(proof.hashes) == 5
    assert proof.extra is not None and proof.extra.startswith(b"age-v1.2.1-darwin-arm64.tar.gz")
    assert proof.checkpoint.startswith("example.com/fancylog\n109482\n")
    assert format_tlog_proof(proof.index, proof.hashes, proof.checkpoint, proof.extra) == (
        SPEC_EXAMPLE
    )
    # Without extra data, and with an empty path (a tree of one leaf).
    text_ = format_tlog_proof(0, [], "log\n1\nAAAA\n\n— log sig\n")
    assert text_ == f"{TLOG_PROOF_V1}\nindex 0\n\nlog\n1\nAAAA\n\n— log sig\n"
    assert parse_tlog_proof(text_).hashes == []


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s.replace("c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2"),
        lambda s: s.replace("index 73894", "index 073894"),
        lambda s: s.replace("index 73894", "index -1"),
        lambda s: s.replace("index 73894\n", ""),
        lambda s: s.replace("extra YWdl", "extra !Wdl"),
        lambda s: s.replace("gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=", "gSKy"),
        lambda s: s.replace("PlQ=", "PlR="),  # non-canonical padding bits
        lambda s: s.split("\n\n")[0],
        lambda s: s.split("\n\n")[0] + "\n\n",
    ],
)
def test_malformed_tlog_proofs_are_refused(mangle: Any) -> None:
    with pytest.raises(ValueError):
        parse_tlog_proof(mangle(SPEC_EXAMPLE))
