"""Syslog: RFC 5424 messages and RFC 6587 frames, and delivery to a real rsyslog over TLS
(RFC 5425), plain TCP and UDP: every frame parsed, bodies byte-exact."""

from __future__ import annotations

import asyncio
import re
import ssl
import uuid
from typing import Any

import pytest

from audit_service.forwarding import syslog
from audit_service.forwarding.formats import render_text
from audit_service.forwarding.syslog import (
    MAX_MESSAGE_BYTES,
    SyslogConfigError,
    SyslogConnectionError,
    SyslogError,
    SyslogMessageTooLarge,
    SyslogTimeout,
    SyslogTLSError,
    SyslogTransport,
    frame,
    message,
    unframe,
)
from tests.forwarding.formats.events import sample
from tests.forwarding.rsyslog import Rsyslog, free_port

BOM = "\ufeff"
BODIES = [
    "plain",
    "line one\nline two\r\nline three\n\n",
    'quotes " and \\ backslashes \\" and ] brackets ]] [x@1 a="b"]',
    "UTF-8: é ü ß 日本語 🎉 \u2028 \u0085",
    "tab\tand\x01control",
    "=|\\=|CEF:0|x|y",
    "x" * 8192,
    "é" * 4096,  # 8 KB of two-byte characters
]


def _event(i: int, **over: Any) -> dict[str, Any]:
    return sample(event_id=uuid.uuid4(), id=i, **over)


def test_message_layout() -> None:
    event = sample(tenant_id='t"1]\\', action="auth.login")
    msg = message(event, "body", hostname="host-1", procid="42")
    header, _, body = msg.partition(b"\xef\xbb\xbf")
    assert body == b"body"
    assert header == (
        b"<110>1 2026-12-02T23:27:10.234567Z host-1 audit-service 42 auth.login "
        b'[audit@32473 event_id="0b7e6f4e-4d2a-4c35-9f0e-3c1d2b8a9e10" action="auth.login" '
        b'outcome="success" source="audit-service" tenant="t\\"1\\]\\\\"] '
    )


@pytest.mark.parametrize(
    ("outcome", "pri"), [("success", 110), ("failure", 108), ("denied", 108), ("error", 107)]
)
def test_facility_13_and_severity_from_the_outcome(outcome: str, pri: int) -> None:
    assert message(sample(outcome=outcome), "", hostname="h").startswith(b"<%d>1 " % pri)


@pytest.mark.parametrize(
    ("action", "msgid"),
    [("auth.login", "auth.login"), ("a" * 32, "a" * 32), ("a" * 33, "-"), ("é.x", "-"),
     ("has space", "-"), ("", "-")],
)  # fmt: skip
def test_msgid_is_the_action_when_it_fits(action: str, msgid: str) -> None:
    fields = message(sample(action=action), "", hostname="h").split(b" ")
    assert fields[5].decode() == msgid


def test_header_names_are_cleaned() -> None:
    msg = message(sample(tenant_id=None), "", hostname="bad host\n", app_name="", procid="x" * 200)
    fields = msg.split(b" ")
    assert fields[2:5] == [b"badhost", b"-", b"x" * 128]
    assert b"tenant=" not in msg


def test_size_limit() -> None:
    fits = message(sample(), "", hostname="h")
    room = MAX_MESSAGE_BYTES - len(fits)
    assert len(message(sample(), "x" * room, hostname="h")) == MAX_MESSAGE_BYTES
    with pytest.raises(SyslogMessageTooLarge) as caught:
        message(sample(), "x" * (room + 1), hostname="h")
    assert caught.value.size == MAX_MESSAGE_BYTES + 1
    assert "x" * 10 not in str(caught.value)  # no payload in the error


def test_frames() -> None:
    msgs = [b"a", b"", b"12 34 ", "é".encode() * 1000]
    data = b"".join(frame(m) for m in msgs if m)
    assert frame(b"abc") == b"3 abc"
    assert unframe(data) == [m for m in msgs if m]
    for bad in (b"3 ab", b"x abc", b"03 abc", b"abc"):
        with pytest.raises(ValueError, match="frame"):
            unframe(bad)


