from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, StrictBool

from audit_service.kit.schemas import InputModel


class MaintenanceIn(InputModel):
    enabled: StrictBool = Field(description="true: turn maintenance mode on")
    message: str | None = Field(
        default=None,
        max_length=500,
        description="What clients are told in the 503 (a default text when empty)",
        examples=["Database upgrade until 22:00 UTC"],
    )


class MaintenanceOut(BaseModel):
    enabled: bool
    message: str | None
    changed_at: datetime | None = None
    changed_by: str | None = None
