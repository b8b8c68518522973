"""/admin/users: user administration, its permissions and the user.* events."""

from __future__ import annotations

import pytest

from tests.conftest import PASSWORD, Harness

NEW = {
    "username": "carol",
    "password": "carol-password-1",
    "role": "auditor",
    "full_name": "Carol C",
    "email": "carol@example.com",
}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/admin/users"),
        ("GET", "/admin/users"),
        ("GET", "/admin/users/1"),
        ("PATCH", "/admin/users/1"),
        ("DELETE", "/admin/users/1"),
        ("POST", "/admin/users/1/revoke-sessions"),
    ],
)
async def test_only_admins(h: Harness, method: str, path: str) -> None:
    assert (await h.client.request(method, path)).status_code == 401
    for role in ("user", "auditor"):
        headers = await h.auth(f"a-{role}", role=role)
        r = await h.client.request(method, path, headers=headers, json={"full_name": "x"})
        assert r.status_code == 403, (role, r.text)
        event = await h.last_event()
        assert (event.outcome, event.actor_role, event.module) == ("denied", role, "users")


async def test_create_list_get(h: Harness) -> None:
    headers = await h.auth()
    r = await h.client.post("/admin/users", headers=headers, json=NEW)
    assert r.status_code == 201
    user = r.json()
    assert {k: user[k] for k in ("username", "role", "full_name", "email", "is_active")} == {
        "username": "carol",
        "role": "auditor",
        "full_name": "Carol C",
        "email": "carol@example.com",
        "is_active": True,
    }
    assert "password" not in r.text and "password_hash" not in r.text
    event = await h.last_event()
    assert (event.action, event.target_id, event.actor_name) == (
        "user.created",
        str(user["id"]),
        "admin",
    )
    # The new account works.
    assert (
        await h.client.post("/login", json={"username": "carol", "password": NEW["password"]})
    ).status_code == 200

    listing = await h.client.get("/admin/users?page=1&page_size=1", headers=headers)
    assert listing.json()["total"] == 2 and [u["username"] for u in listing.json()["items"]] == [
        "admin"
    ]
    assert (await h.client.get(f"/admin/users/{user['id']}", headers=headers)).json()[
        "username"
    ] == "carol"
    assert (await h.last_event()).action == "user.viewed"
    r = await h.client.get("/admin/users/999", headers=headers)
    assert r.status_code == 404
    assert (await h.last_event()).target_id == "999"


@pytest.mark.parametrize(
    "body",
    [
        {**NEW, "password": "short"},
        {**NEW, "username": "a b"},
        {**NEW, "role": "superuser"},
        {**NEW, "email": "not-an-email"},
        {**NEW, "is_admin": True},
        {"username": "x"},
    ],
)
async def test_create_rejects_bad_input(h: Harness, body: dict[str, object]) -> None:
    headers = await h.auth()
    r = await h.client.post("/admin/users", headers=headers, json=body)
    assert r.status_code == 422 and r.json()["errors"]
    assert len(await h.events(action="user.created", outcome="success")) == 1  # the bootstrap admin


async def test_update_role_and_name(h: Harness) -> None:
    headers = await h.auth()
    bob = await h.create_user("bob")
    bob_headers = {"Authorization": f"Bearer {await h.token('bob')}"}
    r = await h.client.patch(
        f"/admin/users/{bob.id}", headers=headers, json={"role": "auditor", "full_name": "Bob B"}
    )
    assert r.status_code == 200 and r.json()["role"] == "auditor"
    event = await h.last_event()
    assert event.action == "user.updated"
    assert event.event_metadata["changed"] == ["full_name", "role"]
    assert event.event_metadata["before"]["role"] == "user"
    # A role change ends the old sessions so the new role applies at once.
    assert (await h.client.get("/me", headers=bob_headers)).status_code == 401
    assert (
        await h.client.patch(f"/admin/users/{bob.id}", headers=headers, json={})
    ).status_code == 422


async def test_deactivate_and_activate(h: Harness) -> None:
    headers = await h.auth()
    bob = await h.create_user("bob")
    r = await h.client.patch(f"/admin/users/{bob.id}", headers=headers, json={"is_active": False})
    assert r.json()["is_active"] is False
    assert (await h.last_event()).action == "user.deactivated"
    assert (
        await h.client.post("/login", json={"username": "bob", "password": PASSWORD})
    ).status_code == 401
    r = await h.client.patch(f"/admin/users/{bob.id}", headers=headers, json={"is_active": True})
    assert (await h.last_event()).action == "user.activated"
    assert (
        await h.client.post("/login", json={"username": "bob", "password": PASSWORD})
    ).status_code == 200


async def test_admins_cannot_lock_themselves_out(h: Harness) -> None:
    headers = await h.auth()
    for body in ({"is_active": False}, {"role": "user"}):
        r = await h.client.patch("/admin/users/1", headers=headers, json=body)
        assert r.status_code == 409
    assert (await h.client.delete("/admin/users/1", headers=headers)).status_code == 409
    assert (await h.last_event()).outcome == "failure"
    assert (await h.client.get("/me", headers=headers)).json()["role"] == "admin"


async def test_delete_keeps_history_with_the_snapshot(h: Harness) -> None:
    headers = await h.auth()
    await h.auth("bob", role="user")
    assert (await h.client.delete("/admin/users/2", headers=headers)).status_code == 204
    event = await h.last_event()
    assert (event.action, event.target_id, event.event_metadata["username"]) == (
        "user.deleted",
        "2",
        "bob",
    )
    # bob's earlier login is still there, with the name and role he had.
    login = (await h.events(action="auth.login", actor_name="bob"))[0]
    assert (login.actor_id, login.actor_role) == ("2", "user")
    assert (await h.client.get("/admin/users/2", headers=headers)).status_code == 404
    assert (await h.client.delete("/admin/users/2", headers=headers)).status_code == 404


async def test_revoke_sessions(h: Harness) -> None:
    headers = await h.auth()
    bob = await h.auth("bob", role="user")
    r = await h.client.post("/admin/users/2/revoke-sessions", headers=headers)
    assert r.status_code == 204
    assert (await h.last_event()).action == "user.sessions_revoked"
    r = await h.client.get("/me", headers=bob)
    assert r.status_code == 401
    assert (await h.last_event()).event_metadata["auth_error"] == "sessions_revoked"
    assert (
        await h.client.post("/login", json={"username": "bob", "password": PASSWORD})
    ).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"role": None},
        {"is_active": None},
        {"role": None, "full_name": "Bob B"},
        {"is_active": None, "role": "auditor"},
    ],
)
async def test_null_role_or_active_flag_is_a_422_naming_it(
    h: Harness, body: dict[str, object]
) -> None:
    headers = await h.auth()
    bob = await h.create_user("bob")
    r = await h.client.patch(f"/admin/users/{bob.id}", headers=headers, json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    nulls = [name for name, value in body.items() if value is None]
    assert [e["loc"] for e in r.json()["errors"]] == [["body", name] for name in nulls]
    got = (await h.client.get(f"/admin/users/{bob.id}", headers=headers)).json()
    assert (got["role"], got["is_active"], got["full_name"]) == ("user", True, None)
    assert (await h.last_event()).action == "user.viewed"


async def test_the_openapi_schema_does_not_offer_null(h: Harness) -> None:
    spec = (await h.client.get("/openapi.json")).json()
    props = spec["components"]["schemas"]["UserUpdate"]["properties"]
    for name in ("role", "is_active"):
        assert "null" not in str(props[name]), props[name]
