"""End to end: failed logins → a detections alert → the e-mail and the signed webhook, with
grouping, repeats, resolutions, retries, closed ports, two deliverers and a crash."""

from __future__ import annotations

import asyncio
import json

import pytest

from audit_service.notifications.delivery import Deliverer
from tests.conftest import Harness
from tests.detections.helpers import alerts, evaluate, failures, forwarding_event, post
from tests.forwarding.receivers import Reply, WebhookReceiver
from tests.notifications.conftest import (
    admin,
    bodies,
    brute_force,
    closed_port,
    create,
    deliverer,
    email_channel,
    groups,
    harness_with,
    until,
    webhook_channel,
)
from tests.reports.smtp import SmtpServer

BASE = "/admin/alerts/channels"
IP1, IP2, IP3 = "198.51.100.10", "198.51.100.11", "198.51.100.12"


async def test_an_alert_arrives_by_email_and_webhook(
    h: Harness, receiver: WebhookReceiver, smtp: SmtpServer
) -> None:
    await webhook_channel(h, receiver, rules=["brute_force_ip"])
    await email_channel(h, rules=["brute_force_ip"])
    await brute_force(h, IP1)
    [alert] = await alerts(h, "brute_force_ip")

    await until(lambda: len(receiver.accepted) == 1 and len(smtp.received) == 1, h)
    assert receiver.bad_signatures == 0
    body = bodies(receiver)[0]
    assert body["type"] == "alert.notification" and body["status"] == "firing"
    assert body["group_key"] == "brute_force_ip|"
    [sent] = body["alerts"]
    assert sent["id"] == alert.id and sent["rule_id"] == "brute_force_ip"
    assert sent["severity"] == "medium" and sent["status"] == "open"
    assert sent["title"] == alert.title and sent["count"] == alert.count
    assert sent["first_seen_at"] and sent["last_seen_at"]
    assert sent["activity_url"].startswith("/admin/activity?") and IP1 in sent["activity_url"]
    assert receiver.accepted[0].headers["webhook-id"] == body["id"]

    mail = smtp.received[0]
    assert mail.recipients == ["soc@example.com"]
    assert "[MEDIUM]" in mail.message["Subject"]
    text = mail.part("plain")
    assert alert.title in text and "brute_force_ip" in text and "/admin/activity?" in text

    notified = await h.events(action="alert.notified")
    assert len(notified) == 2  # one per send, not per alert
    assert all(e.actor_type == "system" for e in notified)
    r = await h.client.get(f"{BASE}/{body['channel']['id']}", headers=await admin(h))
    assert r.json()["delivery"]["last_success_at"] is not None
    assert r.json()["delivery"]["pending_groups"] == 0
    # Nothing more to send until something changes.
    assert await deliverer(h).run_once() == 0


async def test_the_html_part_shows_event_values_as_text(h: Harness, smtp: SmtpServer) -> None:
    await email_channel(h, rules=["account_guessing"])
    evil = "<img src=x onerror=alert(1)>"
    await post(h, failures(IP1, evil, 10))
    await evaluate(h)
    await until(lambda: len(smtp.received) == 1, h)
    html = smtp.received[0].part("html")
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and evil not in html
    assert evil in smtp.received[0].part("plain")  # text is text


async def test_min_severity_filters(h: Harness, receiver: WebhookReceiver) -> None:
    await webhook_channel(h, receiver, min_severity="high")
    await brute_force(h, IP1)  # medium and low alerts only
    assert await alerts(h, "brute_force_ip")
    assert await deliverer(h).run_once() == 0
    assert receiver.requests == [] and await groups(h) == []


async def test_low_alerts_reach_a_channel_that_wants_them(
    h: Harness, receiver: WebhookReceiver
) -> None:
    await webhook_channel(h, receiver, min_severity="low", rules=["failed_logins_per_ip_daily"])
    await brute_force(h, IP1, n=6)
    await until(lambda: len(receiver.accepted) == 1, h)
    [sent] = bodies(receiver)[0]["alerts"]
    assert sent["rule_id"] == "failed_logins_per_ip_daily" and sent["severity"] == "low"


