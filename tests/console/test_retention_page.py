"""/console/admin/retention over httpx on both dialects: the page shows what the API answers
(rules in order, the preview, holds, archives); an admin's changes through its forms land
through the retention service (the API then shows them) and are recorded like the API's;
refused input is shown at its form with nothing changed; auditors read, never change; every
change needs the CSRF token."""

from __future__ import annotations

import re
from typing import Any

from tests.conftest import Harness
from tests.console.support import https_client, sign_in, signed_in
from tests.retention.conftest import reset_policies

PAGE = "/console/admin/retention"
XSS = '<img src=x onerror="alert(1)">'


def _rule(csrf: str, **fields: Any) -> dict[str, Any]:
    return {
        "csrf_token": csrf,
        "form": "full",
        "name": "Tenant t9",
        "position": "777",
        "action_prefix": "",
        "module": "",
        "outcome": "",
        "source": "",
        "tenant_id": "t9",
        "archive_after_days": "7",
        "delete_after_days": "30",
        **fields,
    }


async def _policies(h: Harness) -> list[dict[str, Any]]:
    r = await h.client.get("/admin/retention/policies", headers=await h.auth())
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def _row_ids(html: str, table: str, attr: str) -> list[int]:
    body = re.search(rf'<table class="data" id="{table}">(.*?)</table>', html, re.S)
    assert body, f"no table {table}"
    return [int(i) for i in re.findall(rf'<tr data-{attr}="(\d+)"', body.group(1))]


async def test_the_page_shows_the_apis_rules_preview_holds_and_archives(h: Harness) -> None:
    await reset_policies(h)
    api = await h.auth()
    r = await h.client.post(
        "/admin/retention/holds",
        json={"reason": XSS, "filter": {"actor": "user-1", "action": ["item.viewed"]}},
        headers=api,
    )
    assert r.status_code == 201, r.text
    async with https_client(h) as c:
        await signed_in(c)
        page = await c.get(PAGE)
        assert page.status_code == 200, page.text
        html = page.text
    last = await h.last_event()
    assert last.action == "retention.policies_listed" and last.event_metadata["via"] == "console"
    policies = await _policies(h)
    assert policies and _row_ids(html, "retention-rules", "policy") == [p["id"] for p in policies]
    preview = (await h.client.get("/admin/retention/policies/preview", headers=api)).json()
    assert _row_ids(html, "retention-preview", "policy") == [
        i["policy_id"] for i in preview["items"]
    ]
    holds = (await h.client.get("/admin/retention/holds", headers=api)).json()["items"]
    assert _row_ids(html, "retention-holds", "hold") == [x["id"] for x in holds]
    archives = (await h.client.get("/admin/retention/archives", headers=api)).json()["items"]
    assert _row_ids(html, "retention-archives", "archive") == [a["id"] for a in archives][:20]
    assert "keep forever" in html or all(p["delete_after_days"] for p in policies)
    # The hold's reason is text, never markup; its filter is shown by the API's names.
    assert XSS not in html and "&lt;img src=x onerror=" in html
    assert "action=item.viewed" in html and "actor=user-1" in html
    # The section is on the administration index (no placeholder sentence any more).
    async with https_client(h) as c:
        await signed_in(c)
        index = await c.get("/console/admin")
    assert f'href="{PAGE}"' in index.text and "when the retention feature lands" not in index.text


