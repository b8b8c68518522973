"""Every domain's tables, so `Base.metadata` is complete for Alembic and the model check."""

from audit_service.audit_log.models import AuditEvent
from audit_service.auth.models import ApiKey, LoginCounter, RevokedToken, User
from audit_service.core.jobs_models import JobLease
from audit_service.ingestion.models import ActionSchema, SourceAction
from audit_service.kit.models import Base
from audit_service.maintenance.models import RuntimeSetting

__all__ = [
    "ActionSchema",
    "ApiKey",
    "AuditEvent",
    "Base",
    "JobLease",
    "LoginCounter",
    "RevokedToken",
    "RuntimeSetting",
    "SourceAction",
    "User",
]
