"""Syslog: RFC 5424 messages, RFC 6587 octet-counted framing over TCP, RFC 5425 TLS, UDP
(RFC 5426) opt-in.

A message:

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [audit@32473 event_id="…" …] BOM MSG

- PRI = facility 13 ("log audit") * 8 + severity from the outcome: success → 6
  (informational), failure and denied → 4 (warning), error → 3 (error); anything else → 5
  (notice).
- TIMESTAMP = `recorded_at`, RFC 3339 UTC with microseconds (`…T23:27:10.123456Z`).
- MSGID = the action when it is 1 to 32 printable US-ASCII characters, else `-` (the action is
  in the structured data too).
- Structured data: one element `audit@32473` (32473 is the enterprise number RFC 5612
  reserves for documentation, as RFC 5424's own examples use; we have no IANA number of
  our own) with event_id, action, outcome, source, tenant (omitted when the event has
  none); `"`, `\\` and `]` are escaped with a backslash (RFC 5424 §6.3.3).
- MSG = the UTF-8 BOM + the UTF-8 body (the event in a forwarding format).

`MAX_MESSAGE_BYTES` (64 KiB) bounds one message: RFC 5425 receivers must take 2 KiB and
should take 8 KiB; rsyslog takes what `global(maxMessageSize=…)` allows (8 KiB by default:
set it to 64k). A bigger message raises `SyslogMessageTooLarge` (the delivery side
dead-letters that event). UDP datagrams are capped lower, at `MAX_UDP_BYTES`.

`SyslogTransport` sends frames over one connection; every failure raises a `SyslogError`
whose text is safe to record (host, port, mode and the OS/TLS reason; never a payload).
TCP has no acknowledgements: a send succeeds once the bytes are handed to the kernel, so a
receiver that dies afterwards loses what was in flight — the delivery side re-sends from its
cursor after a connection error (at least once; `event_id` in every message dedups).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Literal

from audit_service.forwarding.formats._values import rfc3339

FACILITY = 13  # log audit
SEVERITY = {"success": 6, "failure": 4, "denied": 4, "error": 3}
DEFAULT_SEVERITY = 5  # notice
SD_ID = "audit@32473"
BOM = b"\xef\xbb\xbf"
MAX_MESSAGE_BYTES = 64 * 1024
MAX_UDP_BYTES = 65_000  # below IPv4's 65,507-byte UDP payload limit
MODES = ("tcp", "tls", "udp")
Mode = Literal["tcp", "tls", "udp"]
DEFAULT_TIMEOUT = 15.0


class SyslogError(Exception):
    """A syslog failure; `str(error)` is safe to record (no payload, no secrets)."""


class SyslogConfigError(SyslogError, ValueError):
    """Bad settings: unknown mode, port out of range, an unreadable or unparsable CA."""


class SyslogConnectionError(SyslogError):
    """Could not connect, or the connection broke (reconnect and re-send)."""


class SyslogTLSError(SyslogConnectionError):
    """The TLS handshake failed (e.g. the server certificate did not verify)."""


class SyslogTimeout(SyslogConnectionError):
    """Connect, handshake or send took longer than the timeout."""


class SyslogMessageTooLarge(SyslogError):
    """One message is over the size limit: a permanent, per-event rejection."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"syslog message of {size} bytes is over the limit of {limit} bytes")
        self.size = size
        self.limit = limit


# --- messages ---------------------------------------------------------------------------------


def _header_field(value: str | None, max_length: int) -> str:
    """An RFC 5424 header field: 1 to max_length printable US-ASCII (33 to 126), else NILVALUE."""
    if not value or len(value) > max_length or not all(33 <= ord(c) <= 126 for c in value):
        return "-"
    return value


def _clean_header_field(value: str, max_length: int) -> str:
    """Configured names (hostname, app name): invalid characters dropped, cut to length."""
    kept = "".join(c for c in value if 33 <= ord(c) <= 126)[:max_length]
    return kept or "-"