async def test_an_admin_creates_edits_moves_and_deletes_a_rule(h: Harness) -> None:
    await reset_policies(h)
    async with https_client(h) as c:
        csrf = await signed_in(c)
        r = await c.post(f"{PAGE}/policies", data=_rule(csrf, critical="true"))
        assert r.status_code == 303, r.text
        assert r.headers["location"] == f"{PAGE}?notice=policy-created"
        event = await h.last_event()
        assert (event.action, event.module) == ("config.changed", "retention")
        assert event.event_metadata["before"] is None and event.event_metadata["via"] == "console"
        assert event.event_metadata["after"]["name"] == "Tenant t9"
        created = next(p for p in await _policies(h) if p["name"] == "Tenant t9")
        assert created["match"] == {"tenant_id": "t9"} and created["position"] == 777
        assert (created["archive_after_days"], created["delete_after_days"]) == (7, 30)
        assert created["critical"] is True
        shown = await c.get(f"{PAGE}?notice=policy-created")
        assert "The retention rule was created." in shown.text

        # Edit: every field of the form; empty days → keep forever, unticked → not critical.
        r = await c.post(
            f"{PAGE}/policies/{created['id']}",
            data=_rule(csrf, name="Tenant t9 forever", archive_after_days="", delete_after_days=""),
        )
        assert r.status_code == 303, r.text
        event = await h.last_event()
        assert event.event_metadata["before"]["delete_after_days"] == 30
        assert event.event_metadata["after"]["delete_after_days"] is None
        edited = next(p for p in await _policies(h) if p["id"] == created["id"])
        assert edited["name"] == "Tenant t9 forever" and edited["critical"] is False
        assert (edited["archive_after_days"], edited["delete_after_days"]) == (None, None)
        page = await c.get(PAGE)
        assert "keep forever" in page.text

        # Move up: the button sends only a position between the two rules before it.
        ordered = [p["id"] for p in await _policies(h)]
        i = ordered.index(created["id"])
        move = re.search(
            rf'action="{PAGE}/policies/{created["id"]}">\s*<input type="hidden" '
            r'name="csrf_token" value="[0-9a-f]+">\s*<input type="hidden" name="position" '
            r'value="(\d+)">\s*<button type="submit">Move up',
            page.text,
        )
        assert move, "no Move up button"
        r = await c.post(
            f"{PAGE}/policies/{created['id']}", data={"csrf_token": csrf, "position": move[1]}
        )
        assert r.status_code == 303 and r.headers["location"].endswith("policy-moved"), r.text
        after = await _policies(h)
        assert [p["id"] for p in after].index(created["id"]) == i - 1
        moved = next(p for p in after if p["id"] == created["id"])
        assert moved["name"] == "Tenant t9 forever" and moved["match"] == {"tenant_id": "t9"}

        r = await c.post(f"{PAGE}/policies/{created['id']}/delete", data={"csrf_token": csrf})
        assert r.status_code == 303
        assert (await h.last_event()).event_metadata["after"] is None
        assert created["id"] not in [p["id"] for p in await _policies(h)]
        # A rule that is gone: the API's 404, as a page.
        r = await c.post(f"{PAGE}/policies/{created['id']}/delete", data={"csrf_token": csrf})
        assert r.status_code == 404 and "No retention rule" in r.text


async def test_refused_rules_are_shown_at_their_form_and_change_nothing(h: Harness) -> None:
    await reset_policies(h)
    before = await _policies(h)
    catch_all = before[-1]
    async with https_client(h) as c:
        csrf = await signed_in(c)
        cases = [
            (_rule(csrf, archive_after_days="30", delete_after_days="10"), 422, "delete_after"),
            (_rule(csrf, archive_after_days="90d"), 422, "archive_after_days"),
            (_rule(csrf, outcome="maybe"), 422, "match.outcome"),
            (_rule(csrf, position="x"), 422, "position"),
            # After the catch-all: the service's own rule (it would never match).
            (_rule(csrf, position=str(catch_all["position"] + 5)), 422, "would never match"),
            # A position that is taken: the API's 409.
            (_rule(csrf, position=str(before[0]["position"])), 409, "name or position"),
        ]
        for data, status, shown in cases:
            r = await c.post(f"{PAGE}/policies", data=data)
            assert r.status_code == status, (data, r.text[-1500:])
            assert "text/html" in r.headers["content-type"] and "Traceback" not in r.text
            problem = re.search(r'id="new-policy-problem">(.*?)</div>', r.text, re.S)
            assert problem and shown in problem.group(1), (shown, r.text[-1500:])
            # The form is filled in again with what was sent.
            refilled = 'id="new-policy-name" name="name" required maxlength="200" value="Tenant t9"'
            assert refilled in r.text
            last = await h.last_event()
            assert last.action == "config.changed" and last.outcome == "failure"
        # An edit refused by the service: shown at that rule's edit form.
        r = await c.post(
            f"{PAGE}/policies/{catch_all['id']}",
            data=_rule(
                csrf,
                name=catch_all["name"],
                position=str(catch_all["position"]),
                tenant_id="",
                archive_after_days="400",
                delete_after_days="365",
            ),
        )
        assert r.status_code == 422, r.text
        assert re.search(rf'id="policy-{catch_all["id"]}-problem"', r.text)
    assert await _policies(h) == before


