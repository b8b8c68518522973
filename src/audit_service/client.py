"""The client library for services that post events: see `audit_service.ingestion.client`."""

from audit_service.ingestion.client import (
    AsyncAuditClient,
    AuditClient,
    AuditError,
    AuditRejected,
    AuditUnavailable,
    BatchResult,
    RetryPolicy,
    SendResult,
    prepare,
)

__all__ = [
    "AsyncAuditClient",
    "AuditClient",
    "AuditError",
    "AuditRejected",
    "AuditUnavailable",
    "BatchResult",
    "RetryPolicy",
    "SendResult",
    "prepare",
]
