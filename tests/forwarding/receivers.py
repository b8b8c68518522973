"""Real receivers on loopback for the forwarding tests: a webhook receiver that verifies
every request with the `standardwebhooks` library (a third-party oracle) and a small Splunk
HEC emulator. Both are plain asyncio HTTP/1.1 servers in the test's event loop, and can be
told to misbehave: a status (with Retry-After), a hang, garbage, a closed connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks import Webhook


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # "hang": never answer; "garbage": not HTTP; "close": close without a word;
    # "accept_hang": take the request in (counted as accepted: the receiver has it) and
    # never answer, the sender cannot know.
    mode: str = "answer"


def _reason(status: int) -> str:
    return {200: "OK", 400: "Bad Request", 401: "Unauthorized", 410: "Gone", 429: "Too Many"}.get(
        status, "Status"
    )


class Server:
    """An HTTP/1.1 server; `script` replies are used first (one per request), then
    `default()`; every request is kept in `requests`."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.accepted: list[Request] = []
        self.script: list[Reply] = []
        self.always: Reply | None = None
        self.port = 0
        self._server: asyncio.Server | None = None
        self._stopping = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        self._stopping = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def check(self, request: Request) -> Reply | None:
        """A reply that overrides the script (e.g. a bad signature), or None."""
        return None

    def handle(self, request: Request) -> Reply:
        return Reply()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Request(method, path, headers, body)
                self.requests.append(request)
                reply = self.check(request)
                if reply is None:
                    reply = (
                        self.script.pop(0) if self.script else self.always or self.handle(request)
                    )
                if reply.mode == "answer" and 200 <= reply.status < 300:
                    self.accepted.append(request)
                if reply.mode == "accept_hang":
                    self.accepted.append(request)
                if reply.mode in ("hang", "accept_hang"):
                    await self._stopping.wait()
                    return
                if reply.mode == "garbage":
                    writer.write(b"this is not http\r\n\r\n")
                    await writer.drain()
                    return
                if reply.mode == "close":
                    return
                extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
                writer.write(
                    (
                        f"HTTP/1.1 {reply.status} {_reason(reply.status)}\r\n"
                        f"Content-Length: {len(reply.body)}\r\nContent-Type: application/json\r\n"
                        f"{extra}\r\n"
                    ).encode()
                    + reply.body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            return
        finally:
            writer.close()


class WebhookReceiver(Server):
    """Verifies each request's Standard Webhooks signature with the reference library;
    `accepted` holds the verified, accepted bodies (parsed), `bad_signatures` the others."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret
        self.bad_signatures = 0

    def check(self, request: Request) -> Reply | None:
        try:
            Webhook(self.secret).verify(request.body, request.headers, json_parse=False)
        except Exception:
            self.bad_signatures += 1
            return Reply(401, b'{"error":"bad signature"}')
        return None

    def handle(self, request: Request) -> Reply:
        return Reply(200, b"{}")

    def events(self) -> list[dict[str, Any]]:
        """The events of every accepted request, in order (duplicates kept)."""
        out: list[dict[str, Any]] = []
        for r in self.accepted:
            value = json.loads(r.body)
            out.extend(value if isinstance(value, list) else [value])
        return out


class HecEmulator(Server):
    """POST /services/collector/event (token checked, concatenated JSON objects parsed and
    kept in `events`), GET /services/collector/health; `script` replies as HEC answers.

    Indexer acknowledgement (`ack = True`): event posts need `X-Splunk-Request-Channel`
    (code 10 without), answer an `ackId` (per channel, from 0), and
    POST /services/collector/ack {"acks": [ids]} answers {"acks": {"id": bool}}: true once
    `ack_delay` seconds passed since the batch came in, never for the ids in `never_ack`
    (an indexer that lost them). With ack off, /ack answers code 14."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.events: list[dict[str, Any]] = []
        self.ack = False
        self.ack_delay = 0.0
        self.never_ack: set[int] = set()
        self.ack_polls: list[list[int]] = []
        self.batches: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self._acks: dict[str, dict[int, float]] = {}

    def acked_batches(self) -> list[list[dict[str, Any]]]:
        """The batches whose ackId was answered true, in ackId order per channel."""
        return [self.batches[k] for k in sorted(self.batches) if self._is_acked(*k)]

    def _is_acked(self, channel: str, ack_id: int) -> bool:
        at = self._acks.get(channel, {}).get(ack_id)
        return (
            at is not None
            and ack_id not in self.never_ack
            and asyncio.get_running_loop().time() >= at + self.ack_delay
        )

    def _ack_poll(self, request: Request) -> Reply:
        if not self.ack:
            return Reply(400, b'{"text":"ACK is disabled","code":14}')
        channel = request.headers.get("x-splunk-request-channel", "")
        if not channel:
            return Reply(400, b'{"text":"Data channel is missing","code":10}')
        if channel not in self._acks:
            return Reply(400, b'{"text":"Invalid data channel","code":11}')
        try:
            ids = [int(i) for i in json.loads(request.body)["acks"]]
        except (ValueError, KeyError, TypeError):
            return Reply(400, b'{"text":"Invalid data format","code":6}')
        self.ack_polls.append(ids)
        answer = {str(i): self._is_acked(channel, i) for i in ids}
        return Reply(200, json.dumps({"acks": answer}).encode())

    def handle(self, request: Request) -> Reply:
        if request.path == "/services/collector/health":
            return Reply(200, b'{"text":"HEC is healthy","code":17}')
        if request.path not in ("/services/collector/event", "/services/collector/ack"):
            return Reply(404, b'{"text":"The requested URL was not found","code":404}')
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Splunk "):
            return Reply(401, b'{"text":"Token is required","code":2}')
        if auth[len("Splunk ") :] != self.token:
            return Reply(403, b'{"text":"Invalid token","code":4}')
        if request.path == "/services/collector/ack":
            return self._ack_poll(request)
        channel = request.headers.get("x-splunk-request-channel", "")
        if self.ack and not channel:
            return Reply(400, b'{"text":"Data channel is missing","code":10}')
        decoder = json.JSONDecoder()
        text, at, found = request.body.decode(), 0, []
        try:
            while at < len(text):
                obj, at = decoder.raw_decode(text, at)
                if "event" not in obj:
                    return Reply(400, b'{"text":"Event field is required","code":12}')
                found.append(obj)
        except ValueError:
            return Reply(400, b'{"text":"Invalid data format","code":6}')
        self.events.extend(found)
        if not self.ack:
            return Reply(200, b'{"text":"Success","code":0}')
        acks = self._acks.setdefault(channel, {})
        ack_id = len(acks)
        acks[ack_id] = asyncio.get_running_loop().time()
        self.batches[(channel, ack_id)] = found
        return Reply(200, json.dumps({"text": "Success", "code": 0, "ackId": ack_id}).encode())


@contextlib.asynccontextmanager
async def running(server: Server) -> AsyncIterator[Server]:
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
