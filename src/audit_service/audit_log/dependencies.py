"""The request's audit record and its database session, as dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.audit_log.recorder import RequestAudit


def get_request_audit(request: Request) -> RequestAudit:
    audit: RequestAudit = request.state.audit
    return audit


def get_session(audit: Annotated[RequestAudit, Depends(get_request_audit)]) -> AsyncSession:
    # The recorder middleware owns the session: it commits it together with the request's
    # event before the response starts, or rolls it back.
    return audit.session()


RecorderDep = Annotated[RequestAudit, Depends(get_request_audit)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
