"""Client IP resolution: the socket peer unless a trusted proxy says otherwise."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from audit_service.core.request_context import (
    client_ip,
    client_request_id,
    request_id,
    user_agent,
)
from audit_service.kit.net import ip_key, network_key_range, parse_ip

PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]


def scope(peer: str, **headers: str) -> dict[str, Any]:
    return {
        "client": (peer, 1234),
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        # Nobody trusted: headers are ignored however they look.
        ("198.51.100.9", {"x_forwarded_for": "1.2.3.4"}, "198.51.100.9"),
        ("198.51.100.9", {"forwarded": "for=1.2.3.4"}, "198.51.100.9"),
    ],
)
def test_untrusted_peer_headers_are_ignored(
    peer: str, headers: dict[str, str], expected: str
) -> None:
    assert client_ip(scope(peer, **headers), PROXIES) == expected
    assert client_ip(scope(peer, **headers), []) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x_forwarded_for": "203.0.113.5"}, "203.0.113.5"),
        # A client-supplied hop to the left of the real one is not believed.
        ({"x_forwarded_for": "6.6.6.6, 203.0.113.5"}, "203.0.113.5"),
        # Our own proxies chained: skip them, right to left.
        ({"x_forwarded_for": "6.6.6.6, 203.0.113.5, 10.1.1.1"}, "203.0.113.5"),
        ({"forwarded": 'for=6.6.6.6, for="[2001:db8::1]:443";proto=https'}, "2001:db8::1"),
        ({"forwarded": "for=192.0.2.60:8080;by=10.0.0.1"}, "192.0.2.60"),
        # Garbage in the chain: stop at the last good address (the proxy itself).
        ({"x_forwarded_for": "not-an-ip"}, "10.0.0.2"),
        ({}, "10.0.0.2"),
    ],
)
def test_trusted_proxy_chain(headers: dict[str, str], expected: str) -> None:
    name = "forwarded" if "forwarded" in headers else "x-forwarded-for"
    assert client_ip(scope("10.0.0.2", **headers), PROXIES, header_name=name) == expected


@pytest.mark.parametrize(
    ("header_name", "expected"),
    [("x-forwarded-for", "203.0.113.5"), ("forwarded", "198.51.100.77")],
)
def test_only_the_configured_forwarding_header_is_read(header_name: str, expected: str) -> None:
    both = scope("10.0.0.2", forwarded="for=198.51.100.77", x_forwarded_for="203.0.113.5")
    assert client_ip(both, PROXIES, header_name=header_name) == expected
    # The other header alone is never believed: the proxy itself is the address.
    other = "forwarded" if header_name == "x-forwarded-for" else "x_forwarded_for"
    alone = scope("10.0.0.2", **{other: "for=6.6.6.6" if other == "forwarded" else "6.6.6.6"})
    assert client_ip(alone, PROXIES, header_name=header_name) == "10.0.0.2"


def test_ipv4_mapped_peer_is_plain_ipv4() -> None:
    assert client_ip(scope("::ffff:198.51.100.9"), []) == "198.51.100.9"
    assert client_ip({"client": None, "headers": []}, []) is None


def test_ip_keys_order_and_ranges() -> None:
    low, high = network_key_range(ipaddress.ip_network("10.0.0.0/8"))
    assert low <= ip_key(parse_ip("10.255.0.1")) <= high
    assert not low <= ip_key(parse_ip("11.0.0.0")) <= high
    assert ip_key(parse_ip("::ffff:10.0.0.1")) == ip_key(parse_ip("10.0.0.1"))
    assert len(ip_key(parse_ip("2001:db8::1"))) == 16


def test_request_id_and_user_agent() -> None:
    given = scope("1.1.1.1", x_request_id="abc-123-def")
    assert request_id(given) != "abc-123-def" and len(request_id(given)) == 32
    assert request_id(given) != request_id(given)
    assert client_request_id(given) == "abc-123-def"
    assert client_request_id(scope("1.1.1.1", x_request_id="bad id with spaces")) is None
    assert user_agent(scope("1.1.1.1", user_agent="u" * 1000)) == "u" * 512
    assert user_agent(scope("1.1.1.1")) is None
