"""/admin/alerts/channels: CRUD, permissions, bad input, write-only secrets, test sends."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Harness
from tests.forwarding.receivers import WebhookReceiver
from tests.notifications.conftest import (
    admin,
    closed_port,
    create,
    email_channel,
    webhook_channel,
)
from tests.reports.smtp import SmtpServer

BASE = "/admin/alerts/channels"


async def test_crud_and_config_changed_events(h: Harness) -> None:
    headers = await admin(h)
    created = await email_channel(h, recipients=["soc@example.com", "oncall@example.com"])
    assert created["kind"] == "email" and created["min_severity"] == "medium"
    assert created["recipients"] == ["soc@example.com", "oncall@example.com"]
    assert created["enabled"] is True and created["secret_set"] is False
    cid = created["id"]

    r = await h.client.get(BASE, headers=headers)
    assert r.status_code == 200 and [c["id"] for c in r.json()["items"]] == [cid]
    r = await h.client.get(f"{BASE}/{cid}", headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["delivery"] == {
        "last_success_at": None,
        "last_error": None,
        "last_error_at": None,
        "pending_groups": 0,
        "failing_groups": 0,
    }

    r = await h.client.patch(
        f"{BASE}/{cid}",
        headers=headers,
        json={"min_severity": "high", "rules": ["brute_force_ip"], "enabled": False},
    )
    assert r.status_code == 200, r.text
    assert r.json()["min_severity"] == "high" and r.json()["enabled"] is False
    event = await h.last_event()
    assert event.action == "config.changed" and event.target_type == "alert_channel"
    assert event.event_metadata["before"]["min_severity"] == "medium"
    assert event.event_metadata["after"]["min_severity"] == "high"
    assert event.event_metadata["after"]["rules"] == ["brute_force_ip"]

    r = await h.client.delete(f"{BASE}/{cid}", headers=headers)
    assert r.status_code == 204
    event = await h.last_event()
    assert event.action == "config.changed" and event.event_metadata["after"] is None
    r = await h.client.get(f"{BASE}/{cid}", headers=headers)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_webhook_secret_is_generated_once_and_never_shown_or_recorded(h: Harness) -> None:
    headers = await admin(h)
    r = await h.client.post(
        BASE,
        headers=headers,
        json={"name": "hook", "kind": "webhook", "url": "http://127.0.0.1:9/hook"},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    generated = body["generated_secret"]
    assert generated.startswith("whsec_") and body["secret_set"] is True
    cid = body["id"]
    r = await h.client.get(f"{BASE}/{cid}", headers=headers)
    assert "generated_secret" not in r.json() and r.json()["secrets_count"] == 1
    assert generated not in r.text
    # Rotation: two secrets, neither ever shown.
    second = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    r = await h.client.patch(
        f"{BASE}/{cid}", headers=headers, json={"secrets": [generated, second]}
    )
    assert r.status_code == 200, r.text
    assert r.json()["secrets_count"] == 2 and second not in r.text
    listed = await h.client.get(BASE, headers=headers)
    assert generated not in listed.text and second not in listed.text
    for event in await h.events():
        dumped = json.dumps(event.event_metadata) + (event.description or "")
        assert generated not in dumped and second not in dumped


async def test_auditors_read_admins_write(h: Harness) -> None:
    cid = (await email_channel(h))["id"]
    auditor = await h.auth("carol", "auditor")
    assert (await h.client.get(BASE, headers=auditor)).status_code == 200
    assert (await h.client.get(f"{BASE}/{cid}", headers=auditor)).status_code == 200
    body = {"name": "x", "kind": "email", "recipients": ["a@example.com"]}
    for method, path, payload in (
        ("POST", BASE, body),
        ("PATCH", f"{BASE}/{cid}", {"enabled": False}),
        ("DELETE", f"{BASE}/{cid}", None),
        ("POST", f"{BASE}/{cid}/test", None),
    ):
        r = await h.client.request(method, path, headers=auditor, json=payload)
        assert r.status_code == 403, (method, path, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    user = await h.auth("bob", "user")
    assert (await h.client.get(BASE, headers=user)).status_code == 403
    assert (await h.client.get(BASE)).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"name": "w", "kind": "webhook", "url": "ftp://127.0.0.1/hook"},
        {"name": "w", "kind": "webhook", "url": "not a url"},
        {"name": "w", "kind": "webhook", "url": "http://example.com/hook"},  # plain http, public
        {"name": "w", "kind": "webhook", "url": "https://10.1.2.3/hook"},  # private, not listed
        {"name": "w", "kind": "webhook", "url": "https://u:p@example.com/hook"},
        {"name": "w", "kind": "webhook", "url": "https://example.com/", "secrets": ["nope"]},
        {"name": "w", "kind": "webhook"},
        {"name": "w", "kind": "webhook", "url": "https://x.example", "recipients": ["a@b.co"]},
        {"name": "e", "kind": "email", "recipients": ["not-an-address"]},
        {"name": "e", "kind": "email", "recipients": ["Alice <a@example.com>"]},
        {"name": "e", "kind": "email", "recipients": []},
        {"name": "e", "kind": "email"},
        {"name": "e", "kind": "email", "recipients": [f"u{i}@example.com" for i in range(51)]},
        {"name": "e", "kind": "email", "recipients": ["a@example.com"], "min_severity": "urgent"},
        {"name": "e", "kind": "email", "recipients": ["a@example.com"], "colour": "red"},
        {"name": "e", "kind": "sms", "recipients": ["a@example.com"]},
        {"name": " ", "kind": "email", "recipients": ["a@example.com"]},
        {"name": "e", "kind": "email", "recipients": ["a@example.com"], "enabled": "maybe"},
    ],
)
async def test_bad_input_is_422_problem(h: Harness, body: dict[str, Any]) -> None:
    r = await h.client.post(BASE, headers=await admin(h), json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["errors"]


@pytest.mark.parametrize(
    "patch",
    [
        {"url": "ftp://example.com/x"},
        {"min_severity": "urgent"},
        {"min_severity": None},
        {"kind": "email"},
        {"unknown": 1},
        {"recipients": ["a@example.com"]},
    ],
)
async def test_bad_patch_is_422(
    h: Harness, receiver: WebhookReceiver, patch: dict[str, Any]
) -> None:
    cid = (await webhook_channel(h, receiver))["id"]
    r = await h.client.patch(f"{BASE}/{cid}", headers=await admin(h), json=patch)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_duplicate_name_is_409_and_unknown_id_404(h: Harness) -> None:
    await email_channel(h, name="soc")
    r = await h.client.post(
        BASE,
        headers=await admin(h),
        json={"name": "soc", "kind": "email", "recipients": ["a@example.com"]},
    )
    assert r.status_code == 409
    for method in ("GET", "PATCH", "DELETE"):
        r = await h.client.request(
            method, f"{BASE}/999", headers=await admin(h), json={} if method == "PATCH" else None
        )
        assert r.status_code == 404, (method, r.text)
    r = await h.client.get(f"{BASE}/0", headers=await admin(h))
    assert r.status_code == 422


async def test_test_send_reaches_webhook_and_email(
    h: Harness, receiver: WebhookReceiver, smtp: SmtpServer
) -> None:
    hook = await webhook_channel(h, receiver)
    r = await h.client.post(f"{BASE}/{hook['id']}/test", headers=await admin(h))
    assert r.status_code == 200, r.text
    assert r.json()["delivered"] is True and r.json()["status_code"] == 200
    assert receiver.bad_signatures == 0 and len(receiver.accepted) == 1
    sent = json.loads(receiver.accepted[0].body)
    assert sent["type"] == "alert.test" and sent["alerts"][0]["title"] == "Test notification"
    event = await h.last_event()
    assert event.action == "alert.channel_tested" and event.outcome == "success"

    mail = await email_channel(h)
    r = await h.client.post(f"{BASE}/{mail['id']}/test", headers=await admin(h))
    assert r.status_code == 200 and r.json()["delivered"] is True, r.text
    assert len(smtp.received) == 1
    assert "test notification" in smtp.received[0].part("plain").lower()
    assert smtp.received[0].recipients == ["soc@example.com"]


async def test_test_send_to_a_closed_port_is_a_reported_failure(h: Harness) -> None:
    cid = (
        await create(
            h,
            name="dead",
            kind="webhook",
            url=f"http://127.0.0.1:{closed_port()}/hook",
        )
    )["id"]
    r = await h.client.post(f"{BASE}/{cid}/test", headers=await admin(h))
    assert r.status_code == 200, r.text
    assert r.json()["delivered"] is False and r.json()["error"]
    event = await h.last_event()
    assert event.action == "alert.channel_tested" and event.outcome == "failure"


async def test_channels_route_is_not_taken_by_alert_ids(h: Harness) -> None:
    r = await h.client.get(BASE, headers=await admin(h))
    assert r.status_code == 200 and r.json() == {"items": []}
    r = await h.client.get("/admin/alerts/999", headers=await admin(h))
    assert r.status_code == 404
