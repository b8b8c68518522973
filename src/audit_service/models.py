"""Every domain's tables, so `Base.metadata` is complete for Alembic and the model check."""

from audit_service.audit_log.models import AuditEvent
from audit_service.auth.models import ApiKey, RevokedToken, User
from audit_service.core.jobs_models import JobLease
from audit_service.ingestion.models import ActionSchema
from audit_service.kit.models import Base

__all__ = ["ActionSchema", "ApiKey", "AuditEvent", "Base", "JobLease", "RevokedToken", "User"]