def _check(received: list[dict[str, Any]], sent: list[tuple[dict[str, Any], str, bytes]]) -> None:
    by_id = {}
    for item in received:
        found = re.search(r'event_id="([0-9a-f-]+)"', item["sd"])
        assert found, item
        by_id[found.group(1)] = item
    assert len(by_id) == len(sent) == len(received)
    for event, body, msg in sent:
        got = by_id[str(event["event_id"])]
        assert got["raw"] == msg.decode("utf-8")  # byte-exact, whole message
        assert got["msg"] == BOM + body
        assert got["sd"] == syslog.structured_data(event)  # rsyslog found where SD ends
        assert got["msgid"] == (event["action"] if len(event["action"]) <= 32 else "-")
        assert got["app"] == "audit-service" and got["host"] == "test-host"
        assert int(got["pri"]) == 104 + syslog.severity(event["outcome"])


def _batch(n: int) -> list[tuple[dict[str, Any], str, bytes]]:
    out = []
    formats = ("native", "ocsf", "ecs", "cef")
    outcomes = ("success", "failure", "denied", "error")
    for i in range(n):
        tenants = ("tenant-a", 't"]\\', "]", None, 'é \\] "x"')
        event = _event(
            i,
            outcome=outcomes[i % 4],
            description=BODIES[i % len(BODIES)],
            tenant_id=tenants[i % len(tenants)],
        )
        plain = i % 3 == 0
        body = BODIES[i % len(BODIES)] if plain else render_text(formats[i % 4], event)
        out.append((event, body, message(event, body, hostname="test-host")))
    return out


@pytest.mark.parametrize("mode", ["tls", "tcp"])
async def test_every_frame_reaches_rsyslog_byte_exact(rsyslog: Rsyslog, mode: str) -> None:
    sent = _batch(200)
    mark = rsyslog.mark()
    port = rsyslog.tls_port if mode == "tls" else rsyslog.tcp_port
    transport = await SyslogTransport.connect(
        "127.0.0.1", port, mode, ca_file=str(rsyslog.ca_file), server_name="localhost"
    )
    async with transport:
        for start in range(0, len(sent), 50):
            await transport.send([frame(msg) for _e, _b, msg in sent[start : start + 50]])
    received = await asyncio.to_thread(rsyslog.wait_for, len(sent), after=mark)
    assert {r["input"] for r in received} == {mode}
    _check(received, sent)


