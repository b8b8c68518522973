"""Structured logs: JSON lines in production, text in development, request id from the
contextvar; a real `audit-service serve` routes uvicorn's lines through the same format."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from audit_service.core import logging as audit_logging
from audit_service.core.logging import configure_logging, default_format, request_id_var
from tests.conftest import LOG_SIGNING_KEY
from tests.pg import free_port

SECRET = "jwt-secret-" + "s" * 40
PASSWORD = "Bootstrap-password-77"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def _capture(fmt: audit_logging.LogFormat) -> io.StringIO:
    configure_logging(fmt)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    handler.setStream(buffer)
    return buffer


def test_defaults_by_environment() -> None:
    assert default_format("production") == "json"
    assert default_format("development") == "text"


def test_json_lines_carry_the_request_id_and_the_exception(restore_logging: None) -> None:
    buffer = _capture("json")
    token = request_id_var.set("req-1234abcd")
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("audit_service.test").exception("failed %s", "here")
    finally:
        request_id_var.reset(token)
    logging.getLogger("audit_service.test").warning("outside\nany request")
    first, second = (json.loads(line) for line in buffer.getvalue().splitlines())
    assert first["level"] == "ERROR"
    assert first["logger"] == "audit_service.test"
    assert first["request_id"] == "req-1234abcd"
    assert first["message"] == "failed here"
    assert "ValueError: boom" in first["exception"]
    assert first["time"].endswith("+00:00")
    assert second["request_id"] is None
    assert second["message"] == "outside\nany request"  # one line, newline escaped
    assert "exception" not in second


def test_text_format_names_the_request(restore_logging: None) -> None:
    buffer = _capture("text")
    token = request_id_var.set("req-abcdef12")
    try:
        logging.getLogger("uvicorn.error").info("hello")
    finally:
        request_id_var.reset(token)
    line = buffer.getvalue().strip()
    assert "INFO" in line and "uvicorn.error" in line and "[req-abcdef12] hello" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


async def _serve_and_collect(tmp_path: Path, **env: str) -> list[str]:
    port = free_port()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_")}
    child_env.update(
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}",
        AUDIT_JWT_SECRET=SECRET,
        AUDIT_BOOTSTRAP_ADMIN_PASSWORD=PASSWORD,
        **env,
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "audit_service.cli",
        "serve",
        "--port",
        str(port),
        cwd=tmp_path,
        env=child_env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for _ in range(200):
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            r = await client.post("/login", json={"username": "admin", "password": "x" * 12})
            assert r.status_code == 401
            r = await client.post("/login", json={"username": "admin", "password": PASSWORD})
            assert r.status_code == 200
    finally:
        proc.terminate()
        _, err = await proc.communicate()
    return err.decode().splitlines()


async def test_serve_in_production_writes_json_lines_only(tmp_path: Path) -> None:
    lines = await _serve_and_collect(
        tmp_path, AUDIT_ENV="production", AUDIT_LOG_SIGNING_KEY=LOG_SIGNING_KEY
    )
    entries = [json.loads(line) for line in lines if line.strip()]  # every line is JSON
    loggers = {e["logger"] for e in entries}
    assert "uvicorn.error" in loggers  # uvicorn's own lines go through our handler
    assert any("Uvicorn running" in e["message"] for e in entries)
    assert all({"time", "level", "logger", "request_id", "message"} <= e.keys() for e in entries)
    text = "\n".join(lines)
    assert SECRET not in text
    assert PASSWORD not in text


async def test_log_format_override_gives_text_in_production(tmp_path: Path) -> None:
    lines = await _serve_and_collect(
        tmp_path,
        AUDIT_ENV="production",
        AUDIT_LOG_SIGNING_KEY=LOG_SIGNING_KEY,
        AUDIT_LOG_FORMAT="text",
    )
    running = [line for line in lines if "Uvicorn running" in line]
    assert running and not running[0].startswith("{")
    assert " uvicorn.error " in running[0]
