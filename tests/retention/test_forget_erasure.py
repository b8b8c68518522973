"""Data-subject erasure: POST/GET /admin/retention/erasures — the pseudonym everywhere,
proofs and verify still valid, the subject key gone, holds block it, no personal data in
the events about it (both dialects)."""

from __future__ import annotations

import json
import re

from sqlalchemy import select

from audit_service.integrity.models import IntegrityKey
from audit_service.retention.anonymize import run_anonymize
from tests.conftest import Harness
from tests.integrity.helpers import seal
from tests.retention.forget_helpers import NOW, add_events, add_hold, at, row, verify_all

PSEUDONYM = re.compile(r"subject-[0-9a-f]{32}")


async def _subject_keys(h: Harness) -> set[str]:
    async with h.app.state.sessionmaker() as session:
        names = (
            await session.scalars(select(IntegrityKey.name).where(IntegrityKey.kind == "subject"))
        ).all()
    return set(names)


def _row_text(e: object) -> str:
    return json.dumps({c: str(getattr(e, c)) for c in vars(e) if not c.startswith("_")})


async def test_erasure_pseudonymises_the_subject_and_keeps_every_proof(h: Harness) -> None:
    headers = await h.auth()
    alice = await add_events(
        h, [row(at(2, 1)), row(at(5, 2), ip="2001:db8:1:2::3"), row(at(40, 3), user_agent=None)]
    )
    bob = await add_events(h, [row(at(2, 4), actor_id="bob", actor_name="Bob")])
    await seal(h)
    assert {"user:alice", "user:bob"} <= await _subject_keys(h)
    (first,) = await h.events(id=alice[0])
    r = await h.client.get(f"/admin/integrity/events/{first.event_id}/proof", headers=headers)
    assert r.status_code == 200
    before = r.json()

    # The 40-day-old event was anonymised first (its day key is gone): erasure on top.
    anonymized = await run_anonymize(h.app.state.sessionmaker, h.app.state.settings, NOW)
    assert anonymized.days == [at(40).date().isoformat()]
    r = await h.client.post(
        "/admin/retention/erasures",
        headers=headers,
        json={"actor_id": "alice", "reason": "GDPR art. 17 request 2026-118"},
    )
    assert r.status_code == 201, r.text
    out = r.json()
    alias = out["pseudonym"]
    assert PSEUDONYM.fullmatch(alias)
    assert out["events"] == 3 and out["key_destroyed"] is True

    for pk in alice:
        (e,) = await h.events(id=pk)
        assert (e.actor_id, e.actor_name) == (alias, alias)
        assert e.ip in ("198.51.100.0", "2001:db8:1::")
        assert e.user_agent in ("Chrome on Windows", None)
    (b,) = await h.events(id=bob[0])
    assert (b.actor_id, b.actor_name, b.ip) == ("bob", "Bob", "198.51.100.77")
    keys = await _subject_keys(h)
    assert "user:alice" not in keys and "user:bob" in keys

    # No personal data in what was recorded about it.
    await seal(h)
    recorded = await h.events(action="retention.erased") + await h.events(
        action="retention.erasure_requested"
    )
    assert len(recorded) == 2
    for e in recorded:
        text = _row_text(e)
        assert "alice" not in text.lower() and "Alice Example" not in text
        assert alias in json.dumps(e.event_metadata)

    # Proofs and verify.
    r = await h.client.get(f"/admin/integrity/events/{first.event_id}/proof", headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["entry"] == before["entry"] and r.json()["leaf_hash"] == before["leaf_hash"]
    result = await verify_all(h)
    assert result.status == "intact", [p.line() for p in result.problems]

    # Stable: the same subject gets the same pseudonym (nothing left to change).
    r = await h.client.post(
        "/admin/retention/erasures", headers=headers, json={"actor_id": "alice", "reason": "again"}
    )
    assert r.status_code == 201 and r.json()["pseudonym"] == alias and r.json()["events"] == 0

    r = await h.client.get("/admin/retention/erasures", headers=headers)
    assert r.status_code == 200
    assert [i["pseudonym"] for i in r.json()["items"]] == [alias, alias]


async def test_a_hold_blocks_erasure_and_narrowing_keeps_the_key(h: Harness) -> None:
    headers = await h.auth()
    carol = await add_events(h, [row(at(3, 1), actor_id="carol", actor_name="Carol")])
    dave = await add_events(
        h,
        [
            row(at(3, 2), actor_id="dave", actor_name="Dave"),
            row(at(3, 3), actor_id="dave", actor_name="Dave", source="crm"),
        ],
    )
    await add_hold(h, {"actor": "carol"})
    await seal(h)
    r = await h.client.post(
        "/admin/retention/erasures", headers=headers, json={"actor_id": "carol", "reason": "x"}
    )
    assert r.status_code == 409, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    (c,) = await h.events(id=carol[0])
    assert c.actor_id == "carol" and c.ip == "198.51.100.77"

    r = await h.client.post(
        "/admin/retention/erasures",
        headers=headers,
        json={"actor_id": "dave", "source": "lms", "reason": "only the LMS"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["events"] == 1 and r.json()["key_destroyed"] is False
    (lms,) = await h.events(id=dave[0])
    (crm,) = await h.events(id=dave[1])
    assert lms.actor_id == r.json()["pseudonym"] and crm.actor_id == "dave"
    assert "user:dave" in await _subject_keys(h)
    await seal(h)
    result = await verify_all(h)
    assert result.status == "intact", [p.line() for p in result.problems]


async def test_erasure_permissions_and_bad_input(h: Harness) -> None:
    user = await h.auth("someone", role="user")
    auditor = await h.auth("watcher", role="auditor")
    for headers in (user, auditor):
        r = await h.client.post(
            "/admin/retention/erasures", headers=headers, json={"actor_id": "x", "reason": "y"}
        )
        assert r.status_code == 403
        assert (await h.client.get("/admin/retention/erasures", headers=headers)).status_code == 403
    admin = await h.auth()
    for body in (
        {"reason": "y"},
        {"actor_id": "", "reason": "y"},
        {"actor_id": "x", "reason": " "},
        {"actor_id": "x", "reason": "y", "extra": 1},
    ):
        r = await h.client.post("/admin/retention/erasures", headers=admin, json=body)
        assert r.status_code == 422, (body, r.text)
