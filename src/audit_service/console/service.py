"""What the console's pages show, built from the services the API uses: the activity
history (activity/), the filter values (stats/), names and sessions (auth/). No business
rule lives here; this is presentation: links, labels and the pieces of a page."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from pydantic import Field, ValidationError, field_validator
from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.activity import service as activity_service
from audit_service.activity.schemas import (
    MAX_OFFSET_ROWS,
    PAGE_SIZES,
    ActivityFilters,
    ActivityQuery,
    EventDetail,
    EventOut,
    EventPage,
)
from audit_service.audit_log.context import Actor, RequestAudit
from audit_service.auth import service as auth_service
from audit_service.auth.models import User
from audit_service.auth.schemas import TokenResponse
from audit_service.core.config import Settings
from audit_service.core.errors import (
    AppError,
    FieldError,
    RateLimited,
    ValidationFailed,
    field_errors,
)
from audit_service.core.ratelimit import RateLimiter
from audit_service.core.security import TokenClaims
from audit_service.integrity import proofs
from audit_service.integrity.proofs import NotCheckpointed, NotSequenced
from audit_service.kit.models import utcnow
from audit_service.kit.schemas import check_time_zone
from audit_service.stats import service as stats_service
from audit_service.stats.schemas import FacetsQuery, Histogram

FILTER_NAMES = tuple(ActivityFilters.model_fields)
LIST_PARAMS = frozenset({"action", "exclude_actor", "exclude_action"})
PRESETS = (
    ("15 min", timedelta(minutes=15)),
    ("1 h", timedelta(hours=1)),
    ("24 h", timedelta(hours=24)),
    ("7 d", timedelta(days=7)),
    ("30 d", timedelta(days=30)),
)
EXPORT_FORMATS = (("CSV", "csv"), ("XLSX", "xlsx"), ("JSON", "json"), ("NDJSON", "ndjson"))
OUTCOMES = ("success", "failure", "denied", "error")
# CSS classes of action icons, by the action's first word (`auth.login` → auth).
ICONS = {
    "auth": "icon-key",
    "user": "icon-user",
    "api_key": "icon-key",
    "activity": "icon-eye",
    "stats": "icon-chart",
    "config": "icon-gear",
    "alert": "icon-bell",
    "integrity": "icon-shield",
    "http": "icon-globe",
    "system": "icon-gear",
    "export_recipient": "icon-lock",
    "report": "icon-mail",
    "forwarding": "icon-send",
}


def action_icon(action: str) -> str:
    return ICONS.get(action.split(".", 1)[0], "icon-dot")


# --- sign-in ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignIn:
    token: TokenResponse | None
    status: int = 200
    message: str | None = None
    retry_after: int | None = None


async def sign_in(
    session: AsyncSession,
    audit: RequestAudit,
    settings: Settings,
    key: str,
    limiter: RateLimiter,
    *,
    username: str,
    password: str,
) -> SignIn:
    """The API's login (same lockout, same events), with its refusals as form messages."""
    audit.describe(via="console")
    try:
        await limiter.hit(
            settings.login_rate_limit, "login", f"ip:{audit.ip}", what="login attempts"
        )
        token = await auth_service.login(
            session, audit, settings, key, username=username, password=password
        )
    except RateLimited as exc:
        seconds = int(exc.headers.get("Retry-After", "1"))
        return SignIn(None, 429, f"{exc.detail} (about {seconds} s)", seconds)
    except AppError as exc:
        return SignIn(None, exc.status_code, exc.detail or exc.title)
    return SignIn(token)


async def sign_out(
    session: AsyncSession, audit: RequestAudit, user: User, claims: TokenClaims
) -> None:
    """Revokes the session's token: it stops working at once, in the API too."""
    await auth_service.logout(session, audit, user, claims)


# --- activity ---------------------------------------------------------------------------


def parse_activity(items: Iterable[tuple[str, str]], model: type[Any] = ActivityQuery) -> Any:
    """The query string as `/admin/activity` reads it (same names, same validation, unknown
    parameters refused), except that an empty field of the filter form means "not given"."""
    values: dict[str, Any] = {}
    for name, value in items:
        if value == "":
            continue
        if name in LIST_PARAMS:
            values.setdefault(name, []).append(value)
        else:
            values[name] = value
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raw = [{**e, "loc": ("query", *e["loc"])} for e in exc.errors(include_url=False)]
        errors = field_errors(raw)
        raise ValidationFailed(f"{len(errors)} invalid field(s)", errors=errors) from None


