"""The client library for services that post events (the `audit-service-client`
distribution, bundled with the server package so existing imports keep working): see
`audit_service_client`."""

from audit_service_client import (
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
