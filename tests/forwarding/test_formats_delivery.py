"""Every format through a real destination: the rows' event_id (the dedup key) arrives in
each of them."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Harness
from tests.forwarding.conftest import create, event_ids, record, until
from tests.forwarding.receivers import HecEmulator, WebhookReceiver


@pytest.mark.parametrize("fmt", ["native", "ocsf", "ecs", "cef"])
async def test_webhook_in_every_format(h: Harness, receiver: WebhookReceiver, fmt: str) -> None:
    await create(
        h,
        name=f"hook-{fmt}",
        kind="webhook",
        format=fmt,
        config={"url": receiver.url + "/hook"},
        secrets={"webhook_secrets": [receiver.secret]},
        filter={"sources": ["lms"]},
    )
    await record(h, 3)
    await until(h, lambda: len(receiver.accepted) >= 1)
    assert receiver.bad_signatures == 0
    body = receiver.accepted[0].body
    ids = await event_ids(h)
    if fmt == "cef":
        lines = body.decode().splitlines()
        assert len(lines) == 3 and all(line.startswith("CEF:0|") for line in lines)
        assert all(f"externalId={i}" in line for i, line in zip(ids, lines, strict=True))
        assert receiver.accepted[0].headers["content-type"].startswith("text/plain")
    else:
        events = json.loads(body)
        assert len(events) == 3
        text = json.dumps(events)
        assert all(i in text for i in ids)


async def test_hec_with_cef_bodies(h: Harness, hec: HecEmulator) -> None:
    await create(
        h,
        name="hec-cef",
        kind="splunk_hec",
        format="cef",
        config={"url": hec.url},
        secrets={"hec_token": hec.token},
        filter={"sources": ["lms"]},
    )
    await record(h, 2)
    await until(h, lambda: len(hec.events) >= 2)
    assert all(str(e["event"]).startswith("CEF:0|") for e in hec.events)
    assert [e["fields"]["event_id"] for e in hec.events] == await event_ids(h)