def sd_escape(value: str) -> str:
    """An SD-PARAM value: `"`, `\\` and `]` get a backslash (RFC 5424 §6.3.3)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def structured_data(event: Mapping[str, Any]) -> str:
    params = (
        ("event_id", event.get("event_id")),
        ("action", event.get("action")),
        ("outcome", event.get("outcome")),
        ("source", event.get("source")),
        ("tenant", event.get("tenant_id")),
    )
    body = "".join(f' {name}="{sd_escape(str(v))}"' for name, v in params if v is not None)
    return f"[{SD_ID}{body}]"


def severity(outcome: Any) -> int:
    return SEVERITY.get(str(outcome), DEFAULT_SEVERITY)


def message(
    event: Mapping[str, Any],
    body: str,
    *,
    hostname: str,
    app_name: str = "audit-service",
    procid: str = "-",
) -> bytes:
    """One RFC 5424 message for `event` carrying `body` (raises SyslogMessageTooLarge over
    MAX_MESSAGE_BYTES)."""
    pri = FACILITY * 8 + severity(event.get("outcome"))
    timestamp = rfc3339(event.get("recorded_at")) or "-"
    action = event.get("action")
    header = " ".join(
        (
            f"<{pri}>1",
            timestamp,
            _clean_header_field(hostname, 255),
            _clean_header_field(app_name, 48),
            _clean_header_field(procid, 128),
            _header_field(None if action is None else str(action), 32),
            structured_data(event),
        )
    )
    data = header.encode() + b" " + BOM + body.encode("utf-8")
    if len(data) > MAX_MESSAGE_BYTES:
        raise SyslogMessageTooLarge(len(data), MAX_MESSAGE_BYTES)
    return data


def frame(msg: bytes) -> bytes:
    """RFC 6587 octet counting: `LEN SP MSG`."""
    return b"%d " % len(msg) + msg


def _frame_at(data: bytes, at: int) -> tuple[int, int]:
    """(start, end) of the message of the frame at byte `at` (ValueError if none is there)."""
    space = data.find(b" ", at, at + 12)
    digits = data[at:space]
    if space < 0 or not digits.isdigit() or digits.startswith(b"0"):
        raise ValueError(f"not an octet-counted frame at byte {at}")
    end = space + 1 + int(digits)
    if end > len(data):
        raise ValueError(f"the frame at byte {at} is cut short")
    return space + 1, end


def unframe(data: bytes) -> list[bytes]:
    """The messages in octet-counted `data` (ValueError if it is not exactly a sequence of
    whole frames)."""
    out = []
    at = 0
    while at < len(data):
        start, at = _frame_at(data, at)
        out.append(data[start:at])
    return out


def _one_frame(item: bytes) -> tuple[int, int]:
    start, end = _frame_at(item, 0)
    if end != len(item):
        raise ValueError("trailing bytes after the frame")
    return start, end


# --- transport --------------------------------------------------------------------------------


def tls_context(ca_file: str | None = None, ca_data: str | None = None) -> ssl.SSLContext:
    """A client context that verifies the server's certificate and name (RFC 5425 §5.2),
    trusting `ca_file` / `ca_data` (PEM) when given, else the system's CAs; TLS ≥ 1.2."""
    try:
        context = ssl.create_default_context(cafile=ca_file, cadata=ca_data)
    except (OSError, ssl.SSLError, ValueError) as exc:
        what = "CA file" if ca_file is not None else "CA certificates"
        raise SyslogConfigError(f"{what} could not be loaded: {_reason(exc)}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.error: OSError | None = None
        self.closed = False

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, OSError):
            self.error = exc

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True


