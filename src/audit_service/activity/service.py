from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.activity.schemas import ActivityQuery, EventOut, EventPage
from audit_service.audit_log import repository
from audit_service.audit_log.recorder import RequestAudit
from audit_service.core.errors import NotFound


async def list_activity(
    session: AsyncSession, audit: RequestAudit, query: ActivityQuery
) -> EventPage:
    filters = query.to_filters()
    audit.describe(filters=query.applied(), page=query.page, page_size=query.page_size)
    rows = await repository.list_events(
        session, filters, offset=(query.page - 1) * query.page_size, limit=query.page_size
    )
    total = await repository.count_events(session, filters)
    audit.describe(returned=len(rows), total=total)
    return EventPage(
        items=[EventOut.of(r) for r in rows],
        page=query.page,
        page_size=query.page_size,
        total=total,
    )


async def get_activity(session: AsyncSession, audit: RequestAudit, event_id: int) -> EventOut:
    audit.describe(target_type="audit_event", target_id=str(event_id))
    event = await repository.get_event(session, event_id)
    if event is None:
        raise NotFound(f"No event with id {event_id}")
    return EventOut.of(event)
