"""Abuse controls that hold: the login lockout is the service's own atomic counter (not the
audit log, which API keys write into), and no unverified credential picks its own bucket."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from audit_service.auth.models import LoginCounter
from audit_service.core import security
from tests.conftest import ADMIN_PASSWORD, Harness, make_settings, start_harness
from tests.ingestion.helpers import bearer, event, make_key

FORGED_KEYS = [f"ask_{'A' * 11}{i}_{'b' * 40}" for i in range(6)]


class CountingHasher(PasswordHasher):
    """The tests' cheap argon2, counting how many password checks really ran."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)
        self.verified = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verified += 1
        return bool(super().verify(hash, password))


@pytest.fixture
def hasher(monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingHasher]:
    counting = CountingHasher()
    monkeypatch.setattr(security, "_hasher", counting)
    monkeypatch.setattr(security, "_dummy_hash", counting.hash("dummy-password"))
    yield counting


def _now() -> str:
    return datetime.now(UTC).isoformat()


async def _login(h: Harness, password: str, username: str = "admin") -> int:
    r = await h.client.post("/login", json={"username": username, "password": password})
    return r.status_code


async def _attempts(h: Harness, username: str) -> int | None:
    async with h.app.state.sessionmaker() as session:
        return await session.scalar(
            select(LoginCounter.attempts).where(LoginCounter.username == username)
        )


async def test_concurrent_wrong_passwords_reach_argon2_at_most_threshold_times(
    h: Harness, hasher: CountingHasher
) -> None:
    # 30 guesses at once, each its own task through the whole app (middleware, recorder,
    # argon2 in worker threads): the count is taken before the check, atomically.
    statuses = await asyncio.gather(*(_login(h, f"guess-{i:02d}-wrong") for i in range(30)))
    assert sorted(statuses) == [401] * 5 + [429] * 25
    assert hasher.verified == 5
    assert await _attempts(h, "admin") == 30
    failed = await h.events(action="auth.login_failed")
    assert len(failed) == 5
    denied = [e for e in await h.events(action="auth.login") if e.status_code == 429]
    assert len(denied) == 25 and all(e.event_metadata["locked_out"] for e in denied)
    # The right password is refused as well now: the lock holds without checking it.
    before = hasher.verified
    assert await _login(h, ADMIN_PASSWORD) == 429
    assert hasher.verified == before


async def test_concurrent_guesses_at_an_unknown_name_are_capped_too(
    h: Harness, hasher: CountingHasher
) -> None:
    statuses = await asyncio.gather(*(_login(h, "x-wrong", username="nobody") for _ in range(12)))
    assert sorted(statuses) == [401] * 5 + [429] * 7
    assert hasher.verified == 5


async def test_ingested_auth_events_do_not_touch_the_lockout(h: Harness) -> None:
    key = await make_key(h)
    forged = {"actor_name": "admin", "actor_id": "1", "actor_role": "admin", "ip": None}
    # Stamped "now", after the admin's own login in make_key: the old event-counting lockout
    # only counted failures since the last successful login.
    # A service posting five failed logins for the admin does not lock them out ...
    for _ in range(5):
        r = await h.client.post(
            "/events",
            headers=bearer(key),
            json=event(action="auth.login_failed", occurred_at=_now(), **forged),
        )
        assert r.status_code == 201, r.text
    assert await _login(h, ADMIN_PASSWORD) == 200
    # ... and posting successful logins does not reset a real lockout.
    for _ in range(3):
        assert await _login(h, "wrong-password") == 401
    r = await h.client.post(
        "/events",
        headers=bearer(key),
        json=event(action="auth.login", outcome="success", occurred_at=_now(), **forged),
    )
    assert r.status_code == 201, r.text
    for _ in range(2):
        assert await _login(h, "wrong-password") == 401
    assert await _login(h, ADMIN_PASSWORD) == 429
    assert await _attempts(h, "admin") == 6


async def test_a_lock_ends_with_its_window(db_url: str) -> None:
    settings = make_settings(db_url, login_lockout_failures=2, login_lockout_window=1)
    async for h in start_harness(settings):
        for _ in range(2):
            assert await _login(h, "wrong-password") == 401
        r = await h.client.post("/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        assert r.status_code == 429 and int(r.headers["retry-after"]) <= 2
        await asyncio.sleep(1.1)
        assert await _login(h, ADMIN_PASSWORD) == 200
        assert await _attempts(h, "admin") is None  # a success clears the row


async def test_forged_api_key_tokens_share_the_client_ip_bucket(db_url: str) -> None:
    async for h in start_harness(make_settings(db_url, default_rate_limit="5/minute")):
        codes = [
            (await h.client.get("/me", headers=bearer(token))).status_code for token in FORGED_KEYS
        ]
        assert codes == [401] * 5 + [429]
        rows = await h.events(path="/me")
        assert [e.status_code for e in rows] == [401] * 5 + [429]
        assert rows[-1].outcome == "denied"


async def test_forged_keys_on_events_hit_the_ip_limit_before_verification(db_url: str) -> None:
    async for h in start_harness(make_settings(db_url, ingest_ip_rate_limit="5/minute")):
        responses = [
            await h.client.post("/events", headers=bearer(token), json=event())
            for token in FORGED_KEYS
        ]
        assert [r.status_code for r in responses] == [401] * 5 + [429]
        assert int(responses[-1].headers["retry-after"]) >= 1
        rows = await h.events(path="/events")
        assert [e.status_code for e in rows] == [401] * 5 + [429]
        # The limited request never reached key verification.
        assert "auth_error" not in rows[-1].event_metadata
        assert rows[0].event_metadata["auth_error"] == "unknown_api_key"


async def test_the_ingest_ip_limit_counts_real_keys_too(db_url: str) -> None:
    settings: dict[str, Any] = {"ingest_ip_rate_limit": "3/minute"}
    async for h in start_harness(make_settings(db_url, **settings)):
        key = await make_key(h)
        codes = [
            (await h.client.post("/events", headers=bearer(key), json=event())).status_code
            for _ in range(4)
        ]
        assert codes == [201, 201, 201, 429]


async def test_a_successful_login_sweeps_counters_whose_window_ended(db_url: str) -> None:
    settings = make_settings(db_url, login_lockout_window=1)
    async for h in start_harness(settings):
        for name in ("sprayed-1", "sprayed-2"):
            assert await _login(h, "x-wrong", username=name) == 401
        await asyncio.sleep(1.1)
        assert await _login(h, "x-wrong", username="recent") == 401
        assert await _login(h, ADMIN_PASSWORD) == 200
        assert await _attempts(h, "sprayed-1") is None and await _attempts(h, "sprayed-2") is None
        assert await _attempts(h, "recent") == 1  # its window is still open
