# SCAFFOLD (not committed): replaced by the i9-rcontent branch.
from __future__ import annotations

from dataclasses import dataclass

from audit_service.reports.content import Report


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str


def render(report: Report, *, public_url: str | None) -> Rendered:
    return Rendered(f"[audit-service] {report.kind} report", "<p>x</p>", "x")
