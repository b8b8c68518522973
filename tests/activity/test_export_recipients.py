"""Export recipients (age X25519 public keys registered by an admin) and exports encrypted to
them: every format decrypts with the recipient's real age identity, and the export event
names the key it was encrypted to."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from typing import Any

import pyrage
from openpyxl import load_workbook

from audit_service.integrity.bundle import verify_bundle
from audit_service.integrity.jobs import log_signer
from tests.activity.test_cursor_export import seed
from tests.conftest import Harness
from tests.integrity.helpers import seal


def _key() -> tuple[Any, str]:
    identity = pyrage.x25519.Identity.generate()
    return identity, str(identity.to_public())


async def _register(h: Harness, headers: dict[str, str], name: str, key: str) -> Any:
    return await h.client.post(
        "/admin/export-recipients", json={"name": name, "public_key": key}, headers=headers
    )


async def test_who_may_manage_and_see_recipients(h: Harness) -> None:
    _, key = _key()
    body = {"name": "x", "public_key": key}
    assert (await h.client.get("/admin/export-recipients")).status_code == 401
    assert (await h.client.post("/admin/export-recipients", json=body)).status_code == 401
    user = await h.auth("bob", role="user")
    auditor = await h.auth("ann", role="auditor")
    assert (await h.client.get("/admin/export-recipients", headers=user)).status_code == 403
    assert (await _register(h, auditor, "x", key)).status_code == 403
    assert (await h.client.delete("/admin/export-recipients/1", headers=auditor)).status_code == 403
    # Auditors export, so they may see which recipients exist.
    listed = await h.client.get("/admin/export-recipients", headers=auditor)
    assert listed.status_code == 200 and listed.json() == {"items": []}
    event = await h.last_event()
    assert (event.action, event.actor_name) == ("export_recipient.listed", "ann")


async def test_register_list_and_delete_record_config_changes(h: Harness) -> None:
    admin = await h.auth()
    _, key = _key()
    r = await _register(h, admin, "  External auditor  ", key)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["name"] == "External auditor" and created["public_key"] == key
    assert created["fingerprint"] == "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    assert created["created_by"] == "admin"
    event = await h.last_event()
    assert (event.action, event.outcome, event.target_type, event.target_id) == (
        "config.changed",
        "success",
        "export_recipient",
        str(created["id"]),
    )
    assert event.event_metadata["before"] is None
    assert event.event_metadata["after"]["fingerprint"] == created["fingerprint"]

    # The same key again (any spelling age accepts) is a conflict naming the existing one.
    again = await _register(h, admin, "someone else", key.upper())
    assert again.status_code == 409
    assert f"recipient {created['id']}" in again.json()["detail"]
    assert (await h.last_event()).outcome == "failure"

    listed = (await h.client.get("/admin/export-recipients", headers=admin)).json()["items"]
    assert [x["id"] for x in listed] == [created["id"]]

    gone = await h.client.delete(f"/admin/export-recipients/{created['id']}", headers=admin)
    assert gone.status_code == 204
    event = await h.last_event()
    assert event.action == "config.changed" and event.event_metadata["after"] is None
    assert event.event_metadata["before"]["public_key"] == key
    missing = await h.client.delete(f"/admin/export-recipients/{created['id']}", headers=admin)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert (await h.client.get("/admin/export-recipients", headers=admin)).json()["items"] == []


async def test_bad_recipients_are_422(h: Harness) -> None:
    admin = await h.auth()
    _, key = _key()
    for body in (
        {"name": "x", "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG"},
        {"name": "x", "public_key": key[:-1] + ("q" if key[-1] != "q" else "p")},
        {"name": "x", "public_key": "age1"},
        {"name": "   ", "public_key": key},
        {"name": "x" * 201, "public_key": key},
        {"name": "x", "public_key": key, "private_key": "AGE-SECRET-KEY-1"},
        {"public_key": key},
    ):
        r = await h.client.post("/admin/export-recipients", json=body, headers=admin)
        assert r.status_code == 422, body
        assert r.headers["content-type"] == "application/problem+json"
    for bad in ("0", "-1", "abc", str(2**31)):
        r = await h.client.delete(f"/admin/export-recipients/{bad}", headers=admin)
        assert r.status_code == 422, bad


async def _encrypted_export(
    h: Harness, headers: dict[str, str], recipient: int, params: str
) -> Any:
    r = await h.client.get(
        f"/admin/activity/export?{params}&recipient={recipient}", headers=headers
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"].endswith('.age"')
    assert r.content.startswith(b"age-encryption.org/v1\n")
    return r


async def test_every_export_format_decrypts_with_the_recipients_identity(h: Harness) -> None:
    admin = await h.auth()
    identity, key = _key()
    recipient = (await _register(h, admin, "auditor", key)).json()
    await seed(h, 30, description="secret-looking text")
    await seal(h)

    r = await _encrypted_export(h, admin, recipient["id"], "action=seed.event&format=csv")
    assert b"secret-looking text" not in r.content
    plain = pyrage.decrypt(r.content, [identity]).decode()
    rows = list(csv.DictReader(io.StringIO(plain)))
    assert len(rows) == 30 and rows[0]["description"] == "secret-looking text"
    assert r.headers["content-disposition"].endswith('.csv.age"')
    event = await h.last_event()
    assert event.event_metadata["recipient_id"] == recipient["id"]
    assert event.event_metadata["recipient_fingerprint"] == recipient["fingerprint"]
    assert "encrypted to recipient" in (event.description or "")

    r = await _encrypted_export(h, admin, recipient["id"], "action=seed.event&format=csv&gzip=true")
    assert r.headers["content-disposition"].endswith('.csv.gz.age"')
    assert gzip.decompress(pyrage.decrypt(r.content, [identity])).count(b"\n") == 31

    r = await _encrypted_export(h, admin, recipient["id"], "action=seed.event&format=json")
    assert json.loads(pyrage.decrypt(r.content, [identity]))["export"]["row_count"] == 30

    r = await _encrypted_export(h, admin, recipient["id"], "action=seed.event&format=ndjson")
    assert len(pyrage.decrypt(r.content, [identity]).splitlines()) == 30

    r = await _encrypted_export(h, admin, recipient["id"], "action=seed.event&format=xlsx")
    book = load_workbook(io.BytesIO(pyrage.decrypt(r.content, [identity])))
    assert book["events"].max_row == 31

    r = await _encrypted_export(h, admin, recipient["id"], "action=seed.event&format=bundle")
    assert r.headers["content-disposition"].endswith('.tar.age"')
    tar = pyrage.decrypt(r.content, [identity])
    report = verify_bundle(io.BytesIO(tar), [log_signer(h.app.state.settings).verifier])
    assert report.ok, report.problems
    assert report.facts["events"] == 30

    # Anyone else's identity decrypts nothing.
    try:
        pyrage.decrypt(r.content, [pyrage.x25519.Identity.generate()])
    except pyrage.DecryptError:
        pass
    else:
        raise AssertionError("decrypted with a stranger's identity")


async def test_an_unknown_recipient_is_422_and_recorded(h: Harness) -> None:
    admin = await h.auth()
    r = await h.client.get("/admin/activity/export?format=csv&recipient=99", headers=admin)
    assert r.status_code == 422
    problem = r.json()
    assert problem["errors"][0]["loc"] == ["query", "recipient"]
    assert "No export recipient with id 99" in problem["detail"]
    event = await h.last_event()
    assert (event.action, event.status_code) == ("activity.exported", 422)
