"""Every domain's tables, so `Base.metadata` is complete for Alembic and the model check."""

from audit_service.audit_log.models import AuditEvent
from audit_service.auth.models import ApiKey, RevokedToken, User
from audit_service.ingestion.models import ActionSchema, SourceAction
from audit_service.kit.models import Base

__all__ = ["ActionSchema", "ApiKey", "AuditEvent", "Base", "RevokedToken", "SourceAction", "User"]
