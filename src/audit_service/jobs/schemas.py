from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class JobOut(BaseModel):
    name: str
    running: bool = Field(description="Whether a process holds the job's lease right now")
    holder: str | None = Field(
        description="The process (host:pid:id) running the job, or the last one that did"
    )
    interval_seconds: float = Field(description="Seconds from the end of a run to the next")
    lease_until: datetime | None
    next_run_at: datetime | None = Field(description="When the job is next due (any process)")
    last_started_at: datetime | None
    last_finished_at: datetime | None
    last_error: str | None = Field(description="Class and message of the last failure")
    last_error_at: datetime | None
    runs: int = Field(description="Finished runs, successful or not")
    failures: int
    consecutive_failures: int = Field(description="Failures since the last success")
    lag_seconds: float | None = Field(description="How far behind the job says it is")


class JobList(BaseModel):
    items: list[JobOut]
