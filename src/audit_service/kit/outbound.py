"""Outbound safety for every request the service makes to an admin-configured target
(forwarding destinations, alert webhooks).

Redirects are never followed, TLS is verified, every request times out
(`AUDIT_FORWARD_TIMEOUT`, 15 s), and a target that resolves to a private, loopback,
link-local or otherwise special address is refused unless `AUDIT_FORWARD_ALLOW_PRIVATE`
allows it ("true" or CIDRs); plain http:// only to such an allow-listed host.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import socket
import time
from datetime import UTC
from urllib.parse import urlsplit

import httpx

from audit_service import __version__
from audit_service.core.config import Settings


def user_agent(purpose: str) -> str:
    return f"audit-service/{__version__} ({purpose})"


class TargetRefused(Exception):
    """The destination resolves to an address outbound safety does not allow."""


# --- outbound safety -------------------------------------------------------------------------


def _allow_list(settings: Settings) -> bool | list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    value = settings.forward_allow_private
    if value in ("", "false"):
        return False
    if value == "true":
        return True
    return [ipaddress.ip_network(p.strip(), strict=False) for p in value.split(",") if p.strip()]


def _special(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return bool(
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def address_allowed(settings: Settings, address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if not _special(ip):
        return True
    allow = _allow_list(settings)
    if allow is True:
        return True
    if allow is False:
        return False
    return any(ip in net for net in allow)


def plain_http_allowed(settings: Settings, host: str) -> bool:
    """http:// only to an allow-listed private host (a test receiver, a local relay)."""
    allow = _allow_list(settings)
    if allow is False:
        return False
    if host == "localhost":
        return allow is True or any(
            ipaddress.ip_address("127.0.0.1") in n for n in allow if n.version == 4
        )
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return allow is True
    return _special(ip) and address_allowed(settings, str(ip))


async def check_target(settings: Settings, host: str, port: int) -> None:
    """Resolve `host` and refuse it if any address is not allowed."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise OSError(f"cannot resolve {host}: {exc.strerror or exc}") from None
    for info in infos:
        address = str(info[4][0])
        if not address_allowed(settings, address):
            raise TargetRefused(
                f"{host} resolves to {address}, a private or special address "
                "(allow it with AUDIT_FORWARD_ALLOW_PRIVATE)"
            )


def http_client(settings: Settings, purpose: str = "forwarding") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        follow_redirects=False,
        verify=True,
        trust_env=False,
        timeout=httpx.Timeout(settings.forward_timeout),
        headers={"User-Agent": user_agent(purpose)},
    )


def retry_after(value: str | None, now: float | None = None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def describe_failure(exc: BaseException) -> str:
    """One line for a failed request, for the target's status (never a traceback)."""
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


async def check_url(settings: Settings, url: str) -> None:
    """Refuse plain http:// to a host that is not allow-listed, then check where it resolves."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "http" and not plain_http_allowed(settings, host):
        raise TargetRefused("plain http:// is only allowed to allow-listed private hosts")
    await check_target(settings, host, parts.port or (443 if parts.scheme == "https" else 80))
