"""AUDIT_RATE_LIMIT_STORAGE=redis://…: replicas share one budget (a real, private Redis)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.conftest import make_settings, start_harness
from tests.pg import free_port

PREDICT = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found (run scripts/ensure-test-services.sh)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    server = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


async def test_two_replicas_share_the_predict_budget(pg_only_url: str, redis_url: str) -> None:
    settings = make_settings(pg_only_url, rate_limit_storage=redis_url, predict_rate_limit="3/hour")
    async for first in start_harness(settings):
        async for second in start_harness(settings):
            headers = await first.auth("bob", role="user")
            assert (
                await first.client.post("/predict", headers=headers, json=PREDICT)
            ).status_code == 200
            assert (
                await second.client.post("/predict", headers=headers, json=PREDICT)
            ).status_code == 200
            assert (
                await first.client.post("/predict", headers=headers, json=PREDICT)
            ).status_code == 200
            # The fourth, on the other replica: the budget is shared, so it is refused.
            r = await second.client.post("/predict", headers=headers, json=PREDICT)
            assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
            # Another user still has a budget of their own.
            other = await second.auth("carol", role="user")
            assert (
                await first.client.post("/predict", headers=other, json=PREDICT)
            ).status_code == 200
