"""Small pure pieces of ingestion: IP keys, metadata bounds, the client's retry policy."""

from __future__ import annotations

import pytest

from audit_service.client import RetryPolicy
from audit_service.ingestion.client import retryable
from audit_service.ingestion.schemas import json_depth, json_size
from audit_service.kit.net import canonical_ip_key, ip_key, parse_ip


@pytest.mark.parametrize(
    "address",
    ["1.2.3.4", "0.0.0.1", "255.255.255.255", "::", "::1", "2001:db8::1", "fe80::1%eth0",
     "::ffff:10.0.0.1", "2001:db8:0:0:0:0:0:1"],
)  # fmt: skip
def test_fast_ip_key_matches_the_reference(address: str) -> None:
    canonical = str(parse_ip(address))
    assert canonical_ip_key(canonical) == ip_key(parse_ip(canonical))
    assert len(canonical_ip_key(canonical)) == 16


def test_json_depth_and_size() -> None:
    assert json_depth({}, 8) == 1
    assert json_depth({"a": 1, "b": [1, {"c": [2]}]}, 8) == 4
    deep: dict[str, object] = {}
    for _ in range(5_000):  # far deeper than json.dumps could recurse
        deep = {"a": deep}
    assert json_depth(deep, 8) == 9  # stops counting past the limit
    assert json_size({"é": "ü"}) == len('{"é":"ü"}'.encode())


def test_retry_policy_is_capped_jittered_and_honours_retry_after() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=0.5, max_delay=4.0, max_retry_after=30.0)
    delays = [policy.delay(retry) for retry in range(1, 12) for _ in range(50)]
    assert min(delays) >= 0 and max(delays) <= 4.0
    assert len({round(d, 6) for d in delays}) > 100  # jitter: not one fixed schedule
    assert all(policy.delay(1) <= 0.5 for _ in range(50))  # the first retry is quick
    assert policy.delay(1, retry_after=7) == 7
    assert policy.delay(1, retry_after=600) == 30.0


def test_what_is_retried() -> None:
    assert [s for s in (200, 201, 400, 401, 403, 404, 409, 413, 422) if retryable(s)] == []
    assert all(retryable(s) for s in (429, 500, 502, 503, 504, 599))
