"""POST /me/password: the current password proves it; every session ends; a fresh token."""

from __future__ import annotations

import json

from tests.conftest import PASSWORD, Harness

NEW_PASSWORD = "a-brand-new-password-42"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _change(h: Harness, token: str, current: str, new: str) -> object:
    return await h.client.post(
        "/me/password",
        headers=_bearer(token),
        json={"current_password": current, "new_password": new},
    )


async def test_change_revokes_every_session_and_returns_a_fresh_token(h: Harness) -> None:
    await h.create_user("bob")
    used, other = await h.token("bob"), await h.token("bob")
    r = await h.client.post(
        "/me/password",
        headers=_bearer(used),
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert r.status_code == 200, r.text
    fresh = r.json()["access_token"]
    assert r.json()["token_type"] == "bearer"
    for old in (used, other):
        assert (await h.client.get("/me", headers=_bearer(old))).status_code == 401
    me = await h.client.get("/me", headers=_bearer(fresh))
    assert me.status_code == 200 and me.json()["username"] == "bob"
    old_login = await h.client.post("/login", json={"username": "bob", "password": PASSWORD})
    assert old_login.status_code == 401
    assert await h.token("bob", NEW_PASSWORD)

    [changed] = await h.events(action="auth.password_changed")
    assert (changed.outcome, changed.actor_name, changed.target_type, changed.status_code) == (
        "success",
        "bob",
        "user",
        200,
    )
    assert changed.event_metadata["sessions_revoked"] is True
    dump = json.dumps(changed.event_metadata) + (changed.description or "")
    assert PASSWORD not in dump and NEW_PASSWORD not in dump and fresh not in dump


async def test_a_wrong_current_password_is_refused_and_recorded(h: Harness) -> None:
    await h.create_user("bob")
    token = await h.token("bob")
    r = await h.client.post(
        "/me/password",
        headers=_bearer(token),
        json={"current_password": "not-my-password", "new_password": NEW_PASSWORD},
    )
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"] == "The current password is incorrect"
    event = await h.last_event()
    assert (event.action, event.outcome, event.actor_name) == (
        "auth.password_changed",
        "denied",
        "bob",
    )
    assert "not-my-password" not in json.dumps(event.event_metadata)
    # Nothing changed: the token and the old password still work.
    assert (await h.client.get("/me", headers=_bearer(token))).status_code == 200
    assert await h.token("bob")


async def test_guessing_the_current_password_hits_the_login_lockout(h: Harness) -> None:
    await h.create_user("bob")
    token = await h.token("bob")
    for _ in range(5):
        r = await _change(h, token, "a-wrong-guess", NEW_PASSWORD)
        assert r.status_code == 403  # type: ignore[attr-defined]
    r = await _change(h, token, PASSWORD, NEW_PASSWORD)
    assert r.status_code == 429  # type: ignore[attr-defined]
    login = await h.client.post("/login", json={"username": "bob", "password": PASSWORD})
    assert login.status_code == 429


async def test_the_new_password_follows_the_creation_policy(h: Harness) -> None:
    await h.create_user("bob")
    token = await h.token("bob")
    for body, field in (
        ({"current_password": PASSWORD, "new_password": "short"}, "new_password"),
        ({"current_password": PASSWORD, "new_password": "x" * 1025}, "new_password"),
        ({"current_password": PASSWORD, "new_password": PASSWORD}, "new_password"),
        ({"new_password": NEW_PASSWORD}, "current_password"),
        ({"current_password": PASSWORD, "new_password": NEW_PASSWORD, "x": 1}, "x"),
    ):
        r = await h.client.post("/me/password", headers=_bearer(token), json=body)
        assert r.status_code == 422, (body, r.text)
        assert ["body", field] in [e["loc"] for e in r.json()["errors"]], r.json()
    assert (await h.client.get("/me", headers=_bearer(token))).status_code == 200
    assert await h.token("bob")


async def test_anonymous_is_401(h: Harness) -> None:
    r = await h.client.post(
        "/me/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert r.status_code == 401
