"""Every domain's tables, so `Base.metadata` is complete for Alembic and the model check."""

from audit_service.activity.models import ExportRecipient
from audit_service.audit_log.models import AuditEvent, AuditLeaf, LogCursor
from audit_service.auth.models import ApiKey, LoginCounter, RevokedToken, User
from audit_service.core.jobs_models import JobLease
from audit_service.detections.models import (
    Alert,
    DetectionLogin,
    DetectionNetwork,
    DetectionPrivilege,
    DetectionRuleSetting,
    DetectionState,
)
from audit_service.forwarding.models import ForwardDeadLetter, ForwardDestination, ForwardReplay
from audit_service.ingestion.models import ActionSchema, SourceAction
from audit_service.integrity.models import (
    IntegrityCheckpoint,
    IntegrityCommitment,
    IntegrityKey,
    IntegrityLog,
    IntegrityTile,
    IntegrityVerifyRun,
    IntegrityVerifyTask,
)
from audit_service.kit.models import Base
from audit_service.maintenance.models import RuntimeSetting
from audit_service.notifications.models import AlertChannel, NotificationGroup, NotificationSubject
from audit_service.reports.models import ReportRun, ReportSchedule
from audit_service.retention.models import RetentionArchive, RetentionHold, RetentionPolicy
from audit_service.retention.privacy_models import RetentionDoor, RetentionErasure, RetentionPurge
from audit_service.stats.models import (
    StatsActorBucket,
    StatsActorBucketDay,
    StatsActorTenantDay,
    StatsBucket,
    StatsBucketDay,
    StatsBucketHour,
    StatsIpBucket,
    StatsIpBucketDay,
    StatsWatermark,
)

__all__ = [
    "ActionSchema",
    "Alert",
    "AlertChannel",
    "ApiKey",
    "AuditEvent",
    "AuditLeaf",
    "Base",
    "DetectionLogin",
    "DetectionNetwork",
    "DetectionPrivilege",
    "DetectionRuleSetting",
    "DetectionState",
    "ExportRecipient",
    "ForwardDeadLetter",
    "ForwardDestination",
    "ForwardReplay",
    "IntegrityCheckpoint",
    "IntegrityCommitment",
    "IntegrityKey",
    "IntegrityLog",
    "IntegrityTile",
    "IntegrityVerifyRun",
    "IntegrityVerifyTask",
    "JobLease",
    "LogCursor",
    "LoginCounter",
    "NotificationGroup",
    "NotificationSubject",
    "ReportRun",
    "ReportSchedule",
    "RetentionArchive",
    "RetentionDoor",
    "RetentionErasure",
    "RetentionHold",
    "RetentionPolicy",
    "RetentionPurge",
    "RevokedToken",
    "RuntimeSetting",
    "SourceAction",
    "StatsActorBucket",
    "StatsActorBucketDay",
    "StatsActorTenantDay",
    "StatsBucket",
    "StatsBucketDay",
    "StatsBucketHour",
    "StatsIpBucket",
    "StatsIpBucketDay",
    "StatsWatermark",
    "User",
]
