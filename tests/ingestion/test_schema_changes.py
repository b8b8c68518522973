"""Action-schema changes: racing writers get a clean 404/409, and every change is recorded as
`config.changed` with the values before and after."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from audit_service.auth.models import User
from audit_service.core.errors import Conflict, NotFound
from audit_service.ingestion import service
from audit_service.ingestion.models import ActionSchema
from audit_service.kit.schemas import MASK, config_change
from tests.conftest import Harness

URL = "/admin/actions/exam.submitted/schema"
V1: dict[str, Any] = {"type": "object", "properties": {"answers": {"type": "integer"}}}
V2: dict[str, Any] = {"type": "object", "required": ["answers"]}


class _Audit:
    """Stands in for the request's audit context (what describe() was told is kept)."""

    def __init__(self) -> None:
        self.metadata: dict[str, Any] = {}

    def describe(self, **fields: Any) -> None:
        self.metadata.update(fields)


async def test_put_after_a_concurrent_delete_is_a_409(h: Harness) -> None:
    admin_headers = await h.auth()
    assert (await h.client.put(URL, headers=admin_headers, json=V1)).status_code == 200
    maker = h.app.state.sessionmaker
    async with maker() as writer, maker() as deleter:
        admin = (await writer.scalars(select(User).where(User.username == "admin"))).one()
        # The writer has read the row (as PUT does) and holds it when the delete commits.
        read = await writer.get(ActionSchema, "exam.submitted")
        assert read is not None
        row = await deleter.get(ActionSchema, "exam.submitted")
        assert row is not None
        await deleter.delete(row)
        await deleter.commit()
        with pytest.raises(Conflict):
            await service.put_schema(writer, _Audit(), admin, "exam.submitted", V2)  # type: ignore[arg-type]
        await writer.rollback()


async def test_delete_after_a_concurrent_delete_is_a_404(h: Harness) -> None:
    admin_headers = await h.auth()
    assert (await h.client.put(URL, headers=admin_headers, json=V1)).status_code == 200
    maker = h.app.state.sessionmaker
    async with maker() as first, maker() as second:
        assert await first.get(ActionSchema, "exam.submitted") is not None
        row = await second.get(ActionSchema, "exam.submitted")
        assert row is not None
        await second.delete(row)
        await second.commit()
        with pytest.raises(NotFound):
            await service.delete_schema(first, _Audit(), "exam.submitted")  # type: ignore[arg-type]
        await first.rollback()


async def test_racing_put_and_delete_over_http_never_500(h: Harness) -> None:
    admin = await h.auth()
    statuses: list[int] = []
    for round_ in range(15):
        calls = [
            h.client.put(URL, headers=admin, json=V1 if round_ % 2 else V2),
            h.client.delete(URL, headers=admin),
            h.client.put(URL, headers=admin, json=V2),
            h.client.delete(URL, headers=admin),
        ]
        for r in await asyncio.gather(*calls):
            statuses.append(r.status_code)
            if r.status_code >= 400:
                assert r.headers["content-type"] == "application/problem+json", r.text
    assert set(statuses) <= {200, 204, 404, 409}, statuses


async def test_changes_are_recorded_with_before_and_after(h: Harness) -> None:
    admin = await h.auth()
    assert (await h.client.put(URL, headers=admin, json=V1)).status_code == 200
    assert (await h.client.put(URL, headers=admin, json=V2)).status_code == 200
    assert (await h.client.delete(URL, headers=admin)).status_code == 204
    changes = await h.events(action="config.changed")
    assert [(e.event_metadata["before"], e.event_metadata["after"]) for e in changes] == [
        (None, V1),
        (V1, V2),
        (V2, None),
    ]
    assert all(e.event_metadata["setting"] == "action_schema" for e in changes)
    assert all(e.target_id == "exam.submitted" for e in changes)


def test_secrets_are_masked_in_config_changes() -> None:
    change = config_change(
        before={"jwt_secret": "s3cr3t", "nested": [{"api_key": "ask_x", "limit": 5}]},
        after={"password": "p", "Token": "t", "limit": 6},
    )
    assert change == {
        "before": {"jwt_secret": MASK, "nested": [{"api_key": MASK, "limit": 5}]},
        "after": {"password": MASK, "Token": MASK, "limit": 6},
    }
    assert "s3cr3t" not in repr(change)