async def test_holds_are_placed_and_released_through_the_service(h: Harness) -> None:
    async with https_client(h) as c:
        csrf = await signed_in(c)
        r = await c.post(f"{PAGE}/holds", data={"csrf_token": csrf, "reason": "case 1"})
        assert r.status_code == 422 and "empty filter" in r.text
        r = await c.post(
            f"{PAGE}/holds", data={"csrf_token": csrf, "reason": "case 1", "ip": "nope"}
        )
        assert r.status_code == 422 and "not an IP address" in r.text
        assert 'id="nh-ip" name="ip" maxlength="200" size="14" value="nope"' in r.text
        r = await c.post(
            f"{PAGE}/holds",
            data={
                "csrf_token": csrf,
                "reason": "Litigation 2026-17",
                "actor": "user-1",
                "action": "item.viewed, item.updated",
                "ip": "198.51.100.0/24",
                "outcome": "success",
                "module": "",
            },
        )
        assert r.status_code == 303, r.text
        event = await h.last_event()
        assert event.action == "retention.hold_created" and event.event_metadata["via"] == "console"
        holds = (await h.client.get("/admin/retention/holds", headers=await h.auth())).json()
        hold = holds["items"][0]
        assert hold["reason"] == "Litigation 2026-17" and hold["active"]
        assert hold["filter"] == {
            "actor": "user-1",
            "action": ["item.viewed", "item.updated"],
            "ip": "198.51.100.0/24",
            "outcome": "success",
        }
        r = await c.post(f"{PAGE}/holds/{hold['id']}/release", data={"csrf_token": csrf})
        assert r.status_code == 303
        assert (await h.last_event()).action == "retention.hold_released"
        r = await c.post(f"{PAGE}/holds/{hold['id']}/release", data={"csrf_token": csrf})
        assert r.status_code == 409 and "released already" in r.text
    api = await h.client.get("/admin/retention/holds?active=true", headers=await h.auth())
    assert api.json()["items"] == []


async def test_auditors_read_retention_but_change_nothing(h: Harness) -> None:
    await reset_policies(h)
    before = await _policies(h)
    await h.create_user("audrey", "auditor")
    async with https_client(h) as c:
        csrf = await signed_in(c, "audrey")
        page = await c.get(PAGE)
        assert page.status_code == 200, page.text
        assert _row_ids(page.text, "retention-rules", "policy") == [p["id"] for p in before]
        assert "Read-only" in page.text and 'action="/console/admin/retention/' not in page.text
        # Its section list offers only what an auditor may open.
        assert 'href="/console/admin/users"' not in page.text
        for path, data in (
            (f"{PAGE}/policies", _rule(csrf)),
            (f"{PAGE}/policies/{before[0]['id']}", {"position": "1"}),
            (f"{PAGE}/policies/{before[0]['id']}/delete", {}),
            (f"{PAGE}/holds", {"reason": "r", "actor": "x"}),
            (f"{PAGE}/holds/1/release", {}),
        ):
            r = await c.post(path, data={"csrf_token": csrf, **data})
            assert r.status_code == 403 and "for administrators." in r.text, path
    await h.create_user("plain", "user")
    async with https_client(h) as c:
        assert (await sign_in(c, "plain")).status_code == 303
        r = await c.get(PAGE)
        assert r.status_code == 403 and "administrators and auditors" in r.text
    assert await _policies(h) == before


async def test_retention_changes_without_the_csrf_token_are_refused(h: Harness) -> None:
    await reset_policies(h)
    before = await _policies(h)
    async with https_client(h) as c:
        await signed_in(c)
        for path, data in (
            (f"{PAGE}/policies", _rule("")),
            (f"{PAGE}/policies/{before[0]['id']}", {"position": "1"}),
            (f"{PAGE}/policies/{before[0]['id']}/delete", {}),
            (f"{PAGE}/holds", {"reason": "r", "actor": "x"}),
        ):
            r = await c.post(path, data={k: v for k, v in data.items() if k != "csrf_token"})
            assert r.status_code == 403 and "CSRF" in r.text, path
            r = await c.post(path, data={**data, "csrf_token": "0" * 64})
            assert r.status_code == 403 and "CSRF" in r.text, path
    assert await _policies(h) == before
