"""Who is calling: client IP (trusted-proxy aware), user agent, request id."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

from starlette.types import Scope

from audit_service.kit.net import IPAddress, IPNetwork, parse_ip

USER_AGENT_MAX = 512
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def all_headers(scope: Scope, name: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == name]


def request_id(_scope: Scope | None = None) -> str:
    """Our id for this request, always minted: the stored `request_id` must be unique and not
    chosen by the caller (a client could otherwise reuse another request's id)."""
    return uuid.uuid4().hex


def client_request_id(scope: Scope) -> str | None:
    """The caller's X-Request-ID when well-formed, kept (as `client_request_id`) for their
    tracing; anything else is dropped."""
    given = header(scope, b"x-request-id")
    if given and _REQUEST_ID_OK.match(given):
        return given
    return None


def user_agent(scope: Scope) -> str | None:
    ua = header(scope, b"user-agent")
    return ua[:USER_AGENT_MAX] if ua else None


def _trusted(address: IPAddress, proxies: Sequence[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in proxies)


FORWARDED_HEADERS = ("x-forwarded-for", "forwarded")


def _forwarded_chain(scope: Scope, header_name: str) -> list[str]:
    """Hops named by the one header our proxies write, left to right.

    Only that header is read: nginx, ALB and Traefik append to X-Forwarded-For but pass a
    client's own `Forwarded` through untouched, so reading "whichever is present" would let
    any client choose its recorded address.
    """
    if header_name == "forwarded":
        hops = []
        for element in ",".join(all_headers(scope, b"forwarded")).split(","):
            for pair in element.split(";"):
                name, _, value = pair.strip().partition("=")
                if name.lower() == "for":
                    value = value.strip().strip('"')
                    if value.startswith("["):  # [v6]:port
                        value = value[1:].split("]", 1)[0]
                    elif value.count(":") == 1:  # v4:port
                        value = value.split(":", 1)[0]
                    hops.append(value)
        return hops
    return [
        h.strip() for h in ",".join(all_headers(scope, b"x-forwarded-for")).split(",") if h.strip()
    ]


def client_ip(
    scope: Scope, trusted_proxies: Sequence[IPNetwork], header_name: str = "x-forwarded-for"
) -> str | None:
    """The socket peer, unless it is a trusted proxy: then the right-most untrusted hop.

    Anyone can send X-Forwarded-For, so it (or `Forwarded`, per AUDIT_FORWARDED_HEADER) is
    only read when the peer is a proxy we run;
    walking from the right stops at the first address our proxies did not add themselves.
    """
    peer = scope.get("client")
    if not peer:
        return None
    try:
        current = parse_ip(peer[0])
    except ValueError:
        return None
    if not trusted_proxies or not _trusted(current, trusted_proxies):
        return str(current)
    for hop in reversed(_forwarded_chain(scope, header_name)):
        try:
            current = parse_ip(hop)
        except ValueError:
            break  # garbage or an obfuscated identifier: stop at the last good address
        if not _trusted(current, trusted_proxies):
            break
    return str(current)