async def test_the_largest_message_reaches_rsyslog(rsyslog: Rsyslog) -> None:
    event = _event(1)
    room = MAX_MESSAGE_BYTES - len(message(event, "", hostname="test-host"))
    body = ("日本" * MAX_MESSAGE_BYTES)[: room // 3]
    msg = message(event, body, hostname="test-host")
    mark = rsyslog.mark()
    async with await SyslogTransport.connect(
        "localhost", rsyslog.tls_port, "tls", ca_file=str(rsyslog.ca_file)
    ) as transport:
        await transport.send_messages([msg])
    received = await asyncio.to_thread(rsyslog.wait_for, 1, after=mark)
    _check(received, [(event, body, msg)])


async def test_udp_one_message_per_datagram(rsyslog: Rsyslog) -> None:
    sent = [(e, b, m) for e, b, m in _batch(40) if len(m) < 8000]
    mark = rsyslog.mark()
    async with await SyslogTransport.connect("127.0.0.1", rsyslog.udp_port, "udp") as transport:
        for item in sent:
            await transport.send([frame(item[2])])
            await asyncio.sleep(0.002)  # loopback UDP still drops bursts into a full buffer
        with pytest.raises(SyslogMessageTooLarge):
            await transport.send([frame(b"x" * 65_001)])
    received = await asyncio.to_thread(rsyslog.wait_for, len(sent), after=mark)
    assert {r["input"] for r in received} == {"udp"}
    _check(received, sent)


async def test_tls_with_the_wrong_ca_is_refused(rsyslog: Rsyslog) -> None:
    with pytest.raises(SyslogTLSError, match="certificate verify failed") as caught:
        await SyslogTransport.connect(
            "127.0.0.1", rsyslog.tls_port, "tls", ca_file=str(rsyslog.wrong_ca_file)
        )
    assert isinstance(caught.value, SyslogConnectionError)
    # The right CA but another name than the certificate's.
    with pytest.raises(SyslogTLSError):
        await SyslogTransport.connect(
            "127.0.0.1",
            rsyslog.tls_port,
            "tls",
            ca_file=str(rsyslog.ca_file),
            server_name="siem.example",
        )
    # No CA given: the system's CAs do not know the test CA either.
    with pytest.raises(SyslogTLSError):
        await SyslogTransport.connect("localhost", rsyslog.tls_port, "tls")


async def test_tls_to_a_plain_listener_fails_cleanly(rsyslog: Rsyslog) -> None:
    with pytest.raises(SyslogConnectionError):
        await SyslogTransport.connect(
            "127.0.0.1", rsyslog.tcp_port, "tls", ca_file=str(rsyslog.ca_file), timeout=3
        )


async def test_bad_settings_and_unreachable_receivers(tmp_path: Any) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(SyslogConfigError, match="CA file"):
        await SyslogTransport.connect("127.0.0.1", 6514, "tls", ca_file=str(garbage))
    with pytest.raises(SyslogConfigError):
        await SyslogTransport.connect("127.0.0.1", 6514, "tls", ca_file=str(tmp_path / "none"))
    with pytest.raises(SyslogConfigError, match="mode"):
        await SyslogTransport.connect("127.0.0.1", 6514, "relp")
    with pytest.raises(SyslogConfigError, match="port"):
        await SyslogTransport.connect("127.0.0.1", 0, "tcp")
    with pytest.raises(SyslogConnectionError, match="connect failed") as caught:
        await SyslogTransport.connect("127.0.0.1", free_port(), "tcp")
    assert isinstance(caught.value, SyslogError)


async def test_a_closed_receiver_is_noticed(rsyslog: Rsyslog) -> None:
    """A listener that accepts and closes: the next send raises instead of 'succeeding'."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        transport = await SyslogTransport.connect("127.0.0.1", port, "tcp", timeout=3)
        await asyncio.sleep(0.2)
        with pytest.raises(SyslogConnectionError, match="closed"):
            await transport.send([frame(b"x")])
        with pytest.raises(SyslogConnectionError):
            await transport.send([frame(b"x")])
    finally:
        server.close()
        await server.wait_closed()


async def test_frames_are_checked_before_sending(rsyslog: Rsyslog) -> None:
    async with await SyslogTransport.connect("127.0.0.1", rsyslog.tcp_port, "tcp") as transport:
        with pytest.raises(SyslogError, match="octet-counted"):
            await transport.send([b"not a frame"])
        with pytest.raises(SyslogMessageTooLarge):
            await transport.send([frame(b"x" * (MAX_MESSAGE_BYTES + 1))])


async def test_a_receiver_that_hangs_times_out() -> None:
    """One that never answers the TLS handshake, and one that never reads."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(SyslogTimeout):
            await SyslogTransport.connect("127.0.0.1", port, "tls", timeout=0.5)
        transport = await SyslogTransport.connect("127.0.0.1", port, "tcp", timeout=0.5)
        chunk = [frame(b"x" * 60_000)] * 16  # ~1 MB a send
        with pytest.raises(SyslogTimeout, match="timed out"):
            for _ in range(200):
                await transport.send(chunk)
        with pytest.raises(SyslogConnectionError, match="closed"):
            await transport.send([frame(b"x")])
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_tls_receiver_closing_mid_stream_is_a_connection_error(rsyslog: Rsyslog) -> None:
    """TLS completes, then the receiver drops the connection: the next send raises a
    SyslogConnectionError (safe text) instead of hanging or 'succeeding' forever."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(rsyslog.directory / "server.pem", rsyslog.directory / "server-key.pem")

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(10)
        writer.transport.abort()  # no close_notify: a reset mid-stream

    server = await asyncio.start_server(drop, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        transport = await SyslogTransport.connect(
            "127.0.0.1", port, "tls", ca_file=str(rsyslog.ca_file), server_name="localhost",
            timeout=3,
        )  # fmt: skip
        with pytest.raises(SyslogConnectionError) as caught:
            for _ in range(50):
                await transport.send([frame(b"secret-payload " * 100)])
                await asyncio.sleep(0.05)
        assert "secret-payload" not in str(caught.value)
    finally:
        server.close()
        await server.wait_closed()