async def test_grouping_interval_and_repeat(
    db_url: str, smtp: SmtpServer, receiver: WebhookReceiver
) -> None:
    async with harness_with(db_url, smtp, alert_group_interval=1.5, alert_repeat_interval=3.0) as h:
        await webhook_channel(h, receiver, rules=["brute_force_ip"])
        # Two alerts of one group (rule + tenant), raised together: one send.
        await post(h, failures(IP1, "alice", 10) + failures(IP2, "bob", 10))
        await evaluate(h)
        await until(lambda: len(receiver.accepted) == 1, h)
        first = bodies(receiver)[0]
        assert sorted(a["entity"]["value"] for a in first["alerts"]) == [IP1, IP2]
        assert first["counts"] == {"open": 2, "acknowledged": 0, "resolved": 0}

        # A third alert within group_interval waits for it.
        await brute_force(h, IP3, user="carol")
        d = deliverer(h)
        assert await d.run_once() == 0
        [g] = await groups(h)
        assert g.pending is True
        await until(lambda: len(receiver.accepted) == 2, h, d=d)
        second = bodies(receiver)[1]
        assert {a["entity"]["value"] for a in second["alerts"]} == {IP1, IP2, IP3}
        assert second["id"] != first["id"]

        # Unchanged, still open: sent again after repeat_interval, not before.
        assert await d.run_once() == 0
        await until(lambda: len(receiver.accepted) == 3, h, d=d)
        third = bodies(receiver)[2]
        assert {a["entity"]["value"] for a in third["alerts"]} == {IP1, IP2, IP3}
        assert len({b["id"] for b in bodies(receiver)}) == 3


async def test_resolving_sends_a_resolved_notification(
    h: Harness, receiver: WebhookReceiver, smtp: SmtpServer
) -> None:
    await webhook_channel(h, receiver, rules=["brute_force_ip"])
    await email_channel(h, rules=["brute_force_ip"])
    await brute_force(h, IP1)
    [alert] = await alerts(h, "brute_force_ip")
    await until(lambda: len(receiver.accepted) == 1 and len(smtp.received) == 1, h)

    r = await h.client.post(
        f"/admin/alerts/{alert.id}/resolve",
        headers=await admin(h),
        json={"resolution": "true_positive", "note": "blocked"},
    )
    assert r.status_code == 200, r.text
    await until(lambda: len(receiver.accepted) == 2 and len(smtp.received) == 2, h)
    resolved = bodies(receiver)[1]
    assert resolved["status"] == "resolved"
    assert resolved["alerts"][0]["status"] == "resolved"
    assert resolved["alerts"][0]["change"] == "resolved"
    assert "[RESOLVED]" in smtp.received[1].message["Subject"]
    # Resolved and told: never repeated.
    [g, g2] = await groups(h)
    assert g.repeat_at is None and g2.repeat_at is None
    assert await deliverer(h).run_once() == 0


async def test_acknowledging_is_told_too(h: Harness, receiver: WebhookReceiver) -> None:
    await webhook_channel(h, receiver, rules=["brute_force_ip"])
    await brute_force(h, IP1)
    [alert] = await alerts(h, "brute_force_ip")
    await until(lambda: len(receiver.accepted) == 1, h)
    r = await h.client.post(f"/admin/alerts/{alert.id}/acknowledge", headers=await admin(h))
    assert r.status_code == 200, r.text
    await until(lambda: len(receiver.accepted) == 2, h)
    assert bodies(receiver)[1]["alerts"][0]["status"] == "acknowledged"


async def test_receiver_down_is_retried_and_delivered_later(
    h: Harness, receiver: WebhookReceiver
) -> None:
    hook = await webhook_channel(h, receiver, rules=["brute_force_ip"])
    receiver.script = [Reply(503, b"down"), Reply(500, b"still down")]
    await brute_force(h, IP1)
    d = deliverer(h)
    assert await d.run_once() == 1
    [g] = await groups(h)
    assert g.attempts == 1 and g.last_error and "503" in g.last_error and g.pending
    r = await h.client.get(f"{BASE}/{hook['id']}", headers=await admin(h))
    delivery = r.json()["delivery"]
    assert delivery["pending_groups"] == 1 and delivery["failing_groups"] == 1
    assert "503" in delivery["last_error"]

    await until(lambda: len(receiver.accepted) == 1, h, d=d)
    # Same group version: the same webhook-id on every retry.
    ids = {r.headers["webhook-id"] for r in receiver.requests}
    assert len(ids) == 1 and len(receiver.requests) == 3
    [g] = await groups(h)
    assert g.attempts == 0 and g.last_error is None and not g.pending
    failed = await h.events(action="alert.notification_failed")
    assert len(failed) == 2 and all(e.outcome == "failure" for e in failed)
    assert len(await h.events(action="alert.notified")) == 1


