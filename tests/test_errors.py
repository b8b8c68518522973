"""One error shape everywhere (RFC 9457 problem+json with the request id), body limits, and
the X-Request-ID contract."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import Harness

PREDICT = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
MINTED = re.compile(r"^[0-9a-f]{32}$")


def assert_problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert isinstance(body["type"], str) and body["type"].startswith("https://")
    assert isinstance(body["title"], str) and body["title"]
    assert body["status"] == status
    assert r.headers["x-request-id"]
    assert body["request_id"] == r.headers["x-request-id"]
    return body


async def test_malformed_json_is_a_422_problem(h: Harness) -> None:
    headers = await h.auth()
    r = await h.client.post(
        "/predict",
        content=b'{"sepal_length": 5.1,',
        headers={**headers, "Content-Type": "application/json"},
    )
    body = assert_problem(r, 422)
    assert body["type"].endswith("/validation-error")
    assert body["errors"][0]["loc"][0] == "body"
    e = await h.last_event()
    assert (e.request_id, e.status_code, e.outcome) == (r.headers["x-request-id"], 422, "failure")


async def test_malformed_json_on_login_is_a_422_problem(h: Harness) -> None:
    r = await h.client.post(
        "/login",
        content=b'{"username": "admin", "password":',
        headers={"Content-Type": "application/json"},
    )
    body = assert_problem(r, 422)
    assert body["errors"][0]["loc"][0] == "body"
    assert (await h.last_event()).request_id == r.headers["x-request-id"]


async def test_wrong_types_are_a_422_problem_listing_each_field(h: Harness) -> None:
    headers = await h.auth()
    r = await h.client.post(
        "/predict", headers=headers, json={**PREDICT, "sepal_length": "long", "petal_width": [1]}
    )
    body = assert_problem(r, 422)
    locs = [e["loc"] for e in body["errors"]]
    assert ["body", "sepal_length"] in locs and ["body", "petal_width"] in locs
    assert all({"loc", "msg", "type"} <= set(e) for e in body["errors"])
    assert "long" not in r.text  # the rejected value is not echoed


async def test_query_type_error_is_a_422_problem(h: Harness) -> None:
    headers = await h.auth()
    r = await h.client.get("/admin/activity", headers=headers, params={"page": "two"})
    body = assert_problem(r, 422)
    assert ["query", "page"] in [e["loc"] for e in body["errors"]]


async def test_five_megabytes_to_predict_is_413_and_recorded(h: Harness) -> None:
    headers = await h.auth()
    payload = b'{"sepal_length": 5.1, "pad": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    r = await h.client.post(
        "/predict", content=payload, headers={**headers, "Content-Type": "application/json"}
    )
    body = assert_problem(r, 413)
    assert body["type"].endswith("/payload-too-large")
    e = await h.last_event()
    assert (e.action, e.module, e.outcome, e.status_code, e.method, e.path) == (
        "http.payload_too_large",
        "system",
        "failure",
        413,
        "POST",
        "/predict",
    )
    assert e.request_id == r.headers["x-request-id"]
    assert (await h.events(action="prediction.created")) == []


async def test_anonymous_oversized_body_is_413_too(h: Harness) -> None:
    r = await h.client.post(
        "/login", content=b"x" * (2 * 1024 * 1024), headers={"Content-Type": "application/json"}
    )
    assert_problem(r, 413)
    e = await h.last_event()
    assert (e.action, e.status_code, e.actor_type) == ("http.payload_too_large", 413, "anonymous")


async def _chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        chunk = b" " * min(size, total - sent)
        sent += len(chunk)
        yield chunk


async def test_chunked_oversized_body_is_413(h: Harness) -> None:
    headers = await h.auth()
    r = await h.client.post(
        "/predict",
        content=_chunks(3 * 1024 * 1024),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert "content-length" not in r.request.headers
    assert r.request.headers["transfer-encoding"] == "chunked"
    assert_problem(r, 413)
    e = await h.last_event()
    assert (e.action, e.status_code, e.request_id) == (
        "http.payload_too_large",
        413,
        r.headers["x-request-id"],
    )


async def test_chunked_small_body_still_reaches_the_endpoint(h: Harness) -> None:
    headers = await h.auth()

    async def body() -> AsyncIterator[bytes]:
        yield b'{"sepal_length": 5.1, "sepal_width": 3.5, '
        yield b'"petal_length": 1.4, "petal_width": 0.2}'

    r = await h.client.post(
        "/predict", content=body(), headers={**headers, "Content-Type": "application/json"}
    )
    assert "content-length" not in r.request.headers
    assert r.status_code == 200, r.text
    assert r.json()["label"] == "setosa"


async def test_unknown_route_is_404_problem(h: Harness) -> None:
    headers = await h.auth()
    r = await h.client.get("/no/such/page", headers=headers)
    body = assert_problem(r, 404)
    assert body["type"].endswith("/not-found")
    e = await h.last_event()
    assert (e.action, e.module, e.outcome, e.status_code, e.path) == (
        "http.not_found",
        "system",
        "failure",
        404,
        "/no/such/page",
    )


async def test_nul_in_path_is_still_a_recorded_404(h: Harness) -> None:
    r = await h.client.get("/admin%00/users")
    assert_problem(r, 404)
    e = await h.last_event()
    assert (e.action, e.status_code, e.request_id) == (
        "http.not_found",
        404,
        r.headers["x-request-id"],
    )
    assert e.path is not None and "\x00" not in e.path and e.path.startswith("/admin")


async def test_wrong_method_is_405_problem(h: Harness) -> None:
    headers = await h.auth()
    r = await h.client.put("/predict", headers=headers, json=PREDICT)
    body = assert_problem(r, 405)
    assert body["type"].endswith("/method-not-allowed")
    assert "POST" in r.headers["allow"]
    e = await h.last_event()
    assert (e.action, e.status_code, e.method) == ("http.method_not_allowed", 405, "PUT")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/me", 401),
        ("GET", "/admin/activity", 401),
        ("POST", "/predict", 401),
        ("GET", "/admin/activity/999999", 404),
        ("GET", "/admin/activity?page_size=7", 422),
        ("DELETE", "/me", 405),
        ("GET", "/nowhere", 404),
    ],
)
async def test_every_error_has_the_same_shape(
    h: Harness, method: str, path: str, status: int
) -> None:
    headers = await h.auth() if status in (404, 422) and path.startswith("/admin") else {}
    r = await h.client.request(method, path, headers=headers)
    assert_problem(r, status)
    assert (await h.last_event()).request_id == r.headers["x-request-id"]


async def test_forbidden_is_a_403_problem(h: Harness) -> None:
    headers = await h.auth("uma", role="user")
    r = await h.client.get("/admin/activity", headers=headers)
    body = assert_problem(r, 403)
    assert body["type"].endswith("/forbidden")


# --- X-Request-ID ----------------------------------------------------------------------------


@pytest.mark.parametrize("given", ["trace-abc-12345", "a1b2c3d4", "span:1.2_3-x", "A" * 128])
async def test_well_formed_client_request_id_is_kept_beside_ours(h: Harness, given: str) -> None:
    r = await h.client.get("/nowhere", headers={"X-Request-ID": given})
    ours = r.headers["x-request-id"]
    assert ours != given and MINTED.match(ours)
    assert assert_problem(r, 404)["request_id"] == ours
    event = await h.last_event()
    assert (event.request_id, event.client_request_id) == (ours, given)
    headers = {**await h.auth(), "X-Request-ID": given}
    ok = await h.client.get("/me", headers=headers)
    assert ok.status_code == 200 and ok.headers["x-request-id"] not in (given, ours)
    # The same client id twice is two requests with two ids of ours; both keep the client's.
    again = await h.client.get("/me", headers=headers)
    assert again.headers["x-request-id"] != ok.headers["x-request-id"]
    rows = await h.events(client_request_id=given)
    assert len(rows) == 3 and len({e.request_id for e in rows}) == 3
    listed = await h.client.get("/admin/activity?page_size=10", headers=headers)
    assert listed.json()["items"][0]["client_request_id"] == given


@pytest.mark.parametrize(
    "given",
    ["has spaces in it", "x" * 300, "short", "<script>x</script>", "semi;colon;12345", "A" * 129],
    ids=["spaces", "300 chars", "too short", "markup", "semicolons", "129 chars"],
)
async def test_malformed_request_id_is_replaced(h: Harness, given: str) -> None:
    r = await h.client.get("/nowhere", headers={"X-Request-ID": given})
    minted = r.headers["x-request-id"]
    assert minted != given and MINTED.match(minted)
    assert assert_problem(r, 404)["request_id"] == minted
    event = await h.last_event()
    assert (event.request_id, event.client_request_id) == (minted, None)


async def test_request_ids_are_unique_when_minted(h: Harness) -> None:
    ids = {(await h.client.get("/nowhere")).headers["x-request-id"] for _ in range(20)}
    assert len(ids) == 20


@pytest.mark.parametrize(
    ("path", "auth"), [("/login", False), ("/predict", True), ("/admin/users", True)]
)
async def test_absurdly_nested_json_is_a_422_everywhere(h: Harness, path: str, auth: bool) -> None:
    headers = {"content-type": "application/json", **(await h.auth() if auth else {})}
    r = await h.client.post(path, content=b"[" * 100_000 + b"]" * 100_000, headers=headers)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
