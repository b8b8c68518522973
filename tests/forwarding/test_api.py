"""/admin/forwarding/destinations: admin only, every change a `config.changed` event with
before/after, secrets write-only (never in responses, events or logs), and problem+json 422
for every bad input the issue names."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from audit_service.audit_log.models import AuditEvent
from audit_service.kit.webhooks import new_secret
from audit_service.main import background_jobs
from tests.conftest import Harness, make_settings
from tests.forwarding.conftest import FORWARD, admin, create, deliver, harness_with, record, until
from tests.forwarding.receivers import HecEmulator, WebhookReceiver

BASE = "/admin/forwarding/destinations"


def _hook(url: str = "https://siem.example.com/hook", **extra: Any) -> dict[str, Any]:
    return {"name": "siem", "kind": "webhook", "config": {"url": url}, **extra}


async def test_only_admins(h: Harness) -> None:
    r = await h.client.get(BASE)
    assert r.status_code == 401
    user = await h.auth("auditor1", role="auditor")
    for method, path in (
        ("GET", BASE),
        ("POST", BASE),
        ("GET", f"{BASE}/1"),
        ("GET", f"{BASE}/1/status"),
        ("POST", f"{BASE}/1/test"),
        ("POST", f"{BASE}/1/replays"),
        ("GET", f"{BASE}/1/dead-letters"),
    ):
        r = await h.client.request(method, path, headers=user, json=_hook())
        assert r.status_code == 403, (method, path, r.text)
        assert r.headers["content-type"] == "application/problem+json"


async def test_crud_records_config_changed_with_before_and_after_and_no_secret(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="audit_service")
    secret = new_secret()
    r = await h.client.post(
        BASE,
        headers=await admin(h),
        json=_hook(secrets={"webhook_secrets": [secret]}, filter={"actions": ["auth.*"]}),
    )
    assert r.status_code == 201, r.text
    d = r.json()
    assert d["secret_set"] is True and d["secrets_count"] == 1 and d["generated_secret"] is None
    assert d["filter"] == {"actions": ["auth.*"]} and d["format"] == "native"
    second = new_secret()
    r = await h.client.patch(
        f"{BASE}/{d['id']}",
        headers=await admin(h),
        json={"secrets": {"webhook_secrets": [secret, second]}, "format": "ecs"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["secrets_count"] == 2 and r.json()["format"] == "ecs"
    for path in (BASE, f"{BASE}/{d['id']}", f"{BASE}/{d['id']}/status"):
        r = await h.client.get(path, headers=await admin(h))
        assert r.status_code == 200
        assert secret not in r.text and second not in r.text
    r = await h.client.delete(f"{BASE}/{d['id']}", headers=await admin(h))
    assert r.status_code == 204
    assert (await h.client.get(f"{BASE}/{d['id']}", headers=await admin(h))).status_code == 404
    changes = await h.events(action="config.changed", module="forwarding")
    assert len(changes) == 3
    created, changed, deleted = (e.event_metadata for e in changes)
    assert created["before"] is None and created["after"]["name"] == "siem"
    assert changed["before"]["format"] == "native" and changed["after"]["format"] == "ecs"
    assert deleted["after"] is None
    everything = " ".join(str(e.event_metadata) + str(e.description) for e in await h.events())
    assert secret not in everything and second not in everything
    assert secret not in caplog.text and second not in caplog.text


async def test_a_generated_secret_is_shown_once(h: Harness) -> None:
    r = await h.client.post(BASE, headers=await admin(h), json=_hook())
    generated = r.json()["generated_secret"]
    assert generated.startswith("whsec_")
    r = await h.client.get(f"{BASE}/{r.json()['id']}", headers=await admin(h))
    assert generated not in r.text and r.json()["secret_set"] is True


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "kind": "email", "config": {"url": "https://a.example/"}},
        {"name": "x", "kind": "webhook", "format": "xml", "config": {"url": "https://a.example/"}},
        {"name": "x", "kind": "webhook", "config": {"url": "https:///nohost"}},
        {"name": "x", "kind": "webhook", "config": {"url": "ftp://a.example/"}},
        {"name": "x", "kind": "webhook", "config": {"url": "https://u:p@a.example/"}},
        {"name": "x", "kind": "webhook", "config": {"url": "https://a.example:99999/"}},
        {"name": "x", "kind": "webhook", "config": {"url": "http://a.example/"}},
        {"name": "x", "kind": "webhook", "config": {"url": "https://10.1.2.3/"}},
        {"name": "x", "kind": "webhook", "config": {"url": "https://[::1]/"}},
        {"name": "x", "kind": "webhook", "config": {}},
        {"name": "x", "kind": "webhook", "config": {"url": "https://a.example/", "port": 1}},
        {"name": "x", "kind": "webhook", "config": {"url": "https://a.example/", "nope": 1}},
        {
            "name": "x",
            "kind": "webhook",
            "config": {"url": "https://a.example/", "headers": {"Authorization": "x"}},
        },
        {
            "name": "x",
            "kind": "webhook",
            "config": {"url": "https://a.example/"},
            "filter": {"actor": "alice"},
        },
        {
            "name": "x",
            "kind": "webhook",
            "config": {"url": "https://a.example/"},
            "filter": {"outcomes": ["maybe"]},
        },
        {
            "name": "x",
            "kind": "webhook",
            "config": {"url": "https://a.example/"},
            "secrets": {"webhook_secrets": ["not-a-secret"]},
        },
        {
            "name": "x",
            "kind": "webhook",
            "config": {"url": "https://a.example/"},
            "secrets": {"webhook_secrets": [new_secret(), new_secret(), new_secret()]},
        },
        {"name": "x", "kind": "splunk_hec", "config": {"url": "https://hec.example/"}},
        {"name": "x", "kind": "syslog", "config": {"host": "siem.example"}},
        {"name": "x", "kind": "syslog", "config": {"host": "siem.example", "port": 0}},
        {
            "name": "x",
            "kind": "syslog",
            "config": {"host": "siem.example", "port": 6514, "transport": "sctp"},
        },
        {"name": " ", "kind": "webhook", "config": {"url": "https://a.example/"}},
        {"name": "x", "kind": "webhook", "config": {"url": "https://a.example/"}, "start": "now"},
    ],
)
async def test_bad_input_is_a_problem_422(h: Harness, body: dict[str, Any]) -> None:
    r = await h.client.post(BASE, headers=await admin(h), json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"]


async def test_an_unparsable_ca_file_is_422(h: Harness, tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    for ca in (str(bad), str(tmp_path / "missing.pem")):
        r = await h.client.post(
            BASE,
            headers=await admin(h),
            json={
                "name": "sys",
                "kind": "syslog",
                "config": {"host": "siem.example", "port": 6514, "ca_file": ca},
            },
        )
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["loc"] == ["body", "config", "ca_file"]


async def test_names_are_unique_and_patch_validates_the_merged_config(h: Harness) -> None:
    r = await h.client.post(BASE, headers=await admin(h), json=_hook())
    d = r.json()
    r = await h.client.post(BASE, headers=await admin(h), json=_hook())
    assert r.status_code == 409
    for patch in (
        {"config": {"url": None}},
        {"config": {"url": "https://192.168.0.1/"}},
        {"name": None},
        {"kind": "syslog"},
        {"filter": {"colour": "red"}},
    ):
        r = await h.client.patch(f"{BASE}/{d['id']}", headers=await admin(h), json=patch)
        assert r.status_code == 422, (patch, r.text)
    r = await h.client.patch(
        f"{BASE}/{d['id']}", headers=await admin(h), json={"config": {"batch_size": 10}}
    )
    assert r.status_code == 200 and r.json()["config"]["batch_size"] == 10
    assert r.json()["config"]["url"] == "https://siem.example.com/hook"


async def test_private_targets_are_refused_without_the_allow_list(db_url: str) -> None:
    async with harness_with(db_url, forward_allow_private="") as h:
        r = await h.client.post(BASE, headers=await admin(h), json=_hook("http://127.0.0.1:9/x"))
        assert r.status_code == 422
        r = await h.client.post(BASE, headers=await admin(h), json=_hook("https://localhost/x"))
        assert r.status_code == 422


async def test_a_name_resolving_to_a_private_address_is_refused_at_send(
    db_url: str, hec: HecEmulator
) -> None:
    """Created with the allow list, sent without it: the send refuses the loopback target."""
    async with harness_with(db_url) as h:
        d = await create(
            h,
            name="h",
            kind="splunk_hec",
            config={"url": hec.url},
            secrets={"hec_token": hec.token},
        )
    async with harness_with(db_url, forward_allow_private="") as h:
        r = await h.client.post(f"{BASE}/{d['id']}/test", headers=await admin(h))
        assert r.status_code == 200
        assert r.json()["delivered"] is False and "private" in r.json()["error"]
        assert hec.requests == []


async def test_secrets_never_reach_the_logs_during_delivery(
    h: Harness, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.forwarding.conftest import webhook
    from tests.forwarding.receivers import Reply

    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="audit_service")
    await webhook(h, receiver)
    await record(h, 2)
    receiver.script = [Reply(500, b"secret? no")]
    await deliver(h)
    await until(h, lambda: len(receiver.events()) >= 2)
    assert receiver.secret not in caplog.text
    async with h.app.state.sessionmaker() as session:
        rows = (await session.scalars(select(AuditEvent))).all()
    assert all(receiver.secret not in str(r.event_metadata) for r in rows)


def test_the_delivery_job_is_registered() -> None:
    settings = make_settings("sqlite+aiosqlite:///unused.db", **FORWARD)
    jobs = {j.name: j for j in background_jobs(settings)}
    assert jobs["forwarding.deliver"].interval == 0.2
