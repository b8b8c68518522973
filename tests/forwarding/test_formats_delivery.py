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


def test_bodies_from_events_encoded_once_are_the_same() -> None:
    """The deliverer encodes each event once (for the 1 MB cap) and splices those bytes into
    the request: the same webhook body byte for byte, the same HEC objects."""
    import json
    import uuid
    from datetime import UTC, datetime

    from audit_service.forwarding import senders

    event = {
        "recorded_at": datetime.now(UTC),
        "event_id": uuid.uuid4(),
        "action": "exam.submitted",
        "outcome": "success",
        "tenant_id": None,
        "source": "lms",
    }

    def objects(body: bytes) -> list[object]:
        decoder, text, at, out = json.JSONDecoder(), body.decode(), 0, []
        while at < len(text):
            obj, at = decoder.raw_decode(text, at)
            out.append(obj)
        return out

    for fmt, rendered in (
        ("native", {"x": 'ü"]\n', "n": 1}),
        ("cef", "CEF:0|a|b|1|x|y|5|msg=ü\\= \\\\"),
    ):
        encoded = senders.encode(rendered)
        for batch in (True, False):
            assert senders.webhook_body(
                fmt, [rendered, rendered], batch=batch
            ) == senders.webhook_body_encoded(fmt, [encoded, encoded], batch=batch)
        for config in ({"index": "audit", "hec_host": "h"}, {}):
            plain = senders.hec_body(config, fmt, [event, event], [rendered, rendered])
            spliced = senders.hec_body(
                config, fmt, [event, event], [rendered, rendered], [encoded, encoded]
            )
            assert objects(plain) == objects(spliced)