async def test_closed_port_is_a_recorded_failure_and_nothing_is_lost(
    h: Harness, receiver: WebhookReceiver, smtp: SmtpServer
) -> None:
    hook = await create(
        h,
        name="dead",
        kind="webhook",
        url=f"http://127.0.0.1:{closed_port()}/alerts",
        secrets=[receiver.secret],
        rules=["brute_force_ip"],
    )
    await brute_force(h, IP1)
    d = deliverer(h)
    for _ in range(3):
        await d.run_once()
        await asyncio.sleep(0.02)
    [g] = await groups(h)
    assert g.pending and g.attempts >= 2 and g.last_error
    r = await h.client.get(f"{BASE}/{hook['id']}", headers=await admin(h))
    assert r.status_code == 200 and r.json()["delivery"]["last_error"]
    failed = await h.events(action="alert.notification_failed")
    assert failed and "ConnectError" in json.dumps(failed[-1].event_metadata)

    # The receiver comes back (the URL is fixed): the alert is still delivered.
    r = await h.client.patch(
        f"{BASE}/{hook['id']}", headers=await admin(h), json={"url": receiver.url + "/alerts"}
    )
    assert r.status_code == 200, r.text
    await until(lambda: len(receiver.accepted) == 1, h, d=d)
    assert bodies(receiver)[0]["alerts"][0]["rule_id"] == "brute_force_ip"


async def test_smtp_refusing_is_retried_never_lost(h: Harness, smtp: SmtpServer) -> None:
    await email_channel(h, rules=["brute_force_ip"])
    smtp.handler.refuse_next = 1
    await brute_force(h, IP1)
    d = deliverer(h)
    await d.run_once()
    [g] = await groups(h)
    assert g.attempts == 1 and "554" in (g.last_error or "")
    await until(lambda: len(smtp.received) == 1, h, d=d)
    assert len(await h.events(action="alert.notified")) == 1


async def test_two_deliverers_send_each_group_version_once(
    db_url: str, smtp: SmtpServer, h: Harness, receiver: WebhookReceiver
) -> None:
    """Two service processes on one database: two apps, two engines, two deliverers each."""
    await webhook_channel(h, receiver, rules=["brute_force_ip"])
    await brute_force(h, IP1)
    async with harness_with(db_url, smtp) as other:
        a, b = deliverer(h), deliverer(h)
        c, d = deliverer(other), deliverer(other)
        sent = await asyncio.gather(a.run_once(), c.run_once(), b.run_once(), d.run_once())
        assert sum(sent) == 1
        await asyncio.sleep(0.1)
        assert len(receiver.accepted) == 1
        # The next version is again sent once, by whichever deliverer claims it.
        await brute_force(h, IP1)
        await asyncio.sleep(0.01)
        sent = await asyncio.gather(d.run_once(), b.run_once(), c.run_once(), a.run_once())
        assert sum(sent) == 1
    assert len(receiver.accepted) == 2
    assert len({r.headers["webhook-id"] for r in receiver.accepted}) == 2
    assert len(await h.events(action="alert.notified")) == 2


async def test_a_crash_between_send_and_commit_resends(
    db_url: str, smtp: SmtpServer, receiver: WebhookReceiver
) -> None:
    async with harness_with(db_url, smtp, alert_claim_seconds=0.3) as h:
        await webhook_channel(h, receiver, rules=["brute_force_ip"])
        await brute_force(h, IP1)

        async def crash() -> None:
            raise RuntimeError("killed between the send and its commit")

        crashing = Deliverer(h.app.state.sessionmaker, h.app.state.settings, after_send=crash)
        with pytest.raises(RuntimeError):
            await crashing.run_once()
        assert len(receiver.accepted) == 1
        [g] = await groups(h)
        assert g.pending and g.claim_holder == crashing.holder
        # Another deliverer takes the group over once the claim expires: sent again.
        d = deliverer(h)
        assert await d.run_once() == 0
        await until(lambda: len(receiver.accepted) == 2, h, d=d)
        first, second = receiver.accepted
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        [g] = await groups(h)
        assert not g.pending and g.claim_holder is None
        assert len(await h.events(action="alert.notified")) == 1