class _Aside:
    """A sink for reads a page makes beside its main one (the filter dropdowns): the
    page's event says what was viewed; these would only overwrite its description."""

    actor: Actor = Actor()

    def describe(self, **_: Any) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Row:
    event: EventOut
    full_name: str | None
    icon: str


@dataclass(slots=True)
class Link:
    label: str
    href: str | None
    rel: str = ""


@dataclass(slots=True)
class ActivityView:
    rows: list[Row]
    page: EventPage
    query: ActivityQuery
    filters: dict[str, Any]
    form: dict[str, Any]
    showing: str
    nav: list[Link]
    jump_max: int | None
    presets: list[Link]
    exports: list[Link]
    actions: list[str]
    modules: list[str]
    sources: list[str]
    page_sizes: Sequence[int] = PAGE_SIZES
    outcomes: Sequence[str] = OUTCOMES
    hidden: list[tuple[str, str]] = field(default_factory=list)
    tail_after: int = -1
    tail_query: str = ""


def _pairs(filters: dict[str, Any], **extra: Any) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for name, value in {**filters, **extra}.items():
        if value is None:
            continue
        for v in value if isinstance(value, list) else [value]:
            pairs.append((name, "true" if v is True else str(v)))
    return pairs


def activity_href(filters: dict[str, Any], **extra: Any) -> str:
    query = urlencode(_pairs(filters, **extra))
    return "/console/activity" + (f"?{query}" if query else "")


