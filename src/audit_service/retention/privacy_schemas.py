"""Data-subject erasures: what is asked and what is answered (no personal data is
answered: the subject appears only as its pseudonym)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, field_validator

from audit_service.kit.schemas import InputModel
from audit_service.retention.privacy_models import REASON_LENGTH


class ErasureIn(InputModel):
    actor_id: str = Field(
        min_length=1, max_length=200, description="The user's actor id, exactly as recorded"
    )
    source: str | None = Field(
        default=None, min_length=1, max_length=100, description="Only this source's events"
    )
    tenant_id: str | None = Field(
        default=None, min_length=1, max_length=100, description="Only this tenant's events"
    )
    reason: str = Field(min_length=1, max_length=REASON_LENGTH, examples=["GDPR art. 17 request"])

    @field_validator("actor_id", "reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class ErasureOut(BaseModel):
    id: int
    pseudonym: str = Field(examples=["subject-7f3a0c5e9b1d4a2f8e6c0b3a5d7f9e1c"])
    source: str | None
    tenant_id: str | None
    reason: str
    requested_by: str | None
    events: int = Field(description="Events pseudonymised")
    key_destroyed: bool = Field(
        description="The subject's commitment key was destroyed (false while events of the "
        "same user outside the source/tenant asked for still name it)"
    )
    created_at: datetime


class ErasureList(BaseModel):
    items: list[ErasureOut]