class SyslogTransport:
    """One connection to a syslog receiver.

        transport = await SyslogTransport.connect("siem.example", 6514, "tls", ca_file=…)
        await transport.send([frame(message(event, body, hostname=…)), …])
        await transport.close()

    `send` takes octet-counted frames (`frame()`); over UDP each frame's message goes in a
    datagram of its own, without the count. After any SyslogConnectionError the transport
    is closed: connect a new one and re-send.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        mode: Mode,
        timeout: float,
        writer: asyncio.StreamWriter | None = None,
        reader: asyncio.StreamReader | None = None,
        datagrams: asyncio.DatagramTransport | None = None,
        protocol: _Datagrams | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.mode = mode
        self.timeout = timeout
        self._writer = writer
        self._reader = reader
        self._datagrams = datagrams
        self._protocol = protocol
        self._closed = False

    @property
    def where(self) -> str:
        return f"{self.mode}://{self.host}:{self.port}"

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        mode: Mode | str = "tls",
        ca_file: str | None = None,
        server_name: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (the brief's interface)
        *,
        ca_data: str | None = None,
    ) -> SyslogTransport:
        """Connect (TCP, TLS — verifying the certificate for `server_name`, default `host` —
        or UDP)."""
        if mode not in MODES:
            raise SyslogConfigError(f"unknown syslog mode {mode!r}: expected tcp, tls or udp")
        if not 1 <= port <= 65535:
            raise SyslogConfigError(f"port {port} is out of range (1 to 65535)")
        where = f"{mode}://{host}:{port}"
        if mode == "udp":
            loop = asyncio.get_running_loop()
            try:
                datagrams, protocol = await asyncio.wait_for(
                    loop.create_datagram_endpoint(_Datagrams, remote_addr=(host, port)), timeout
                )
            except TimeoutError:
                raise SyslogTimeout(f"{where}: no address within {timeout:g} s") from None
            except OSError as exc:
                raise SyslogConnectionError(f"{where}: {_reason(exc)}") from None
            return cls(
                host=host,
                port=port,
                mode="udp",
                timeout=timeout,
                datagrams=datagrams,
                protocol=protocol,
            )
        context = tls_context(ca_file, ca_data) if mode == "tls" else None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    host,
                    port,
                    ssl=context,
                    server_hostname=(server_name or host) if context else None,
                    ssl_handshake_timeout=timeout if context else None,
                ),
                timeout,
            )
        except TimeoutError:
            raise SyslogTimeout(f"{where}: connect timed out after {timeout:g} s") from None
        except ssl.SSLError as exc:
            raise SyslogTLSError(f"{where}: TLS handshake failed: {_reason(exc)}") from None
        except OSError as exc:
            raise SyslogConnectionError(f"{where}: connect failed: {_reason(exc)}") from None
        return cls(
            host=host,
            port=port,
            mode="tls" if context else "tcp",
            timeout=timeout,
            writer=writer,
            reader=reader,
        )

    async def send(self, frames: Sequence[bytes]) -> None:
        """Send octet-counted frames, in order (raises SyslogError; SyslogMessageTooLarge
        before anything is sent)."""
        if self._closed:
            raise SyslogConnectionError(f"{self.where}: the connection is closed")
        if self._datagrams is not None:
            await self._send_datagrams(frames)
            return
        assert self._writer is not None and self._reader is not None
        for item in frames:
            start, end = self._checked(item)
            if end - start > MAX_MESSAGE_BYTES:
                raise SyslogMessageTooLarge(end - start, MAX_MESSAGE_BYTES)
        # A receiver never talks back: end of stream means it closed the connection.
        if self._reader.at_eof() or self._writer.is_closing():
            await self._broken("the receiver closed the connection")
        try:
            self._writer.write(b"".join(frames))
            await asyncio.wait_for(self._writer.drain(), self.timeout)
        except TimeoutError:
            await self._broken(f"send timed out after {self.timeout:g} s", timed_out=True)
        except ssl.SSLError as exc:
            await self._broken(f"TLS error: {_reason(exc)}")
        except OSError as exc:
            await self._broken(f"send failed: {_reason(exc)}")

    async def send_messages(self, messages: Sequence[bytes]) -> None:
        """Send RFC 5424 messages (framed here for TCP/TLS)."""
        await self.send([frame(m) for m in messages])

    async def _send_datagrams(self, frames: Sequence[bytes]) -> None:
        assert self._datagrams is not None and self._protocol is not None
        messages = []
        for item in frames:
            start, end = self._checked(item)
            msg = item[start:end]
            if len(msg) > MAX_UDP_BYTES:
                raise SyslogMessageTooLarge(len(msg), MAX_UDP_BYTES)
            messages.append(msg)
        for msg in messages:
            self._check_datagrams()
            try:
                self._datagrams.sendto(msg)
            except OSError as exc:
                await self._broken(f"send failed: {_reason(exc)}")
        # Let an ICMP error from this batch surface now rather than on the next one.
        await asyncio.sleep(0)
        self._check_datagrams()

    def _checked(self, item: bytes) -> tuple[int, int]:
        try:
            return _one_frame(item)
        except ValueError as exc:
            raise SyslogError(f"{self.where}: not one octet-counted frame: {exc}") from None

    def _check_datagrams(self) -> None:
        assert self._protocol is not None
        error, self._protocol.error = self._protocol.error, None
        if error is not None:
            raise SyslogConnectionError(f"{self.where}: {_reason(error)}")
        if self._protocol.closed:
            raise SyslogConnectionError(f"{self.where}: the socket is closed")

    async def _broken(self, reason: str, *, timed_out: bool = False) -> None:
        await self.close()
        error = SyslogTimeout if timed_out else SyslogConnectionError
        raise error(f"{self.where}: {reason}")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._datagrams is not None:
            self._datagrams.close()
        if self._writer is not None:
            self._writer.close()
            # Closing anyway: nothing more to say to this receiver.
            with contextlib.suppress(TimeoutError, OSError, ssl.SSLError):
                await asyncio.wait_for(self._writer.wait_closed(), self.timeout)

    async def __aenter__(self) -> SyslogTransport:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
