"""/admin/reports/schedules (both dialects): create, list, get, update, delete — each a
`config.changed` with before/after — permissions and bad input."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Harness

BASE = "/admin/reports/schedules"


def _schedule(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "Daily summary",
        "kind": "daily",
        "tz": "Europe/Berlin",
        "recipients": ["secops@example.com"],
        **overrides,
    }


async def test_schedule_lifecycle_is_recorded_with_before_and_after(h: Harness) -> None:
    admin = await h.auth()
    r = await h.client.post(BASE, headers=admin, json=_schedule(tenant_id="t1"))
    assert r.status_code == 201, r.text
    created = r.json()
    assert (created["send_at"], created["tz"], created["tenant_id"]) == (
        "07:00",
        "Europe/Berlin",
        "t1",
    )
    assert created["enabled"] and created["created_by"] == "admin"
    # Daily at 07:00 Berlin: the next period is a whole local day, sent the next morning.
    nxt = created["next_period"]
    assert nxt["start"].endswith(("T00:00:00+01:00", "T00:00:00+02:00"))
    assert nxt["send_at"][11:16] == "07:00"
    event = await h.last_event()
    assert (event.action, event.module, event.target_type, event.target_id) == (
        "config.changed",
        "reports",
        "report_schedule",
        str(created["id"]),
    )
    assert event.event_metadata["before"] is None
    assert event.event_metadata["after"]["recipients"] == ["secops@example.com"]

    for kind, at in (("weekly", "08:00"), ("monthly", "08:00")):
        r = await h.client.post(BASE, headers=admin, json=_schedule(kind=kind, name=kind))
        assert r.status_code == 201 and r.json()["send_at"] == at

    sid = created["id"]
    r = await h.client.patch(
        f"{BASE}/{sid}",
        headers=admin,
        json={
            "send_at": "06:30",
            "tenant_id": None,
            "recipients": ["a@example.com", "A@example.com", "b@example.org"],
        },
    )
    assert r.status_code == 200, r.text
    updated = r.json()
    assert updated["send_at"] == "06:30" and updated["tenant_id"] is None
    assert updated["recipients"] == ["a@example.com", "b@example.org"]  # case-insensitive dedupe
    event = await h.last_event()
    assert event.action == "config.changed"
    assert event.event_metadata["before"]["send_at"] == "07:00"
    assert event.event_metadata["after"]["send_at"] == "06:30"
    assert event.event_metadata["before"]["tenant_id"] == "t1"

    listed = (await h.client.get(BASE, headers=admin)).json()["items"]
    assert [s["name"] for s in listed] == ["Daily summary", "weekly", "monthly"]
    assert (await h.client.get(f"{BASE}/{sid}", headers=admin)).json()["send_at"] == "06:30"
    runs = await h.client.get(f"{BASE}/{sid}/runs", headers=admin)
    assert runs.status_code == 200 and runs.json()["items"] == []

    assert (await h.client.delete(f"{BASE}/{sid}", headers=admin)).status_code == 204
    event = await h.last_event()
    assert event.event_metadata["after"] is None
    assert event.event_metadata["before"]["name"] == "Daily summary"
    for method in ("get", "delete"):
        missing = await getattr(h.client, method)(f"{BASE}/{sid}", headers=admin)
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_schedule(recipients=["not-an-address"]), "recipients"),
        (_schedule(recipients=["a@b.example", "x@@y"]), "recipients"),
        (_schedule(recipients=[]), "recipients"),
        (_schedule(recipients=[f"u{i}@example.com" for i in range(51)]), "recipients"),
        (_schedule(send_at="24:00"), "send_at"),
        (_schedule(send_at="7:00"), "send_at"),
        (_schedule(send_at="07:60"), "send_at"),
        (_schedule(tz="Mars/Olympus"), "tz"),
        (_schedule(kind="hourly"), "kind"),
        (_schedule(name="   "), "name"),
        (_schedule(colour="red"), "colour"),
    ],
)
async def test_bad_schedules_are_422(h: Harness, body: dict[str, Any], field: str) -> None:
    admin = await h.auth()
    r = await h.client.post(BASE, headers=admin, json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert field in {
        e["loc"][-1] if isinstance(e["loc"][-1], str) else e["loc"][-2] for e in r.json()["errors"]
    }


async def test_bad_updates_are_422_and_change_nothing(h: Harness) -> None:
    admin = await h.auth()
    sid = (await h.client.post(BASE, headers=admin, json=_schedule())).json()["id"]
    for body in ({"kind": None}, {"recipients": ["nope"]}, {"send_at": "23:60"}, {"tz": ""}):
        r = await h.client.patch(f"{BASE}/{sid}", headers=admin, json=body)
        assert r.status_code == 422, (body, r.text)
    after = (await h.client.get(f"{BASE}/{sid}", headers=admin)).json()
    assert (after["kind"], after["send_at"], after["recipients"]) == (
        "daily",
        "07:00",
        ["secops@example.com"],
    )
    assert (await h.client.get(f"{BASE}/0", headers=admin)).status_code == 422


async def test_only_admins_manage_schedules_auditors_may_preview(h: Harness) -> None:
    auditor = await h.auth("ann", role="auditor")
    user = await h.auth("uma", role="user")
    for headers in (auditor, user):
        assert (await h.client.post(BASE, headers=headers, json=_schedule())).status_code == 403
        assert (await h.client.get(BASE, headers=headers)).status_code == 403
    preview = {"kind": "daily", "tz": "UTC", "day": "2026-11-30"}
    r = await h.client.post("/admin/reports/preview", headers=auditor, json=preview)
    assert r.status_code == 200, r.text
    assert (
        await h.client.post("/admin/reports/preview", headers=user, json=preview)
    ).status_code == 403
