"""/admin/alerts and /admin/detections/rules (both dialects): reading, acknowledging,
resolving, rule settings, permissions, and a problem+json 4xx for every bad input."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Harness
from tests.detections.helpers import alerts, evaluate, failures, post

A, B, C = "198.51.100.1", "198.51.100.2", "198.51.100.3"


def _problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    return body


async def _seed(h: Harness) -> list[int]:
    await post(h, failures(A, "alice", 10) + failures(B, "bob", 10) + failures(C, "carol", 10))
    await evaluate(h)
    return [a.id for a in await alerts(h, "brute_force_ip")]


async def test_list_filter_and_page(h: Harness) -> None:
    ids = await _seed(h)
    admin = await h.auth()
    r = await h.client.get(
        "/admin/alerts", headers=admin, params={"rule": "brute_force_ip", "page_size": 2}
    )
    assert r.status_code == 200, r.text
    page = r.json()
    assert [a["id"] for a in page["items"]] == sorted(ids, reverse=True)[:2]
    assert page["items"][0]["entity"]["kind"] == "ip"
    r = await h.client.get(
        "/admin/alerts",
        headers=admin,
        params={"rule": "brute_force_ip", "page_size": 2, "cursor": page["next_cursor"]},
    )
    assert [a["id"] for a in r.json()["items"]] == [min(ids)] and r.json()["next_cursor"] is None
    r = await h.client.get("/admin/alerts", headers=admin, params={"entity": B})
    # Exact: the account_guessing alert's entity is "<ip> <user>".
    assert {a["rule_id"] for a in r.json()["items"]} == {
        "brute_force_ip",
        "failed_logins_per_ip_daily",
    }
    r = await h.client.get("/admin/alerts", headers=admin, params={"severity": "critical"})
    assert r.json()["items"] == []
    one = await h.client.get(f"/admin/alerts/{ids[0]}", headers=admin)
    assert one.status_code == 200 and one.json()["evidence"]["activity_url"]
    assert (await h.last_event()).action == "alert.viewed"


async def test_acknowledge_then_resolve(h: Harness) -> None:
    (first, *_) = await _seed(h)
    admin = await h.auth()
    r = await h.client.post(f"/admin/alerts/{first}/acknowledge", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "acknowledged" and r.json()["acknowledged_by"] == "admin"
    event = await h.last_event()
    assert event.action == "alert.acknowledged" and event.target_id == str(first)
    _problem(await h.client.post(f"/admin/alerts/{first}/acknowledge", headers=admin), 409)
    r = await h.client.post(
        f"/admin/alerts/{first}/resolve",
        headers=admin,
        json={"resolution": "true_positive", "note": "blocked at the firewall"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "resolved" and body["resolution"] == "true_positive"
    assert body["note"] == "blocked at the firewall" and body["version"] == 3
    event = await h.last_event()
    assert (
        event.action == "alert.resolved" and event.event_metadata["resolution"] == "true_positive"
    )
    again = await h.client.post(
        f"/admin/alerts/{first}/resolve", headers=admin, json={"resolution": "benign"}
    )
    _problem(again, 409)
    _problem(await h.client.post(f"/admin/alerts/{first}/acknowledge", headers=admin), 409)


@pytest.mark.parametrize(
    "body",
    [
        {"resolution": "maybe"},
        {},
        {"resolution": "benign", "note": "x" * 2001},
        {"resolution": "benign", "extra": 1},
    ],
)
async def test_resolve_bad_input(h: Harness, body: dict[str, Any]) -> None:
    (first, *_) = await _seed(h)
    admin = await h.auth()
    _problem(await h.client.post(f"/admin/alerts/{first}/resolve", headers=admin, json=body), 422)
    (alert,) = [a for a in await alerts(h) if a.id == first]
    assert alert.status == "open"


async def test_unknown_alert_and_bad_queries(h: Harness) -> None:
    admin = await h.auth()
    _problem(await h.client.get("/admin/alerts/999", headers=admin), 404)
    _problem(await h.client.get("/admin/alerts/0", headers=admin), 422)
    _problem(await h.client.get("/admin/alerts/abc", headers=admin), 422)
    _problem(await h.client.post("/admin/alerts/999/acknowledge", headers=admin), 404)
    _problem(
        await h.client.post(
            "/admin/alerts/999/resolve", headers=admin, json={"resolution": "benign"}
        ),
        404,
    )
    for params in (
        {"status": "closed"},
        {"severity": "urgent"},
        {"since": "yesterday"},
        {"since": "2026-01-01T00:00:00"},  # no offset
        {"page_size": 0},
        {"cursor": "garbage"},
        {"bogus": "1"},
    ):
        _problem(await h.client.get("/admin/alerts", headers=admin, params=params), 422)


async def test_rules_catalogue(h: Harness) -> None:
    auditor = await h.auth("audrey", role="auditor")
    r = await h.client.get("/admin/detections/rules", headers=auditor)
    assert r.status_code == 200, r.text
    rules = {x["id"]: x for x in r.json()["items"]}
    assert list(rules) == [
        "failed_logins_per_ip_daily",
        "brute_force_ip",
        "account_guessing",
        "success_after_failures",
        "password_spray",
        "distributed_brute_force",
        "off_hours_policy",
        "new_network",
        "first_privileged_action",
        "off_hours_learned",
        "volume_spike_user",
        "volume_spike_tenant",
        "forwarding_failing",
    ]
    spray = rules["password_spray"]
    assert spray["effective"] == {
        "enabled": True,
        "severity": "high",
        "thresholds": {"users": 5, "tries": 15, "max_per_user": 6, "window_minutes": 60},
        "suppress_minutes": 0,
        "time_zone": None,
        "business_days": None,
    }
    assert spray["guide"]["false_positives"] and spray["overrides"] == []


async def test_patch_rule_records_config_changed(h: Harness) -> None:
    admin = await h.auth()
    r = await h.client.patch(
        "/admin/detections/rules/brute_force_ip",
        headers=admin,
        json={"thresholds": {"failures": 20}, "severity": "high"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["effective"]["thresholds"] == {"failures": 20, "window_minutes": 10}
    event = await h.last_event()
    assert event.action == "config.changed" and event.target_id == "brute_force_ip"
    assert event.event_metadata["before"] is None
    assert event.event_metadata["after"]["thresholds"] == {"failures": 20}
    r = await h.client.patch(
        "/admin/detections/rules/brute_force_ip", headers=admin, json={"enabled": False}
    )
    event = await h.last_event()
    assert event.event_metadata["before"]["enabled"] is None
    assert event.event_metadata["after"]["enabled"] is False
    assert r.json()["effective"]["severity"] == "high"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"thresholds": {"failures": "ten"}}, 422),
        ({"thresholds": {"failures": 10.5}}, 422),
        ({"thresholds": {"failures": True}}, 422),
        ({"thresholds": {"failures": 1}}, 422),  # below the minimum of 2
        ({"thresholds": {"failures": 10**9}}, 422),
        ({"thresholds": {"window_minutes": 0}}, 422),
        ({"thresholds": {"nonsense": 3}}, 422),
        ({"thresholds": [10]}, 422),
        ({"severity": "urgent"}, 422),
        ({"enabled": "maybe"}, 422),
        ({"tenant_id": ""}, 422),
        ({"extra": 1}, 422),
    ],
)
async def test_patch_rule_bad_input(h: Harness, body: dict[str, Any], status: int) -> None:
    admin = await h.auth()
    r = await h.client.patch("/admin/detections/rules/brute_force_ip", headers=admin, json=body)
    _problem(r, status)
    rules = (await h.client.get("/admin/detections/rules", headers=admin)).json()["items"]
    assert all(x["overrides"] == [] for x in rules)


async def test_patch_unknown_rule(h: Harness) -> None:
    admin = await h.auth()
    r = await h.client.patch("/admin/detections/rules/no_such_rule", headers=admin, json={})
    _problem(r, 404)


async def test_permissions(h: Harness) -> None:
    (first, *_) = await _seed(h)
    auditor = await h.auth("audrey", role="auditor")
    user = await h.auth("ursula", role="user")
    for path in ("/admin/alerts", f"/admin/alerts/{first}", "/admin/detections/rules"):
        assert (await h.client.get(path, headers=auditor)).status_code == 200
        _problem(await h.client.get(path, headers=user), 403)
        _problem(await h.client.get(path), 401)
    writes = [
        ("POST", f"/admin/alerts/{first}/acknowledge", None),
        ("POST", f"/admin/alerts/{first}/resolve", {"resolution": "benign"}),
        ("PATCH", "/admin/detections/rules/brute_force_ip", {"enabled": False}),
    ]
    for method, path, body in writes:
        for headers in (auditor, user):
            _problem(await h.client.request(method, path, headers=headers, json=body), 403)
        _problem(await h.client.request(method, path, json=body), 401)
    (alert,) = [a for a in await alerts(h) if a.id == first]
    assert alert.status == "open"
