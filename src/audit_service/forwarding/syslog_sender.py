"""Syslog delivery: RFC 5424 messages (formats' body: JSON or CEF) over TLS (default), TCP
or UDP, through `forwarding.syslog.SyslogTransport`, one connection per batch."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from audit_service.core.config import Settings
from audit_service.forwarding.formats import render_text
from audit_service.forwarding.senders import Sent
from audit_service.forwarding.syslog import (
    SyslogConfigError,
    SyslogError,
    SyslogMessageTooLarge,
    SyslogTransport,
    frame,
    message,
)
from audit_service.kit import outbound

if TYPE_CHECKING:
    from audit_service.forwarding.delivery import Target


async def send(settings: Settings, target: Target, events: Sequence[Mapping[str, Any]]) -> Sent:
    started = time.perf_counter()

    def ms() -> float:
        return round((time.perf_counter() - started) * 1000, 3)

    config = target.config
    host, port = str(config["host"]), int(config["port"])
    hostname = socket.gethostname()
    try:
        frames = [
            frame(message(e, render_text(target.format, e), hostname=hostname)) for e in events
        ]
    except SyslogMessageTooLarge as exc:
        return Sent("reject", error=f"syslog message too large: {exc}", elapsed_ms=ms())
    try:
        await outbound.check_target(settings, host, port)
    except outbound.TargetRefused as exc:
        return Sent("broken", error=str(exc), elapsed_ms=ms())
    except OSError as exc:
        return Sent("retry", error=str(exc), elapsed_ms=ms())
    transport: SyslogTransport | None = None
    try:
        transport = await SyslogTransport.connect(
            host,
            port,
            str(config.get("transport") or "tls"),
            config.get("ca_file"),
            config.get("server_name"),
            settings.forward_timeout,
        )
        await transport.send(frames)
    except SyslogMessageTooLarge as exc:
        return Sent("reject", error=f"syslog message too large: {exc}", elapsed_ms=ms())
    except SyslogConfigError as exc:
        return Sent("broken", error=str(exc), elapsed_ms=ms())
    except SyslogError as exc:
        return Sent("retry", error=str(exc), elapsed_ms=ms())
    finally:
        if transport is not None:
            with contextlib.suppress(SyslogError):
                await transport.close()
    return Sent("ok", elapsed_ms=ms())