async def test_a_change_during_the_send_stays_pending(
    h: Harness, receiver: WebhookReceiver
) -> None:
    await webhook_channel(h, receiver, rules=["brute_force_ip"])
    await brute_force(h, IP1)

    async def more() -> None:  # the alert changes after the send, before its commit
        await brute_force(h, IP1)

    d = Deliverer(h.app.state.sessionmaker, h.app.state.settings, after_send=more)
    assert await d.run_once() == 1
    [g] = await groups(h)
    assert g.pending and g.sent_version < g.version
    await until(lambda: len(receiver.accepted) == 2, h)
    assert bodies(receiver)[1]["alerts"][0]["count"] > bodies(receiver)[0]["alerts"][0]["count"]


async def test_a_disabled_channel_gets_nothing(h: Harness, receiver: WebhookReceiver) -> None:
    await webhook_channel(h, receiver, enabled=False)
    await brute_force(h, IP1)
    assert await deliverer(h).run_once() == 0
    assert receiver.requests == []


async def test_the_running_jobs_deliver_on_their_own(
    db_url: str, smtp: SmtpServer, receiver: WebhookReceiver
) -> None:
    """The whole path with the background jobs (sequencer, detections.evaluate,
    notifications.deliver) running in the process: failed logins in, webhook out."""
    async with harness_with(
        db_url,
        smtp,
        run_jobs=True,
        alert_poll_interval=0.05,
        detections_poll_interval=0.05,
    ) as h:
        await webhook_channel(h, receiver, rules=["brute_force_ip"])
        await post(h, failures(IP1, "alice", 10))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not receiver.accepted:
            assert loop.time() < deadline, "no notification from the running jobs"
            await asyncio.sleep(0.05)
        [sent] = bodies(receiver)[0]["alerts"]
        assert sent["rule_id"] == "brute_force_ip" and sent["entity"]["value"] == IP1


async def test_a_resolution_is_told_where_the_alert_was_even_after_a_pause(
    h: Harness, receiver: WebhookReceiver
) -> None:
    hook = await webhook_channel(h, receiver, rules=["brute_force_ip"])
    await brute_force(h, IP1)
    [alert] = await alerts(h, "brute_force_ip")
    await until(lambda: len(receiver.accepted) == 1, h)
    path = f"{BASE}/{hook['id']}"
    r = await h.client.patch(path, headers=await admin(h), json={"enabled": False})
    assert r.status_code == 200, r.text
    r = await h.client.post(
        f"/admin/alerts/{alert.id}/resolve",
        headers=await admin(h),
        json={"resolution": "benign"},
    )
    assert r.status_code == 200, r.text
    assert await deliverer(h).run_once() == 0  # paused: kept, not sent
    r = await h.client.patch(path, headers=await admin(h), json={"enabled": True})
    await until(lambda: len(receiver.accepted) == 2, h)
    assert bodies(receiver)[1]["status"] == "resolved"


async def test_a_failing_forwarding_destination_is_told_and_so_is_its_recovery(
    h: Harness, receiver: WebhookReceiver
) -> None:
    await webhook_channel(h, receiver, rules=["forwarding_failing"])
    await forwarding_event(h, "forwarding.failing", 7, "splunk")
    await evaluate(h)
    await until(lambda: len(receiver.accepted) == 1, h)
    [opened] = bodies(receiver)[0]["alerts"]
    assert (opened["rule_id"], opened["status"]) == ("forwarding_failing", "open")

    await forwarding_event(h, "forwarding.recovered", 7, "splunk")
    await evaluate(h)
    await until(lambda: len(receiver.accepted) == 2, h)
    [resolved] = bodies(receiver)[1]["alerts"]
    assert (resolved["id"], resolved["status"], resolved["change"]) == (
        opened["id"],
        "resolved",
        "resolved",
    )
