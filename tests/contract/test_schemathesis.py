"""A bounded schemathesis run against a real uvicorn on PostgreSQL: every operation, all four
phases (examples, coverage, fuzzing, stateful), a fixed seed, admin and API-key auth. It must
find no server error and no response that breaks the committed contract."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import uvicorn

from audit_service.main import create_app
from tests.conftest import ADMIN_PASSWORD, make_settings
from tests.integrity.helpers import seal
from tests.pg import free_port
from tests.reports.smtp import SmtpServer, smtp

__all__ = ["smtp"]  # the fixture

ROOT = Path(__file__).resolve().parents[2]
SEED = 20261201
MAX_EXAMPLES = 10  # per operation and phase
MAX_SECONDS = 90  # the whole run; it stops (and passes or fails) at this budget (CI time)
# The checks that are about the service being wrong (not about how strict it is with input
# a generator believed valid, e.g. since after until).
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    )
)


# A time-boxed run of MAX_SECONDS: slow, so it starts first (tests/conftest.py orders files).
@pytest.mark.slow
async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    pg_only_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    settings = make_settings(
        pg_only_url,
        # A real (loopback) SMTP server: send-now delivers instead of answering its documented
        # "no SMTP server configured" 503, which not_a_server_error counts as a bug.
        smtp_url=smtp.url,
        # The run is one client hammering: let it through so it reaches the endpoints.
        default_rate_limit="1000000/minute",
        login_rate_limit="1000000/minute",
        predict_rate_limit="1000000/minute",
        ingest_rate_limit="1000000/second",
        ingest_ip_rate_limit="1000000/second",
        # Fuzzed wrong passwords on /me/password count against the admin's own lockout
        # (on purpose): without this the credential refresh is locked out within seconds.
        login_lockout_failures=1_000_000,
    )
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", proxy_headers=False)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.02)
    # Jobs are off: sign one checkpoint, or GET /admin/integrity/checkpoint would answer its
    # documented "none signed yet" 503, which the not_a_server_error check counts as a bug.
    await seal(SimpleNamespace(app=app))
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SCHEMATHESIS_HOOKS": "tests.contract.schemathesis_hooks",
        "AUDIT_CONTRACT_BASE_URL": base,
        "AUDIT_CONTRACT_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    report = tmp_path / "report"
    try:
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{base}/openapi.json",
            "--phases=examples,coverage,fuzzing,stateful",
            f"--checks={CHECKS}",
            f"--seed={SEED}",
            f"--max-examples={MAX_EXAMPLES}",
            f"--max-time={MAX_SECONDS}",
            "--workers=1",
            "--request-timeout=30",
            "--no-color",
            "--report=junit",
            f"--report-dir={report}",
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), MAX_SECONDS + 120)
    finally:
        server.should_exit = True
        await task
    text = output.decode(errors="replace")
    (ROOT / "var").mkdir(exist_ok=True)
    (ROOT / "var" / "schemathesis.log").write_text(text)  # the full report, for a failure
    assert process.returncode == 0, text[-6000:]
    assert "No issues found" in text or "0 failures" in text or "passed" in text, text[-3000:]
