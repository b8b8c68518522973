"""/admin/retention: rules, legal holds, the preview of the next run, archive segments
(changes: admin; reading: admin and auditor)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from audit_service.audit_log.context import audited
from audit_service.audit_log.dependencies import RecorderDep, SessionDep
from audit_service.auth.dependencies import AdminOrAuditor, AdminUser
from audit_service.core.errors import problem_responses
from audit_service.core.routing import SafeJSONRoute
from audit_service.retention import service
from audit_service.retention.schemas import (
    ArchiveList,
    HoldIn,
    HoldList,
    HoldOut,
    PolicyIn,
    PolicyList,
    PolicyOut,
    PolicyUpdate,
    PreviewOut,
)

router = APIRouter(prefix="/admin/retention", tags=["retention"], route_class=SafeJSONRoute)
_CHANGED = audited("config.changed", "retention")
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get(
    "/policies",
    response_model=PolicyList,
    operation_id="list_retention_policies",
    responses=problem_responses(401, 403),
    openapi_extra=audited("retention.policies_listed", "retention"),
)
async def list_retention_policies(
    _: AdminOrAuditor, session: SessionDep, audit: RecorderDep
) -> PolicyList:
    """The retention rules in evaluation order: an event belongs to the first it matches."""
    return await service.list_policies(session, audit)


@router.get(
    "/policies/preview",
    response_model=PreviewOut,
    operation_id="preview_retention",
    responses=problem_responses(401, 403),
    openapi_extra=audited("retention.previewed", "retention"),
)
async def preview_retention(
    _: AdminOrAuditor, session: SessionDep, audit: RecorderDep
) -> PreviewOut:
    """Per rule, how many events the next run would archive and delete (and how many a
    legal hold keeps)."""
    return await service.preview(session, audit)


@router.post(
    "/policies",
    status_code=status.HTTP_201_CREATED,
    response_model=PolicyOut,
    operation_id="create_retention_policy",
    responses=problem_responses(401, 403, 409, 422),
    openapi_extra=_CHANGED,
)
async def create_retention_policy(
    data: PolicyIn, _: AdminUser, session: SessionDep, audit: RecorderDep
) -> PolicyOut:
    """Add a rule (admin only). A rule that an earlier one would always pre-empt is refused."""
    return await service.create_policy(session, audit, data)


@router.patch(
    "/policies/{policy_id}",
    response_model=PolicyOut,
    operation_id="update_retention_policy",
    responses=problem_responses(401, 403, 404, 409, 422),
    openapi_extra=_CHANGED,
)
async def update_retention_policy(
    policy_id: Id, data: PolicyUpdate, _: AdminUser, session: SessionDep, audit: RecorderDep
) -> PolicyOut:
    """Change a rule: only the fields given (admin only). Days already archived stay as
    they were written; the change applies to the days not archived yet."""
    return await service.update_policy(session, audit, policy_id, data)


@router.delete(
    "/policies/{policy_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    operation_id="delete_retention_policy",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=_CHANGED,
)
async def delete_retention_policy(
    policy_id: Id, _: AdminUser, session: SessionDep, audit: RecorderDep
) -> None:
    """Delete a rule (admin only); its archive segments stay."""
    await service.delete_policy(session, audit, policy_id)


@router.get(
    "/holds",
    response_model=HoldList,
    operation_id="list_retention_holds",
    responses=problem_responses(401, 403, 422),
    openapi_extra=audited("retention.holds_listed", "retention"),
)
async def list_retention_holds(
    _: AdminOrAuditor,
    session: SessionDep,
    audit: RecorderDep,
    active: Annotated[bool, Query(description="Only the holds in force")] = False,
) -> HoldList:
    """Legal holds, newest first."""
    return await service.list_holds(session, audit, active)


@router.post(
    "/holds",
    status_code=status.HTTP_201_CREATED,
    response_model=HoldOut,
    operation_id="create_retention_hold",
    responses=problem_responses(401, 403, 422),
    openapi_extra=audited("retention.hold_created", "retention"),
)
async def create_retention_hold(
    data: HoldIn, _: AdminUser, session: SessionDep, audit: RecorderDep
) -> HoldOut:
    """Place a legal hold (admin only): the events its filter selects (the /admin/activity
    filter names) are never deleted or anonymised until it is released."""
    return await service.create_hold(session, audit, data)


@router.post(
    "/holds/{hold_id}/release",
    response_model=HoldOut,
    operation_id="release_retention_hold",
    responses=problem_responses(401, 403, 404, 409, 422),
    openapi_extra=audited("retention.hold_released", "retention"),
)
async def release_retention_hold(
    hold_id: Id, _: AdminUser, session: SessionDep, audit: RecorderDep
) -> HoldOut:
    """Release a legal hold (admin only); retention applies to its events again."""
    return await service.release_hold(session, audit, hold_id)


@router.get(
    "/archives",
    response_model=ArchiveList,
    operation_id="list_retention_archives",
    responses=problem_responses(401, 403, 422),
    openapi_extra=audited("retention.archives_listed", "retention"),
)
async def list_retention_archives(
    _: AdminOrAuditor,
    session: SessionDep,
    audit: RecorderDep,
    policy_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> ArchiveList:
    """Archive segments, newest first: rule, day, id and position range, count, file and
    manifest hash (check one with `audit-service archive verify PATH`)."""
    return await service.list_archives(
        session, audit, policy_id=policy_id, limit=limit, before_id=before_id
    )
