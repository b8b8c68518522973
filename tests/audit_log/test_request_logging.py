"""Log lines written while a request runs carry that request's id (the one it is recorded with)."""

from __future__ import annotations

import logging

from audit_service.core.logging import RequestIdFilter
from tests.conftest import Harness


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.addFilter(RequestIdFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_log_lines_inside_a_request_name_its_recorded_request_id(h: Harness) -> None:
    async def noisy() -> dict[str, str]:
        logging.getLogger("audit_service.test").warning("inside the request")
        return {"ok": "yes"}

    h.app.add_api_route("/noisy", noisy, methods=["GET"])
    capture = _Capture()
    logger = logging.getLogger("audit_service.test")
    logger.addHandler(capture)
    try:
        r = await h.client.get("/noisy")
        logging.getLogger("audit_service.test").warning("outside any request")
    finally:
        logger.removeHandler(capture)
    assert r.status_code == 200
    inside, outside = capture.records
    assert getattr(inside, "request_id", None) == r.headers["x-request-id"]
    assert getattr(outside, "request_id", "missing") is None
    [event] = await h.events(path="/noisy")
    assert event.request_id == r.headers["x-request-id"]
