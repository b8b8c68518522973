"""The first start: an admin is created when there is none, and a generated password is shown
once, on stdout (never logged)."""

from __future__ import annotations

import re
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import select

from audit_service.auth.models import User
from tests.conftest import ADMIN_PASSWORD, Harness, make_settings, start_harness

harness = asynccontextmanager(start_harness)
ANNOUNCEMENT = re.compile(
    r"Bootstrap admin created: username '(?P<username>[^']+)', one-time password "
    r"'(?P<password>[^']+)'"
)


async def _users(h: Harness) -> list[tuple[str, str, bool]]:
    async with h.app.state.sessionmaker() as session:
        rows = await session.scalars(select(User).order_by(User.id))
        return [(u.username, u.role, u.is_active) for u in rows]


async def _login(h: Harness, username: str, password: str) -> int:
    r = await h.client.post("/login", json={"username": username, "password": password})
    return r.status_code


async def test_first_start_prints_a_one_time_password_once(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(db_url, bootstrap_admin_password=None)
    async with harness(settings) as h:
        out = capsys.readouterr().out
        assert out.count("Bootstrap admin created") == 1
        shown = ANNOUNCEMENT.search(out)
        assert shown is not None, out
        assert shown["username"] == "admin"
        password = shown["password"]
        assert len(password) >= 16
        assert await _users(h) == [("admin", "admin", True)]
        created = await h.events(action="user.created")
        assert len(created) == 1
        async with h.app.state.sessionmaker() as session:
            admin_id = await session.scalar(select(User.id).where(User.username == "admin"))
        event = created[0]
        assert (event.actor_type, event.module, event.outcome) == ("system", "users", "success")
        assert (event.target_type, event.target_id) == ("user", str(admin_id))
        assert password not in (event.description or "") + str(event.event_metadata)
        # The printed password is the real one.
        assert await _login(h, "admin", password) == 200

    async with harness(settings) as h:
        assert capsys.readouterr().out == ""
        assert await _users(h) == [("admin", "admin", True)]
        assert len(await h.events(action="user.created")) == 1
        # The second start did not reset the password either.
        assert await _login(h, "admin", password) == 200


async def test_bootstrap_admin_username_names_it(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(db_url, bootstrap_admin_password=None, bootstrap_admin_username="root")
    async with harness(settings) as h:
        shown = ANNOUNCEMENT.search(capsys.readouterr().out)
        assert shown is not None and shown["username"] == "root"
        assert await _users(h) == [("root", "admin", True)]
        [event] = await h.events(action="user.created")
        assert event.actor_type == "system" and "root" in (event.description or "")
        assert await _login(h, "root", shown["password"]) == 200
        assert await _login(h, "admin", shown["password"]) == 401


async def test_a_configured_password_is_used_and_never_printed(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with harness(make_settings(db_url)) as h:
        out = capsys.readouterr().out
        assert out == ""
        assert ADMIN_PASSWORD not in out
        assert await _users(h) == [("admin", "admin", True)]
        assert len(await h.events(action="user.created", actor_type="system")) == 1
        assert await _login(h, "admin", ADMIN_PASSWORD) == 200


async def test_no_bootstrap_when_an_active_admin_exists(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with harness(make_settings(db_url, bootstrap_admin_username="boss")) as h:
        assert await _users(h) == [("boss", "admin", True)]
        created_before = len(await h.events(action="user.created"))
        capsys.readouterr()

    async with harness(make_settings(db_url, bootstrap_admin_password=None)) as h:
        assert capsys.readouterr().out == ""
        assert await _users(h) == [("boss", "admin", True)]
        assert len(await h.events(action="user.created")) == created_before


async def test_a_name_held_by_a_non_admin_is_left_alone(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with harness(make_settings(db_url, bootstrap_admin_username="someone")) as h:
        # "someone" is the admin now; "admin" is an ordinary user.
        await h.create_user("admin", "user")
        async with h.app.state.sessionmaker() as session:
            someone = await session.scalar(select(User).where(User.username == "someone"))
            assert someone is not None
            someone.is_active = False
            await session.commit()
        capsys.readouterr()

    async with harness(make_settings(db_url, bootstrap_admin_password=None)) as h:
        # No active admin, but the name is taken by a plain user: a human must decide.
        assert capsys.readouterr().out == ""
        assert await _users(h) == [("someone", "admin", False), ("admin", "user", True)]


async def test_the_banner_points_to_the_password_change(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with harness(make_settings(db_url, bootstrap_admin_password=None)):
        out = capsys.readouterr().out
    assert "POST /me/password" in out


async def test_a_password_set_while_an_admin_exists_is_warned_about(
    db_url: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    async with harness(make_settings(db_url)):
        pass  # the first start uses the password: no warning
    assert not [r for r in caplog.records if "AUDIT_BOOTSTRAP_ADMIN_PASSWORD" in r.getMessage()]
    caplog.clear()
    other = "another-bootstrap-password"
    async with harness(make_settings(db_url, bootstrap_admin_password=other)) as h:
        warnings = [r for r in caplog.records if "AUDIT_BOOTSTRAP_ADMIN_PASSWORD" in r.getMessage()]
        assert len(warnings) == 1 and warnings[0].levelname == "WARNING"
        message = warnings[0].getMessage()
        assert "already exists" in message and "ignored" in message
        assert other not in message and ADMIN_PASSWORD not in message
        # Ignored indeed: the first password still works, the new one does not.
        assert await _login(h, "admin", ADMIN_PASSWORD) == 200
        assert await _login(h, "admin", other) == 401
    assert capsys.readouterr().out == ""
    caplog.clear()
    async with harness(make_settings(db_url, bootstrap_admin_password=None)):
        pass  # not configured: nothing to warn about
    assert not [r for r in caplog.records if "AUDIT_BOOTSTRAP_ADMIN_PASSWORD" in r.getMessage()]


async def test_a_password_for_a_name_held_by_a_non_admin_is_warned_about(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with harness(make_settings(db_url, bootstrap_admin_username="someone")) as h:
        await h.create_user("admin", "user")
        async with h.app.state.sessionmaker() as session:
            someone = await session.scalar(select(User).where(User.username == "someone"))
            assert someone is not None
            someone.is_active = False
            await session.commit()
    caplog.clear()
    async with harness(make_settings(db_url)):
        pass
    [warning] = [r for r in caplog.records if "AUDIT_BOOTSTRAP_ADMIN_PASSWORD" in r.getMessage()]
    assert "'admin'" in warning.getMessage() and "taken" in warning.getMessage()
