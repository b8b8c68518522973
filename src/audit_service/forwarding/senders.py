"""The outbound side: rendering a batch for a destination's kind and format, sending it
(webhook, Splunk HEC, syslog), and classifying what the receiver said.

Outbound safety lives in kit/outbound.py (shared with the alert channels): redirects are
never followed, TLS is verified, every request times out, and private or special targets are
refused unless `AUDIT_FORWARD_ALLOW_PRIVATE` allows them. Error texts recorded from here never
contain a secret (the token and signing secrets are only ever put into headers).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import httpx

from audit_service.core.config import Settings
from audit_service.forwarding.formats import render_json, render_text
from audit_service.kit import outbound
from audit_service.kit.outbound import TargetRefused, retry_after
from audit_service.kit.webhooks import sign_headers

MAX_BATCH_BYTES = 1024 * 1024
# ok: accepted; retry: transient (the cursor waits); reject: these events are refused for good
# (dead letter, split a batch to find the bad one); broken: the destination's setup is wrong
# (401/403, HEC token errors, a redirect, a refused target): failing at once, still retried;
# gone: 410, the receiver asks us to stop (disabled).
Verdict = Literal["ok", "retry", "reject", "broken", "gone"]


@dataclass(frozen=True, slots=True)
class Sent:
    verdict: Verdict
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    elapsed_ms: float = 0.0
    # HEC with indexer acknowledgement: the ackId of an accepted batch, or the answer of
    # an /ack poll ({"0": true, …}).
    ack_id: int | None = None
    acks: Mapping[str, bool] | None = None


# --- rendering -------------------------------------------------------------------------------


def render_one(fmt: str, event: Mapping[str, Any]) -> Any:
    """A JSON value (native, ocsf, ecs) or a CEF line."""
    if fmt == "cef":
        return render_text("cef", event)
    return render_json(fmt, event)


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def encoded_size(rendered: Any) -> int:
    """Bytes a rendered event takes on the wire (for the 1 MB batch cap)."""
    if isinstance(rendered, str):
        return len(rendered.encode())
    return len(_compact(rendered))


def encode(rendered: Any) -> bytes:
    """A rendered event as it goes on the wire (compact JSON, or the CEF line)."""
    if isinstance(rendered, str):
        return rendered.encode()
    return _compact(rendered)


def webhook_body_encoded(fmt: str, encoded: Sequence[bytes], *, batch: bool) -> tuple[bytes, str]:
    """`webhook_body` from events encoded once (at read time, for the size cap): the same
    bytes, without encoding every event a second time."""
    if fmt == "cef":
        return b"\n".join(encoded) + b"\n", "text/plain; charset=utf-8"
    if batch:
        return b"[" + b",".join(encoded) + b"]", "application/json"
    return encoded[0], "application/json"


def webhook_body(fmt: str, rendered: Sequence[Any], *, batch: bool) -> tuple[bytes, str]:
    """(body, content type): a JSON array (or one object), or CEF lines as text."""
    if fmt == "cef":
        return ("\n".join(rendered) + "\n").encode(), "text/plain; charset=utf-8"
    if batch:
        return _compact(list(rendered)), "application/json"
    return _compact(rendered[0]), "application/json"


def hec_body(
    config: Mapping[str, Any],
    fmt: str,
    events: Sequence[Mapping[str, Any]],
    rendered: Sequence[Any],
    encoded: Sequence[bytes] | None = None,
) -> bytes:
    """Concatenated HEC event objects (`encoded`: the events' bodies already encoded, spliced
    in as they are)."""
    if encoded is not None:
        return _hec_body_encoded(config, fmt, events, encoded)
    parts = []
    host = config.get("hec_host") or socket.gethostname()
    for event, body in zip(events, rendered, strict=True):
        recorded = event["recorded_at"]
        item: dict[str, Any] = {
            "time": round(recorded.timestamp(), 6) if isinstance(recorded, datetime) else None,
            "host": host,
            "source": "audit-service",
            "sourcetype": config.get("sourcetype") or ("cef" if fmt == "cef" else "_json"),
            "event": body,
            "fields": {
                "event_id": str(event["event_id"]),
                "action": event["action"],
                "outcome": event["outcome"],
                "tenant": event.get("tenant_id") or "",
                "source": event["source"],
            },
        }
        if config.get("index"):
            item["index"] = config["index"]
        parts.append(_compact(item))
    return b"".join(parts)


def _hec_body_encoded(
    config: Mapping[str, Any],
    fmt: str,
    events: Sequence[Mapping[str, Any]],
    encoded: Sequence[bytes],
) -> bytes:
    parts = []
    host = config.get("hec_host") or socket.gethostname()
    sourcetype = config.get("sourcetype") or ("cef" if fmt == "cef" else "_json")
    # The CEF line is a JSON string; the JSON formats are objects already.
    index = b',"index":' + _compact(config["index"]) if config.get("index") else b""
    for event, body in zip(events, encoded, strict=True):
        recorded = event["recorded_at"]
        head = {
            "time": round(recorded.timestamp(), 6) if isinstance(recorded, datetime) else None,
            "host": host,
            "source": "audit-service",
            "sourcetype": sourcetype,
        }
        fields = {
            "event_id": str(event["event_id"]),
            "action": event["action"],
            "outcome": event["outcome"],
            "tenant": event.get("tenant_id") or "",
            "source": event["source"],
        }
        value = _compact(body.decode()) if fmt == "cef" else body
        parts.append(
            _compact(head)[:-1]
            + b',"event":'
            + value
            + b',"fields":'
            + _compact(fields)
            + index
            + b"}"
        )
    return b"".join(parts)


# --- responses -------------------------------------------------------------------------------


def _http_verdict(status: int) -> Verdict:
    if 200 <= status < 300:
        return "ok"
    if status in (400, 413, 422):
        return "reject"
    if status in (401, 403) or 300 <= status < 400:
        return "broken"
    if status == 410:
        return "gone"
    return "retry"  # 408, 409, 425, 429, 5xx, and whatever else: never drop anything


async def post(
    client: httpx.AsyncClient,
    settings: Settings,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    hec: bool = False,
) -> Sent:
    started = time.perf_counter()

    def ms() -> float:
        return round((time.perf_counter() - started) * 1000, 3)

    try:
        await outbound.check_url(settings, url)
        response = await client.post(url, content=body, headers=dict(headers))
    except TargetRefused as exc:
        return Sent("broken", error=str(exc), elapsed_ms=ms())
    except (httpx.HTTPError, OSError, ValueError) as exc:
        return Sent("retry", error=outbound.describe_failure(exc), elapsed_ms=ms())
    status = response.status_code
    verdict = _http_verdict(status)
    wait = retry_after(response.headers.get("retry-after"))
    ack_id: int | None = None
    acks: Mapping[str, bool] | None = None
    if hec:
        verdict = _hec_verdict(status, response, verdict)
        ack_id, acks = _hec_acks(response)
    if verdict == "ok":
        return Sent("ok", status=status, elapsed_ms=ms(), ack_id=ack_id, acks=acks)
    detail = response.text[:200].replace("\n", " ").strip()
    error = f"HTTP {status}" + (f": {detail}" if detail else "")
    if 300 <= status < 400:
        error = f"HTTP {status}: redirects are not followed"
    return Sent(verdict, status=status, error=error, retry_after=wait, elapsed_ms=ms())


def _hec_verdict(status: int, response: httpx.Response, default: Verdict) -> Verdict:
    """HEC answers {"text": …, "code": n}: 1-4 token problems, 6 invalid data format,
    7 incorrect index, 12/13 event field missing/blank → dead letter, 9 busy → retry."""
    try:
        code = response.json().get("code")
    except (ValueError, AttributeError):
        code = None
    if status == 200 and code in (0, None):
        return "ok" if code == 0 or default == "ok" else default
    if code in (1, 2, 3, 4):
        return "broken"
    if code in (6, 7, 12, 13):
        return "reject"
    if code == 9 or status == 503:
        return "retry"
    if code in (10, 11, 14):
        return "broken"  # channel / ack settings: the destination's setup
    if status == 200:
        return "ok"
    return default if default != "reject" else "reject"


def _hec_acks(response: httpx.Response) -> tuple[int | None, Mapping[str, bool] | None]:
    """ackId of an event post, or the acks map of an /ack poll (anything else: None)."""
    try:
        data = response.json()
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    ack_id = data.get("ackId")
    acks = data.get("acks")
    return (
        ack_id if isinstance(ack_id, int) and not isinstance(ack_id, bool) else None,
        {str(k): v is True for k, v in acks.items()} if isinstance(acks, dict) else None,
    )


async def send_webhook(
    client: httpx.AsyncClient,
    settings: Settings,
    config: Mapping[str, Any],
    secrets: Mapping[str, Any],
    msg_id: str,
    body: bytes,
    content_type: str,
) -> Sent:
    headers = {**(config.get("headers") or {}), "Content-Type": content_type}
    headers.update(sign_headers(list(secrets.get("webhook_secrets") or []), msg_id, body))
    return await post(client, settings, str(config["url"]), body, headers)


async def send_hec(
    client: httpx.AsyncClient,
    settings: Settings,
    config: Mapping[str, Any],
    secrets: Mapping[str, Any],
    body: bytes,
    channel: str | None = None,
) -> Sent:
    """POST the batch; with `hec_ack` (a channel given), accepted means *indexed*: the
    ackId is polled at /services/collector/ack until true. Not acknowledged within
    `forward_hec_ack_timeout` (at most half the lease): a retry, the batch is sent again
    (the cursor never moved)."""
    base = str(config["url"]).rstrip("/")
    headers = {
        "Authorization": f"Splunk {secrets.get('hec_token') or ''}",
        "Content-Type": "application/json",
    }
    if channel is not None:
        headers["X-Splunk-Request-Channel"] = channel
    sent = await post(client, settings, base + "/services/collector/event", body, headers, hec=True)
    if channel is None or sent.verdict != "ok":
        return sent
    if sent.ack_id is None:
        return Sent(
            "broken",
            status=sent.status,
            error="hec_ack is on but the receiver answered without an ackId "
            "(is indexer acknowledgement enabled for this token?)",
            elapsed_ms=sent.elapsed_ms,
        )
    return await wait_for_ack(client, settings, base, headers, sent)


async def wait_for_ack(
    client: httpx.AsyncClient,
    settings: Settings,
    base: str,
    headers: Mapping[str, str],
    sent: Sent,
) -> Sent:
    started = time.perf_counter()
    timeout = min(settings.forward_hec_ack_timeout, settings.forward_lease_seconds / 2)
    body = _compact({"acks": [sent.ack_id]})
    key = str(sent.ack_id)
    last_error = "not acknowledged yet"
    while True:
        polled = await post(
            client, settings, base + "/services/collector/ack", body, headers, hec=True
        )
        elapsed = sent.elapsed_ms + round((time.perf_counter() - started) * 1000, 3)
        if polled.verdict == "ok" and polled.acks is not None and polled.acks.get(key):
            return Sent("ok", status=sent.status, elapsed_ms=elapsed, ack_id=sent.ack_id)
        if polled.verdict in ("broken", "gone"):
            return Sent(
                polled.verdict,
                status=polled.status,
                error=f"ack: {polled.error}",
                elapsed_ms=elapsed,
            )
        if polled.verdict != "ok":
            last_error = polled.error or polled.verdict
        if time.perf_counter() - started + settings.forward_hec_ack_poll > timeout:
            return Sent(
                "retry",
                status=sent.status,
                error=f"ackId {sent.ack_id} not acknowledged within {timeout:g} s "
                f"({last_error}); the batch is sent again",
                elapsed_ms=elapsed,
            )
        await asyncio.sleep(settings.forward_hec_ack_poll)


def hec_channel(destination_id: int, config: Mapping[str, Any]) -> str | None:
    """The destination's channel GUID when it asks for indexer acknowledgement."""
    if not config.get("hec_ack"):
        return None
    given = config.get("hec_channel")
    if given:
        return str(given)
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"audit-service:forwarding:{destination_id}"))