def _iso(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


async def _facet_values(session: AsyncSession, field_name: str, limit: int = 100) -> list[str]:
    facets = await stats_service.facets(
        session,
        _Aside(),
        FacetsQuery(field=field_name, limit=limit),
    )
    return sorted(item.value for item in facets.items if item.value)


async def suggestions(
    session: AsyncSession, audit: RequestAudit, field_name: str, prefix: str | None
) -> list[str]:
    """Typeahead suggestions (the user field's datalist): the API's facets."""
    limit = 20
    facets = await stats_service.facets(
        session,
        audit,
        FacetsQuery(field=field_name, prefix=prefix, limit=limit),
    )
    return [item.value for item in facets.items if item.value]


def _showing(page: EventPage, query: ActivityQuery, count: int) -> str:
    approx = "≈" if page.total_is_estimate else ""
    total = f"{approx}{page.total:,}"
    if count == 0:
        return f"No events (of {total})"
    if page.page is not None:
        first = (page.page - 1) * page.page_size + 1
        return f"Showing {first:,}\u2013{first + count - 1:,} of {total}"
    if query.last and not page.total_is_estimate:
        return f"Showing {page.total - count + 1:,}\u2013{page.total:,} of {total}"
    return f"Showing {count:,} events of {total}"


def _nav(page: EventPage, query: ActivityQuery, filters: dict[str, Any]) -> list[Link]:
    size = query.page_size
    base = {**filters, "page_size": size}
    number = page.page
    on_first = number == 1 and page.prev_cursor is None
    links = [Link("First", None if on_first else activity_href(base), "first")]
    if number is not None and number > 1:
        links.append(Link("Previous", activity_href(base, page=number - 1), "prev"))
    elif page.prev_cursor:
        links.append(Link("Newer", activity_href(base, cursor=page.prev_cursor), "prev"))
    else:
        links.append(Link("Previous", None, "prev"))
    if page.next_cursor and number is not None and (number + 1) * size <= MAX_OFFSET_ROWS:
        links.append(Link("Next", activity_href(base, page=number + 1), "next"))
    elif page.next_cursor:
        links.append(Link("Older", activity_href(base, cursor=page.next_cursor), "next"))
    else:
        links.append(Link("Next", None, "next"))
    links.append(Link("Last", activity_href(base, last=True) if page.next_cursor else None, "last"))
    return links


async def activity_view(
    session: AsyncSession, audit: RequestAudit, query: ActivityQuery, key: str
) -> ActivityView:
    page = await activity_service.list_activity(session, audit, query, key)
    rows = await _rows(session, page.items)
    filters = query.applied()
    size = query.page_size
    now = utcnow()
    pages = max(1, math.ceil(page.total / size)) if not page.total_is_estimate else None
    jump_max = min(pages or MAX_OFFSET_ROWS // size, MAX_OFFSET_ROWS // size)
    presets = [
        Link(
            label,
            activity_href({**filters, "since": _iso(now - span), "until": None}, page_size=size),
        )
        for label, span in PRESETS
    ]
    exports = [
        Link(label, "/console/activity/export?" + urlencode(_pairs(filters, format=fmt)))
        for label, fmt in EXPORT_FORMATS
    ]
    return ActivityView(
        rows=rows,
        page=page,
        query=query,
        filters=filters,
        form={name: filters.get(name) for name in FILTER_NAMES},
        showing=_showing(page, query, len(rows)),
        nav=_nav(page, query, filters),
        jump_max=jump_max if jump_max > 1 else None,
        presets=presets,
        exports=exports,
        actions=await _facet_values(session, "action"),
        modules=await _facet_values(session, "module"),
        sources=await _facet_values(session, "source"),
        hidden=_pairs(filters, page_size=size),
        tail_after=await activity_service.tail_start(session),
        tail_query=urlencode(_pairs(filters)),
    )


class HistogramQuery(ActivityFilters):
    """The activity page's filters (exactly `/admin/activity`'s) and the viewer's zone."""

    tz: str | None = Field(default=None, max_length=64)

    @field_validator("tz")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return check_time_zone(value or None)


def _epoch(moment: datetime) -> float:
    return moment.timestamp()


async def histogram(
    session: AsyncSession, audit: RequestAudit, query: HistogramQuery, default_tz: str
) -> dict[str, Any]:
    """The volume bars above the activity rows, as the chart script reads them: bars as
    epoch seconds (uPlot's time axis), the period's ends as ISO text (what a narrowed
    `since`/`until` is set to when a drag reaches them)."""
    audit.describe(filters=query.applied())
    found: Histogram = await stats_service.histogram(
        session, audit, query.to_filters(), query.tz or default_tz
    )
    return {
        "available": found.available,
        "message": found.message,
        "source": found.source,
        "step": found.step,
        "tz": found.tz,
        "since": _iso_exact(found.since),
        "until": _iso_exact(found.until),
        "total": found.total,
        "watermark": found.watermark,
        "starts": [_epoch(bar.start) for bar in found.bars],
        "ends": [_epoch(bar.end) for bar in found.bars],
        "counts": [bar.count for bar in found.bars],
    }


def _iso_exact(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# --- one event ----------------------------------------------------------------------------

SURROUNDING = 20


def _aside_audit() -> RequestAudit:
    """A record for a read beside the page's own (the proof status), never written."""
    return RequestAudit(request_id="aside", ip=None, user_agent=None, method="GET", path="")


@dataclass(frozen=True, slots=True)
class ProofStatus:
    state: str  # "included", "pending", "problem"
    text: str
    position: int | None = None
    tree_size: int | None = None


async def proof_status(session: AsyncSession, event: EventDetail) -> ProofStatus:
    """The event's inclusion proof against the newest signed checkpoint, checked as the
    API's `GET /admin/integrity/events/{event_id}/proof` checks it."""
    try:
        proof = await proofs.prove_event(session, _aside_audit(), event.event_id, None)
    except (NotSequenced, NotCheckpointed) as exc:
        return ProofStatus("pending", exc.detail or exc.title, event.log_position)
    except AppError as exc:
        return ProofStatus("problem", exc.detail or exc.title, event.log_position)
    return ProofStatus(
        "included",
        f"Included at log position {proof.position} in the signed tree of "
        f"{proof.tree_size:,} events (its leaf hash and inclusion path check against the "
        "checkpoint's root).",
        proof.position,
        proof.tree_size,
    )


@dataclass(slots=True)
class DetailView:
    event: EventDetail
    full_name: str | None
    icon: str
    pivots: list[Link]
    newer: list[Row]
    older: list[Row]
    proof: ProofStatus


def _pivots(e: EventOut) -> list[Link]:
    links: list[Link] = []
    actor = e.actor_id or e.actor_name
    if actor:
        links.append(Link("Only this actor", activity_href({"actor": actor})))
    if e.ip:
        links.append(Link("Only this IP", activity_href({"ip": e.ip})))
    if e.target_type:
        target = {"target_type": e.target_type, "target_id": e.target_id}
        links.append(Link("Only this target", activity_href(target)))
    if e.request_id:
        links.append(Link("Only this request id", activity_href({"request_id": e.request_id})))
    links.append(Link("Only this action", activity_href({"action": [e.action]})))
    links.append(Link("Only this source", activity_href({"source": e.source})))
    if e.tenant_id:
        links.append(Link("Only this tenant", activity_href({"tenant_id": e.tenant_id})))
    if actor:
        links.append(Link("Exclude this actor", activity_href({"exclude_actor": [actor]})))
    links.append(Link("Exclude this action", activity_href({"exclude_action": [e.action]})))
    if e.ip:
        links.append(Link("Exclude this IP", activity_href({"exclude_ip": e.ip})))
    window = timedelta(minutes=5)
    links.append(
        Link(
            "±5 minutes",
            activity_href(
                {"since": _iso(e.occurred_at - window), "until": _iso(e.occurred_at + window)}
            ),
        )
    )
    return links


async def _rows(session: AsyncSession, events: list[EventOut]) -> list[Row]:
    names = await auth_service.full_names(
        session, [e.actor_id for e in events if e.actor_type == "user"]
    )
    return [
        Row(
            e,
            names.get(e.actor_id or "") if e.actor_type == "user" else None,
            action_icon(e.action),
        )
        for e in events
    ]


async def detail_view(
    session: AsyncSession, audit: RequestAudit, event_ref: int | uuid.UUID
) -> DetailView:
    event = await activity_service.get_activity(session, audit, event_ref)
    newer, older = await activity_service.surrounding(session, event, SURROUNDING)
    row = (await _rows(session, [event]))[0]
    return DetailView(
        event=event,
        full_name=row.full_name,
        icon=row.icon,
        pivots=_pivots(event),
        newer=await _rows(session, newer),
        older=await _rows(session, older),
        proof=await proof_status(session, event),
    )


# --- live tail ----------------------------------------------------------------------------

TAIL_POLL = 0.5  # seconds between looks at the log
TAIL_SECONDS = 55.0  # a stream ends after this; the browser reconnects with Last-Event-ID
TAIL_RECHECK = 5.0  # how often a stream re-checks that its session is still live
TAIL_BATCH = 500


def parse_position(value: str | None) -> int | None:
    """A log position from Last-Event-ID / `after`; anything else is refused."""
    if value is None or value == "":
        return None
    text = value.strip()
    if text.isascii() and (text.isdigit() or text == "-1") and len(text) <= 19:
        return int(text)
    raise ValidationFailed(
        "Last-Event-ID (or after) must be a log position this stream sent",
        errors=[
            FieldError(
                loc=["header", "last-event-id"], msg="not a log position", type="value_error"
            )
        ],
    )


@dataclass(slots=True)
class TailState:
    after: int
    filters: ActivityFilters


async def tail_begin(
    session: AsyncSession,
    audit: RequestAudit,
    filters: ActivityFilters,
    after: int | None,
) -> TailState:
    """Where a live tail starts: after `after` (the SSE Last-Event-ID, or the position
    the page was rendered at), else after the newest sequenced event."""
    start = after if after is not None else await activity_service.tail_start(session)
    audit.describe(
        filters=filters.applied(),
        navigation="live_tail",
        after=start,
        description="Live tail of the activity history",
    )
    return TailState(start, filters)


async def tail_next(session: AsyncSession, state: TailState) -> list[TailedRow]:
    state.after, found = await activity_service.tail(
        session, state.filters, state.after, TAIL_BATCH
    )
    rows = await _rows(session, [t.event for t in found])
    return [TailedRow(t.position, row) for t, row in zip(found, rows, strict=True)]


@dataclass(frozen=True, slots=True)
class TailedRow:
    position: int
    row: Row


async def still_signed_in(session: AsyncSession, token: str, claims: TokenClaims) -> bool:
    """Whether the stream's session still holds (revocation and sign-out end a tail)."""
    try:
        await auth_service.authenticate(session, _Aside(), token, claims)
    except AppError:
        return False
    return True
