"""Syslog delivery over TLS to a real rsyslog (the formats helper's fixture): every event
recorded through the API arrives, verified against our private CA; a wrong CA is a
recorded failure and the cursor waits."""

from __future__ import annotations

import asyncio

from tests.conftest import Harness
from tests.forwarding.conftest import admin, create, deliver, event_ids, record
from tests.forwarding.rsyslog import Rsyslog, rsyslog

__all__ = ["rsyslog"]


async def test_events_reach_rsyslog_over_tls(h: Harness, rsyslog: Rsyslog) -> None:
    mark = rsyslog.mark()
    await create(
        h,
        name="rsyslog",
        kind="syslog",
        format="cef",
        config={
            "host": "127.0.0.1",
            "port": rsyslog.tls_port,
            "transport": "tls",
            "ca_file": str(rsyslog.ca_file),
            "server_name": rsyslog.server_name,
        },
        filter={"sources": ["lms"]},
    )
    await record(h, 5, description='line one\nline two ] " \\ ünï')
    await deliver(h)
    got = await asyncio.to_thread(rsyslog.wait_for, 5, after=mark)
    ids = await event_ids(h)
    assert len(got) == 5
    for message, event_id in zip(got, ids, strict=True):
        assert message["input"] == "tls" and message["msgid"] == "exam.submitted"
        assert f"externalId={event_id}" in message["msg"]
        assert f'event_id="{event_id}"' in message["sd"]


async def test_a_wrong_ca_is_refused_and_retried(h: Harness, rsyslog: Rsyslog) -> None:
    d = await create(
        h,
        name="rsyslog-wrong-ca",
        kind="syslog",
        config={
            "host": "127.0.0.1",
            "port": rsyslog.tls_port,
            "ca_file": str(rsyslog.wrong_ca_file),
            "server_name": rsyslog.server_name,
        },
        filter={"sources": ["lms"]},
    )
    await record(h, 1)
    await deliver(h)
    r = await h.client.get(
        f"/admin/forwarding/destinations/{d['id']}/status", headers=await admin(h)
    )
    status = r.json()
    assert status["cursor"] == d["cursor"] and "certificate" in status["last_error"]
