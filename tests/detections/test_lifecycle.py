"""Suppression windows, entity suppression, tenant business hours, backward inhibition and
forwarding_failing (both dialects)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import Harness
from tests.detections.helpers import alerts, attempt, evaluate, failures, forwarding_event, post

IP = "203.0.113.50"


async def _patch(h: Harness, rule: str, body: dict[str, Any], status: int = 200) -> Any:
    admin = await h.auth()
    r = await h.client.patch(f"/admin/detections/rules/{rule}", headers=admin, json=body)
    assert r.status_code == status, r.text
    return r.json()


async def _resolve(h: Harness, alert_id: int) -> None:
    admin = await h.auth()
    r = await h.client.post(
        f"/admin/alerts/{alert_id}/resolve", headers=admin, json={"resolution": "benign"}
    )
    assert r.status_code == 200, r.text


async def test_suppress_minutes_after_a_resolution(h: Harness) -> None:
    out = await _patch(h, "brute_force_ip", {"suppress_minutes": 60})
    assert out["effective"]["suppress_minutes"] == 60
    event = await h.last_event()
    assert event.action == "config.changed"
    assert event.event_metadata["after"]["suppress_minutes"] == 60
    await post(h, failures(IP, "root", 10))
    await evaluate(h)
    (first,) = await alerts(h, "brute_force_ip")
    await _resolve(h, first.id)
    await post(h, failures(IP, "root", 3))
    await evaluate(h)
    assert [a.id for a in await alerts(h, "brute_force_ip")] == [first.id]  # suppressed
    await _patch(h, "brute_force_ip", {"suppress_minutes": 0})
    await post(h, failures(IP, "root", 1))
    await evaluate(h)
    found = await alerts(h, "brute_force_ip")
    assert len(found) == 2 and found[1].status == "open" and found[1].count == 1


async def test_suppress_minutes_per_tenant(h: Harness) -> None:
    await _patch(h, "brute_force_ip", {"suppress_minutes": 60, "tenant_id": "t1"})
    for tenant in ("t1", "t2"):
        await post(h, failures(IP, "root", 10, tenant_id=tenant))
    await evaluate(h)
    for a in await alerts(h, "brute_force_ip"):
        await _resolve(h, a.id)
    for tenant in ("t1", "t2"):
        await post(h, failures(IP, "root", 1, tenant_id=tenant))
    await evaluate(h)
    reopened = [a for a in await alerts(h, "brute_force_ip") if a.status == "open"]
    assert [a.tenant_id for a in reopened] == ["t2"]


async def test_entity_suppression_until_a_time(h: Harness) -> None:
    until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    out = await _patch(
        h,
        "account_guessing",
        {"suppress": {"entity": IP, "until": until, "note": "pen test"}},
    )
    (override,) = out["overrides"]
    assert [s["entity"] for s in override["suppressions"]] == [IP]
    assert override["suppressions"][0]["note"] == "pen test"
    event = await h.last_event()
    assert event.event_metadata["before"] is None
    assert event.event_metadata["after"]["suppressions"][0]["entity"] == IP
    await post(h, failures(IP, "root", 10))
    await evaluate(h)
    assert await alerts(h, "account_guessing") == []  # the IP part of 'ip user' matches
    assert len(await alerts(h, "brute_force_ip")) == 1  # another rule: not suppressed
    out = await _patch(h, "account_guessing", {"suppress": {"entity": IP, "until": None}})
    assert out["overrides"][0]["suppressions"] == []
    event = await h.last_event()
    assert event.event_metadata["before"]["suppressions"][0]["entity"] == IP
    await post(h, failures(IP, "root", 1))
    await evaluate(h)
    assert len(await alerts(h, "account_guessing")) == 1


async def test_expired_suppression_suppresses_nothing(h: Harness) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    await _patch(h, "brute_force_ip", {"suppress": {"entity": IP, "until": past}})
    await post(h, failures(IP, "root", 10))
    await evaluate(h)
    assert len(await alerts(h, "brute_force_ip")) == 1


@pytest.mark.parametrize(
    ("rule", "body"),
    [
        ("brute_force_ip", {"suppress_minutes": -1}),
        ("brute_force_ip", {"suppress_minutes": 10**6}),
        ("brute_force_ip", {"suppress_minutes": "5"}),
        ("brute_force_ip", {"time_zone": "Europe/Berlin"}),  # not a local-time rule
        ("off_hours_policy", {"time_zone": "Mars/Olympus"}),
        ("off_hours_policy", {"time_zone": "../../etc/passwd"}),
        ("off_hours_policy", {"business_days": ["mon", "funday"]}),
        ("off_hours_policy", {"business_days": "mon"}),
        ("brute_force_ip", {"suppress": {"entity": IP, "until": "2026-01-01T00:00:00"}}),
        ("brute_force_ip", {"suppress": {"entity": "", "until": None}}),
        ("brute_force_ip", {"suppress": {"until": None}}),
    ],
)
async def test_bad_settings(h: Harness, rule: str, body: dict[str, Any]) -> None:
    admin = await h.auth()
    r = await h.client.patch(f"/admin/detections/rules/{rule}", headers=admin, json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    rules = (await h.client.get("/admin/detections/rules", headers=admin)).json()["items"]
    assert all(x["overrides"] == [] for x in rules)


# --- tenant business hours -------------------------------------------------------------------


def _zone_outside_now() -> str:
    """A zone whose local time is now outside 07:00-20:00 (there is always one)."""
    for offset in range(-12, 13):
        name = "Etc/GMT" + ("" if offset == 0 else f"{-offset:+d}")
        hour = (datetime.now(UTC) + timedelta(hours=offset)).hour
        if not 7 <= hour < 20 and 1 <= hour <= 5:
            return name
    raise AssertionError("no zone found")


async def test_tenant_time_zone(h: Harness) -> None:
    zone = _zone_outside_now()
    await _patch(h, "off_hours_policy", {"thresholds": {"start_hour": 0, "end_hour": 24}})
    out = await _patch(
        h, "off_hours_policy", {"tenant_id": "night", "time_zone": zone, "thresholds": {}}
    )
    night = next(o for o in out["overrides"] if o["tenant_id"] == "night")
    assert night["time_zone"] == zone
    # The tenant's own hours start from the catalogue's defaults again.
    await _patch(
        h,
        "off_hours_policy",
        {"tenant_id": "night", "thresholds": {"start_hour": 7, "end_hour": 20}},
    )
    await post(
        h,
        [
            attempt("198.51.100.1", "alice", ok=True, tenant_id="night"),
            attempt("198.51.100.1", "bob", ok=True, tenant_id="day"),
        ],
    )
    await evaluate(h)
    found = [a for a in await alerts(h, "off_hours_policy") if a.source == "lms"]
    assert [(a.tenant_id, a.entity_value) for a in found] == [("night", "alice")]
    assert found[0].evidence["time_zone"] == zone


async def test_tenant_business_days(h: Harness) -> None:
    today = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[datetime.now(UTC).weekday()]
    others = [d for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun") if d != today]
    hours = {"start_hour": 0, "end_hour": 24, "weekends_off": 0}
    await _patch(h, "off_hours_policy", {"thresholds": hours})
    await _patch(h, "off_hours_policy", {"tenant_id": "closed", "business_days": others})
    out = await _patch(
        h, "off_hours_policy", {"tenant_id": "open", "business_days": [today, *others]}
    )
    assert next(o for o in out["overrides"] if o["tenant_id"] == "open")["business_days"] == [
        "mon",
        "tue",
        "wed",
        "thu",
        "fri",
        "sat",
        "sun",
    ]
    await post(
        h,
        [
            attempt("198.51.100.1", "alice", ok=True, tenant_id="closed"),
            attempt("198.51.100.1", "bob", ok=True, tenant_id="open"),
            attempt("198.51.100.1", "carol", ok=True, tenant_id="default"),
        ],
    )
    await evaluate(h)
    found = [a for a in await alerts(h, "off_hours_policy") if a.source == "lms"]
    assert [(a.tenant_id, a.entity_value) for a in found] == [("closed", "alice")]
    # Lifting the tenant's days (null) falls back to every day (weekends_off 0).
    await _patch(h, "off_hours_policy", {"tenant_id": "closed", "business_days": None})
    await post(h, [attempt("198.51.100.1", "dave", ok=True, tenant_id="closed")])
    await evaluate(h)
    assert len([a for a in await alerts(h, "off_hours_policy") if a.source == "lms"]) == 1


# --- backward inhibition ---------------------------------------------------------------------


async def test_success_after_failures_inhibits_open_brute_force_alerts(h: Harness) -> None:
    await post(h, failures(IP, "mallory", 12) + failures("203.0.113.99", "other", 10))
    await evaluate(h)
    rules = ("brute_force_ip", "account_guessing", "success_after_failures")
    before = {
        a.rule_id: a
        for a in await alerts(h)
        if a.entity_value.startswith(IP) and a.rule_id in rules
    }
    assert set(before) == {"brute_force_ip", "account_guessing"}
    assert all(a.inhibited_by is None for a in before.values())
    await post(h, [attempt(IP, "mallory", ok=True)])
    await evaluate(h)
    everything = await alerts(h)
    (saf,) = [a for a in everything if a.rule_id == "success_after_failures"]
    inhibited = {
        a.rule_id: a.inhibited_by
        for a in everything
        if a.entity_value.startswith(IP) and a.rule_id in rules
    }
    assert inhibited == {
        "brute_force_ip": saf.id,
        "account_guessing": saf.id,
    }
    other = [a for a in everything if a.entity_value.startswith("203.0.113.99")]
    daily = [a for a in everything if a.rule_id == "failed_logins_per_ip_daily"]
    assert daily and all(a.inhibited_by is None for a in daily)
    assert other and all(a.inhibited_by is None for a in other)
    admin = await h.auth()
    r = await h.client.get(f"/admin/alerts/{before['brute_force_ip'].id}", headers=admin)
    assert r.json()["inhibited_by"] == saf.id and r.json()["status"] == "open"
    r = await h.client.get(
        "/admin/activity", headers=admin, params={"action": "alert.inhibited", "page_size": 10}
    )
    assert r.status_code == 200, r.text
    assert {e["target_id"] for e in r.json()["items"]} == {
        str(before["brute_force_ip"].id),
        str(before["account_guessing"].id),
    }


# --- forwarding_failing ----------------------------------------------------------------------


async def test_forwarding_failing_opens_and_recovered_resolves(h: Harness) -> None:
    await forwarding_event(h, "forwarding.failing", 7, "splunk")
    await forwarding_event(h, "forwarding.failing", 8, "elastic")
    # An ingested source claiming it is not the forwarder.
    await post(h, [{**attempt(None, "x", ok=True), "action": "forwarding.failing"}])
    await evaluate(h)
    found = {a.entity_value: a for a in await alerts(h, "forwarding_failing")}
    assert set(found) == {"7 splunk", "8 elastic"}
    assert found["7 splunk"].severity == "medium" and found["7 splunk"].status == "open"
    assert found["7 splunk"].evidence["destination"] == {"id": "7", "name": "splunk"}
    await forwarding_event(h, "forwarding.recovered", 7, "splunk")
    await evaluate(h)
    found = {a.entity_value: a for a in await alerts(h, "forwarding_failing")}
    assert found["7 splunk"].status == "resolved"
    assert (found["7 splunk"].resolution, found["7 splunk"].note) == ("benign", "recovered")
    assert found["8 elastic"].status == "open"
    # Failing again opens a new alert; failing and recovering in one batch leaves it resolved.
    await forwarding_event(h, "forwarding.failing", 7, "splunk")
    await forwarding_event(h, "forwarding.recovered", 7, "splunk")
    await evaluate(h)
    seven = [a for a in await alerts(h, "forwarding_failing") if a.entity_value == "7 splunk"]
    assert [a.status for a in seven] == ["resolved", "resolved"]


async def test_forwarding_failing_disabled(h: Harness) -> None:
    await _patch(h, "forwarding_failing", {"enabled": False})
    await forwarding_event(h, "forwarding.failing", 7, "splunk")
    await evaluate(h)
    assert await alerts(h, "forwarding_failing") == []
