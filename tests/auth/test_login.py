"""POST /login, tokens, /logout and /me."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from jose import jwt

from audit_service.core.security import create_access_token
from tests.conftest import ADMIN_PASSWORD, PASSWORD, Harness, make_settings, start_harness


def _claims(token: str) -> dict[str, object]:
    return jwt.get_unverified_claims(token)


async def test_login_with_json_returns_a_pinned_hs256_token(h: Harness) -> None:
    r = await h.client.post("/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "HS256"
    claims = _claims(body["access_token"])
    assert set(claims) >= {"sub", "role", "jti", "iat", "exp"}
    assert claims["role"] == "admin"
    event = await h.last_event()
    assert (event.action, event.outcome, event.actor_name, event.actor_type) == (
        "auth.login",
        "success",
        "admin",
        "user",
    )
    assert event.event_metadata["token_id"] == claims["jti"]


async def test_login_with_oauth2_form_for_swagger(h: Harness) -> None:
    r = await h.client.post("/login/form", data={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 200
    me = await h.client.get("/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"})
    assert me.json()["username"] == "admin"


async def test_unknown_user_and_wrong_password_look_identical(h: Harness) -> None:
    await h.create_user("bob")
    wrong = await h.client.post("/login", json={"username": "bob", "password": "nope-nope"})
    unknown = await h.client.post("/login", json={"username": "zed", "password": "nope-nope"})
    assert wrong.status_code == unknown.status_code == 401

    def strip(r: object) -> dict[str, object]:
        body = dict(r.json())  # type: ignore[attr-defined]
        body.pop("request_id")
        return body

    assert strip(wrong) == strip(unknown)
    assert wrong.headers["www-authenticate"] == "Bearer"
    failed = await h.events(action="auth.login_failed")
    assert [(e.actor_name, e.outcome, e.actor_type) for e in failed] == [
        ("bob", "failure", "anonymous"),
        ("zed", "failure", "anonymous"),
    ]


async def test_inactive_user_cannot_log_in(h: Harness) -> None:
    await h.create_user("sleepy", active=False)
    r = await h.client.post("/login", json={"username": "sleepy", "password": PASSWORD})
    assert r.status_code == 401 and r.json()["detail"] == "Incorrect username or password"


async def test_passwords_never_reach_the_record(h: Harness) -> None:
    await h.client.post("/login", json={"username": "admin", "password": "wrong-secret-xyz"})
    await h.client.post("/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    headers = await h.auth()
    await h.client.post(
        "/admin/users", headers=headers, json={"username": "eve", "password": "eve-secret-password"}
    )
    dump = json.dumps(
        [
            {c: str(getattr(e, c)) for c in ("description", "event_metadata", "actor_name")}
            for e in await h.events()
        ]
    )
    for secret in ("wrong-secret-xyz", ADMIN_PASSWORD, "eve-secret-password"):
        assert secret not in dump
    assert headers["Authorization"].split()[1] not in dump


async def test_login_bad_input_is_a_clear_422(h: Harness) -> None:
    r = await h.client.post(
        "/login", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["errors"][0]["type"] == "json_invalid"
    r = await h.client.post("/login", json={"username": "admin"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "password"]
    r = await h.client.post("/login", json=["admin", "pw"])
    assert r.status_code == 422
    assert (await h.last_event()).action == "auth.login"


async def test_lockout_after_five_failures_even_with_the_right_password(h: Harness) -> None:
    for _ in range(5):
        r = await h.client.post("/login", json={"username": "admin", "password": "bad-password"})
        assert r.status_code == 401
    r = await h.client.post("/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 429
    assert 1 <= int(r.headers["retry-after"]) <= 901
    assert r.headers["content-type"] == "application/problem+json"
    event = await h.last_event()
    assert (event.action, event.outcome, event.status_code) == ("auth.login", "denied", 429)
    # Unknown names lock the same way (no enumeration through the lockout) ...
    for _ in range(5):
        await h.client.post("/login", json={"username": "ghost", "password": "bad-password"})
    assert (
        await h.client.post("/login", json={"username": "ghost", "password": "x"})
    ).status_code == 429
    # ... and other accounts are unaffected.
    await h.create_user("bob")
    assert (
        await h.client.post("/login", json={"username": "bob", "password": PASSWORD})
    ).status_code == 200


async def test_a_successful_login_resets_the_failure_count(h: Harness) -> None:
    for _ in range(4):
        await h.client.post("/login", json={"username": "admin", "password": "bad-password"})
    await h.token()
    for _ in range(4):
        await h.client.post("/login", json={"username": "admin", "password": "bad-password"})
    assert (
        await h.client.post("/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    ).status_code == 200


async def test_login_is_rate_limited_per_ip(db_url: str) -> None:
    async for h in start_harness(make_settings(db_url, login_rate_limit="3/minute")):
        for _ in range(3):
            await h.client.post("/login", json={"username": "x", "password": "y"})
        r = await h.client.post("/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert (await h.last_event()).outcome == "denied"


async def test_me_and_logout_revokes_only_that_token(h: Harness) -> None:
    first = {"Authorization": f"Bearer {await h.token()}"}
    second = {"Authorization": f"Bearer {await h.token()}"}
    me = await h.client.get("/me", headers=first)
    assert me.status_code == 200
    assert {k: me.json()[k] for k in ("username", "role", "is_active")} == {
        "username": "admin",
        "role": "admin",
        "is_active": True,
    }
    assert (await h.client.post("/logout", headers=first)).status_code == 204
    assert (await h.last_event()).action == "auth.logout"
    assert (await h.client.get("/me", headers=first)).status_code == 401
    assert (await h.last_event()).event_metadata["auth_error"] == "token_revoked"
    assert (await h.client.get("/me", headers=second)).status_code == 200


def _none_alg_token(claims: dict[str, object]) -> str:
    def b64(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


async def test_tokens_that_must_be_refused(h: Harness) -> None:
    good = await h.token()
    claims = _claims(good)
    key = h.app.state.signing_key
    expired, _ = create_access_token(subject="1", role="admin", version=0, key=key, ttl_seconds=-5)
    foreign, _ = create_access_token(
        subject="1", role="admin", version=0, key="another-key-" + "y" * 40, ttl_seconds=600
    )
    now = int(datetime.now(UTC).timestamp())
    hs512 = jwt.encode({**claims, "exp": now + 600}, key, algorithm="HS512")
    no_exp = jwt.encode({k: v for k, v in claims.items() if k != "exp"}, key, algorithm="HS256")
    for token in (expired, foreign, _none_alg_token(claims), hs512, no_exp, "garbage", good + "x"):
        r = await h.client.get("/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, token
        assert r.headers["content-type"] == "application/problem+json"
    assert (
        await h.client.get("/me", headers={"Authorization": f"Bearer {good}"})
    ).status_code == 200


async def test_deactivated_users_tokens_stop_working(h: Harness) -> None:
    admin = await h.auth()
    bob = await h.auth("bob", role="user")
    r = await h.client.patch("/admin/users/2", headers=admin, json={"is_active": False})
    assert r.status_code == 200
    r = await h.client.get("/me", headers=bob)
    assert r.status_code == 401
    event = await h.last_event()
    assert (event.actor_name, event.outcome) == ("bob", "denied")


async def test_login_takes_json_only_and_the_form_has_its_own_operation(h: Harness) -> None:
    form = {"username": "admin", "password": ADMIN_PASSWORD}
    r = await h.client.post("/login", data=form)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    r = await h.client.post("/login/form", json=form)
    assert r.status_code == 422
    # Swagger UI's Authorize sends the OAuth2 grant fields too.
    r = await h.client.post(
        "/login/form", data={**form, "grant_type": "password", "scope": "", "client_id": ""}
    )
    assert r.status_code == 200, r.text
    r = await h.client.post("/login/form", data={**form, "password": "bad-password"})
    assert r.status_code == 401
    events = await h.events(path="/login/form")
    assert [(e.action, e.outcome) for e in events] == [
        ("auth.login", "failure"),
        ("auth.login", "success"),
        ("auth.login_failed", "failure"),
    ]


async def test_invalid_utf8_in_a_login_body_is_a_4xx_problem(h: Harness) -> None:
    cases = [
        ("/login", b'{"username": "adm\xff\xfein", "password": "x"}', "application/json"),
        ("/login", b"\xff\xfe\xfd", "application/json"),
        ("/login/form", b"username=adm%FF%FEin&password=x", "application/x-www-form-urlencoded"),
        ("/login/form", b"username=adm\xff\xfein&password=x", "application/x-www-form-urlencoded"),
    ]
    for path, body, content_type in cases:
        r = await h.client.post(path, content=body, headers={"content-type": content_type})
        assert 400 <= r.status_code < 500, (path, body, r.status_code, r.text)
        assert r.headers["content-type"] == "application/problem+json", (path, body)
        assert (await h.last_event()).status_code == r.status_code
    assert await h.token()  # and the service is fine


async def test_openapi_login_contract(h: Harness) -> None:
    spec = (await h.client.get("/openapi.json")).json()
    login = spec["paths"]["/login"]["post"]["requestBody"]["content"]
    assert list(login) == ["application/json"]
    assert login["application/json"]["schema"] == {"$ref": "#/components/schemas/LoginRequest"}
    form = spec["paths"]["/login/form"]["post"]["requestBody"]["content"]
    assert list(form) == ["application/x-www-form-urlencoded"]
    flows = spec["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]
    assert flows["password"]["tokenUrl"] == "/login/form"
