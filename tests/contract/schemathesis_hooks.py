"""Schemathesis hooks for tests/contract/test_schemathesis.py (SCHEMATHESIS_HOOKS).

Credentials are fetched from the running service and refreshed every few seconds: the run
itself calls /logout, revoke-sessions and DELETE /admin/api-keys, which would otherwise leave
every later request at 401 and test nothing but the authentication."""

from __future__ import annotations

import os
from typing import Any

import httpx
import schemathesis

BASE_URL = os.environ["AUDIT_CONTRACT_BASE_URL"]
ADMIN_PASSWORD = os.environ["AUDIT_CONTRACT_ADMIN_PASSWORD"]


@schemathesis.auth(refresh_interval=3)
class ServiceCredentials:
    """An admin JWT for the admin API, and an API key for /events (ServiceKeyHeader)."""

    def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> dict[str, str]:
        with httpx.Client(base_url=BASE_URL, timeout=10) as client:
            r = client.post("/login", json={"username": "admin", "password": ADMIN_PASSWORD})
            r.raise_for_status()
            token = r.json()["access_token"]
            r = client.post(
                "/admin/api-keys",
                json={"name": "schemathesis", "scopes": ["events:write"]},
                headers={"Authorization": f"Bearer {token}"},
            )
            r.raise_for_status()
            return {"token": token, "key": r.json()["key"]}

    def set(
        self, case: schemathesis.Case, data: dict[str, str], ctx: schemathesis.AuthContext
    ) -> None:
        headers: dict[str, Any] = case.headers if case.headers is not None else {}
        if case.operation.path.startswith("/events"):
            headers["X-API-Key"] = data["key"]
        else:
            headers["Authorization"] = f"Bearer {data['token']}"
        case.headers = headers
