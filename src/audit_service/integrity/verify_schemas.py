"""Bodies of /admin/integrity/verify."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from audit_service.integrity.verify import KINDS


class VerifyProblem(BaseModel):
    kind: str = Field(description=f"One of: {', '.join(KINDS)}")
    detail: str
    position: int | None = Field(None, description="First log position it concerns")
    last_position: int | None = Field(None, description="Last one, for a range")
    event_pk: int | None = Field(None, description="audit_event.id, where known")
    event_id: str | None = Field(None, description="The event's UUID, where known")
    checkpoint_id: int | None = None
    tree_size: int | None = None
    tile: str | None = Field(None, description="C2SP tile path, for tile problems")


class VerifyRunOut(BaseModel):
    id: int
    status: Literal["queued", "running", "finished"]
    trigger: Literal["api", "schedule"] = Field(
        description="api: POST /admin/integrity/verify; schedule: the daily job"
    )
    requested_by: str
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime | None
    tree_size: int | None = Field(description="Events the run checks (fixed at its start)")
    tasks_total: int
    tasks_done: int
    positions_done: int
    progress: float = Field(ge=0, le=1, description="Share of the positions checked")
    outcome: Literal["intact", "tampered", "unverifiable"] | None
    reason: str | None = Field(description="Why the log could not be verified")
    problem_count: int
    problem_counts: dict[str, int] = Field(description="Problems by kind")
    problems: list[VerifyProblem] = Field(
        description="The first problems (all of them: `audit-service verify --json`)"
    )
    error: str | None = Field(description="Why the last attempt failed, if it did")
