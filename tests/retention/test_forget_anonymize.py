"""Anonymisation: IPs to their /24, user agents to their family, the day key destroyed;
CIDR filters still find the events, a proof fetched before still verifies, `verify` passes
before (full IP against the commitment) and after (the prefix), held days are skipped."""

from __future__ import annotations

import base64

from sqlalchemy import select, text

from audit_service.integrity import merkle, verify
from audit_service.integrity.models import IntegrityCommitment, IntegrityKey
from audit_service.integrity.repository import latest_checkpoint
from audit_service.kit.net import canonical_ip_key
from audit_service.retention.anonymize import run_anonymize
from tests.conftest import Harness
from tests.integrity.helpers import seal
from tests.retention.forget_helpers import NOW, add_events, add_hold, at, row, verify_all

OLD_DAY = at(40).date().isoformat()
HELD_DAY = at(45).date().isoformat()
YOUNG_DAY = at(10).date().isoformat()


async def _day_keys(h: Harness) -> set[str]:
    async with h.app.state.sessionmaker() as session:
        names = (
            await session.scalars(select(IntegrityKey.name).where(IntegrityKey.kind == "day"))
        ).all()
    return set(names)


async def _proof(h: Harness, headers: dict[str, str], event_id: str) -> dict[str, object]:
    r = await h.client.get(f"/admin/integrity/events/{event_id}/proof", headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


async def test_anonymise_keeps_proofs_filters_and_verify(h: Harness) -> None:
    headers = await h.auth()
    old = await add_events(
        h,
        [
            row(at(40, 1)),
            row(at(40, 2), ip="2001:db8:abcd:12::1", user_agent="curl/8.4.0"),
            row(at(40, 3), ip=None),
        ],
    )
    held = await add_events(h, [row(at(45, 1), actor_id="held-user")])
    young = await add_events(h, [row(at(10, 1))])
    await add_hold(h, {"actor": "held-user"})
    await seal(h)
    assert {OLD_DAY, HELD_DAY, YOUNG_DAY} <= await _day_keys(h)
    first = (await h.events(id=old[0]))[0]
    before = await _proof(h, headers, str(first.event_id))

    # Before: verify recomputes the commitment from the full IP; a changed host is found.
    assert (await verify_all(h)).status == "intact"

    report = await run_anonymize(h.app.state.sessionmaker, h.app.state.settings, NOW)
    assert OLD_DAY in report.days and report.events >= 3
    assert report.held_days == [HELD_DAY]
    keys = await _day_keys(h)
    assert OLD_DAY not in keys and HELD_DAY in keys and YOUNG_DAY in keys

    a, b, c = [(await h.events(id=i))[0] for i in old]
    assert (a.ip, a.user_agent) == ("198.51.100.0", "Chrome on Windows")
    assert a.ip_bytes == canonical_ip_key("198.51.100.0")
    assert (b.ip, b.user_agent) == ("2001:db8:abcd::", "curl")
    assert c.ip is None and c.user_agent == "Chrome on Windows"
    assert a.actor_id == "alice"  # anonymisation leaves the actor to erasure
    (h_ev,) = await h.events(id=held[0])
    assert h_ev.ip == "198.51.100.77"  # held day untouched
    (y_ev,) = await h.events(id=young[0])
    assert y_ev.ip == "198.51.100.77"  # not 30 days old yet
    (event,) = await h.events(action="retention.anonymized")
    assert event.event_metadata["days"] == [OLD_DAY] and event.event_metadata["count"] == 3

    # CIDR filters still find them.
    r = await h.client.get(
        "/admin/activity",
        headers=headers,
        params={"ip": "198.51.100.0/24", "since": at(41).isoformat(), "until": at(39).isoformat()},
    )
    assert r.status_code == 200, r.text
    assert [e["event_id"] for e in r.json()["items"]] == [str(a.event_id)]

    # The proof fetched before still verifies against the same signed root, and the proof
    # served now is the same entry and leaf.
    await seal(h)
    after = await _proof(h, headers, str(first.event_id))
    assert after["entry"] == before["entry"] and after["leaf_hash"] == before["leaf_hash"]
    async with h.app.state.sessionmaker() as session:
        checkpoint = await latest_checkpoint(session)
    assert checkpoint is not None
    old_size = int(str(before["tree_size"]))
    leaf = base64.b64decode(str(before["leaf_hash"]))
    hashes = [base64.b64decode(x) for x in before["hashes"]]  # type: ignore[attr-defined]
    old_root = merkle.root_from_inclusion_proof(
        int(str(before["position"])), old_size, leaf, hashes
    )
    async with h.app.state.sessionmaker() as session:
        roots = {
            int(s): bytes(rh)
            for s, rh in (
                await session.execute(text("SELECT tree_size, root_hash FROM integrity_checkpoint"))
            ).all()
        }
    assert roots[old_size] == old_root

    # After: the remaining log verifies with the kept commitments.
    result = await verify_all(h)
    assert result.status == "intact", [p.line() for p in result.problems]
    async with h.app.state.sessionmaker() as session:
        kept = (await session.scalars(select(IntegrityCommitment.event_pk))).all()
    assert set(old) <= set(kept)

    # Rerun: nothing more (the key is gone, the held day still held).
    again = await run_anonymize(h.app.state.sessionmaker, h.app.state.settings, NOW)
    assert again.days == [] and again.held_days == [HELD_DAY]

    # An anonymised address moved inside its /24 (the leaf only has the prefix) is found.
    async with h.admin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
        else:
            await conn.execute(text("INSERT INTO retention_door (opened) VALUES (1)"))
        await conn.execute(
            text("UPDATE audit_event SET ip = '198.51.100.9', ip_bytes = :b WHERE id = :i"),
            {"i": old[0], "b": canonical_ip_key("198.51.100.9")},
        )
        if conn.dialect.name != "postgresql":
            await conn.execute(text("DELETE FROM retention_door"))
    tampered = await verify_all(h)
    assert tampered.status == "tampered"
    assert [p.event_pk for p in tampered.problems if p.kind == verify.MODIFIED] == [old[0]]
