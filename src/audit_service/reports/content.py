# SCAFFOLD (not committed): replaced by the i9-rcontent branch.
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

Kind = Literal["daily", "weekly", "monthly"]


@dataclass(frozen=True)
class ReportScope:
    tenant_id: str | None = None
    source: str | None = None
    module: str | None = None


@dataclass(frozen=True)
class ReportPeriod:
    kind: Kind
    start: datetime
    end: datetime
    tz: str


@dataclass(frozen=True)
class Reported:
    start: datetime
    end: datetime
    events: int


class Figs(BaseModel):
    events: int


class Report(BaseModel):
    kind: str
    figures: Figs


async def build_report(
    session: AsyncSession,
    period: ReportPeriod,
    scope: ReportScope,
    *,
    failed_login_threshold: int = 5,
    earlier: Sequence[Reported] = (),
) -> Report:
    return Report(kind=period.kind, figures=Figs(events=0))
