"""All SQL of retention's forgetting half: tombstones and purge bookkeeping, the rows a purge,
an anonymisation or an erasure touches, and the one path allowed to delete or rewrite events.

That path: on PostgreSQL the SECURITY DEFINER functions of migration 0023 (the service role
has no DELETE / UPDATE on audit_event, only EXECUTE on them; they re-check everything the
caller claims). SQLite has no roles: the same checks run here in Python and the append-only
triggers are opened for the statement by a row in `retention_door` (README: weaker).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, BYTEA
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import BigInteger, Text

from audit_service.audit_log import repository as log_repo
from audit_service.audit_log.models import AuditEvent, AuditLeaf
from audit_service.core.db import is_postgres, upsert_for
from audit_service.integrity import repository as integrity_repo
from audit_service.integrity.entry import ip_prefix
from audit_service.integrity.models import IntegrityCommitment, IntegrityKey
from audit_service.kit.net import canonical_ip_key, parse_ip
from audit_service.retention import repository as policy_repo
from audit_service.retention.models import RetentionArchive
from audit_service.retention.privacy_agent import family
from audit_service.retention.privacy_models import (
    RetentionDoor,
    RetentionErasure,
    RetentionPurge,
)

_events = cast(Table, AuditEvent.__table__)
_leaves = cast(Table, AuditLeaf.__table__)
_kept = cast(Table, IntegrityCommitment.__table__)
_keys = cast(Table, IntegrityKey.__table__)
_archives = cast(Table, RetentionArchive.__table__)
_purges = cast(Table, RetentionPurge.__table__)
_erasures = cast(Table, RetentionErasure.__table__)
_door = cast(Table, RetentionDoor.__table__)

SOURCE = "audit-service"
PURGED = "retention.purged"
ANONYMIZED = "retention.anonymized"
ERASED = "retention.erased"


class Refused(Exception):
    """The restricted path refused the call (what the PostgreSQL functions raise)."""


# --- events of our own -----------------------------------------------------------------


async def insert_event(session: AsyncSession, row: dict[str, Any]) -> int:
    """Insert one system event (audit_log.context.system_event) and return its id."""
    await log_repo.insert_events(session, [row])
    found = await session.scalar(select(_events.c.id).where(_events.c.event_id == row["event_id"]))
    assert found is not None
    return int(found)


async def position_of(session: AsyncSession, event_pk: int) -> int | None:
    found = await session.scalar(select(_leaves.c.position).where(_leaves.c.event_pk == event_pk))
    return None if found is None else int(found)


# --- purge: segments due, their rows, tombstones ------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    id: int
    policy_id: int
    day: date
    first_id: int
    last_id: int
    recorded_from: datetime
    recorded_until: datetime
    manifest_hash: str


async def segments_due(
    session: AsyncSession,
    policy_id: int,
    cutoff: datetime,
    limit: int,
    *,
    uploaded_only: bool = False,
) -> list[Segment]:
    """Archive segments of `policy_id` whose whole day lies before `cutoff` and that no
    tombstone names yet (oldest first); `uploaded_only`: only those confirmed in the
    bucket (retention/upload.py)."""
    a = _archives
    where = [
        a.c.policy_id == policy_id,
        a.c.recorded_until <= cutoff,
        ~exists().where(_purges.c.archive_id == a.c.id),
    ]
    if uploaded_only:
        where.append(a.c.uploaded_at.is_not(None))
    stmt = (
        select(
            a.c.id,
            a.c.policy_id,
            a.c.day,
            a.c.first_id,
            a.c.last_id,
            a.c.recorded_from,
            a.c.recorded_until,
            a.c.manifest_hash,
        )
        .where(*where)
        .order_by(a.c.day, a.c.id)
        .limit(limit)
    )
    return [Segment(*row) for row in (await session.execute(stmt)).all()]


async def count_due_not_uploaded(session: AsyncSession, policy_id: int, cutoff: datetime) -> int:
    """Segments of `policy_id` due for deletion but not in the bucket yet."""
    a = _archives
    stmt = (
        select(func.count())
        .select_from(a)
        .where(
            a.c.policy_id == policy_id,
            a.c.recorded_until <= cutoff,
            a.c.uploaded_at.is_(None),
            ~exists().where(_purges.c.archive_id == a.c.id),
        )
    )
    return int(await session.scalar(stmt) or 0)


async def segment_rows(
    session: AsyncSession, segment: Segment, belongs: ColumnElement[bool], held: ColumnElement[bool]
) -> list[tuple[int, int | None, bool, bool]]:
    """(id, log position or None, of the segment's rule and day, held) of every row in the
    segment's id range, in id order.

    Every row of the range, not only the day's: ids follow insertion, `recorded_at` does not
    quite (late or back-filled rows), so rows of other days lie between the day's rows. They
    count as not the segment's, so they split the id ranges of the tombstone; a range over
    them would let the restricted path delete rows no segment of this rule archived (at 10M
    events: ≈ 60,000 critical rows of neighbouring days, bench/retention.py)."""
    e = _events
    ours = and_(
        belongs, e.c.recorded_at >= segment.recorded_from, e.c.recorded_at < segment.recorded_until
    )
    stmt = (
        select(e.c.id, _leaves.c.position, ours.label("belongs"), held.label("held"))
        .select_from(e.outerjoin(_leaves, _leaves.c.event_pk == e.c.id))
        .where(e.c.id >= segment.first_id, e.c.id <= segment.last_id)
        .order_by(e.c.id)
    )
    return [
        (int(r[0]), None if r[1] is None else int(r[1]), bool(r[2]), bool(r[3]))
        for r in (await session.execute(stmt)).all()
    ]


async def add_purge(
    session: AsyncSession, event_pk: int, segment: Segment, planned: int, now: datetime
) -> None:
    await session.execute(
        insert(_purges).values(
            event_pk=event_pk,
            policy_id=segment.policy_id,
            archive_id=segment.id,
            day=segment.day,
            planned=planned,
            deleted=0,
            created_at=now,
        )
    )


async def unfinished_purges(session: AsyncSession) -> list[tuple[int, int]]:
    """(tombstone event id, rows deleted so far) of the purges not finished, oldest first."""
    stmt = (
        select(_purges.c.event_pk, _purges.c.deleted)
        .where(_purges.c.finished_at.is_(None))
        .order_by(_purges.c.event_pk)
    )
    return [(int(r[0]), int(r[1])) for r in (await session.execute(stmt)).all()]


async def note_deleted(
    session: AsyncSession, event_pk: int, deleted: int, finished: datetime | None
) -> None:
    await session.execute(
        update(_purges)
        .where(_purges.c.event_pk == event_pk)
        .values(deleted=_purges.c.deleted + deleted, finished_at=finished)
    )


async def purge_batch(session: AsyncSession, tombstone: int, max_rows: int) -> int:
    """Delete up to `max_rows` rows the tombstone allows: the restricted path."""
    if is_postgres(session):
        n = await session.scalar(
            text("SELECT audit_retention_purge(:t, :n)"), {"t": tombstone, "n": max_rows}
        )
        return int(n or 0)
    return await _sqlite_purge(session, tombstone, max_rows)


async def _tombstone(session: AsyncSession, event_pk: int, action: str) -> dict[str, Any]:
    row = (
        await session.execute(
            select(_events.c.action, _events.c.source, _events.c.metadata).where(
                _events.c.id == event_pk
            )
        )
    ).one_or_none()
    if row is None or row.action != action or row.source != SOURCE:
        raise Refused(f"event {event_pk} is not a {action} event")
    return dict(row.metadata or {})


async def _sqlite_purge(session: AsyncSession, tombstone: int, max_rows: int) -> int:
    md = await _tombstone(session, tombstone, PURGED)
    position = await position_of(session, tombstone)
    if position is None:
        raise Refused(f"tombstone {tombstone} is not sequenced yet")
    e, a = _events, _archives
    in_ranges = or_(
        literal(False),
        *(e.c.id.between(int(r[0]), int(r[1])) for r in md.get("id_ranges") or ()),
    )
    archived = (
        select(literal(1))
        .select_from(a)
        .where(
            e.c.id >= a.c.first_id,
            e.c.id <= a.c.last_id,
            e.c.recorded_at >= a.c.recorded_from,
            e.c.recorded_at < a.c.recorded_until,
            a.c.manifest_hash.in_([str(h) for h in md.get("manifest_hashes") or ()]),
        )
        .exists()
    )
    held = await policy_repo.held_clause(session)
    stmt = (
        select(e.c.id)
        .select_from(e.join(_leaves, _leaves.c.event_pk == e.c.id))
        .where(in_ranges, e.c.id != tombstone, _leaves.c.position < position, archived, ~held)
        .order_by(e.c.id)
        .limit(max_rows)
    )
    ids = [int(i) for i in (await session.scalars(stmt)).all()]
    if not ids:
        return 0
    async with _opened(session):
        await session.execute(delete(e).where(e.c.id.in_(ids)))
        await session.execute(delete(_kept).where(_kept.c.event_pk.in_(ids)))
    return len(ids)


class _opened:
    """SQLite: the append-only triggers let DELETE / UPDATE of audit_event through while the
    door row exists (this transaction only: it is removed before the caller commits)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def __aenter__(self) -> None:
        await self.session.execute(insert(_door).values(opened=1))

    async def __aexit__(self, *exc: object) -> None:
        await self.session.execute(delete(_door))


# --- anonymisation: days, their rows ---------------------------------------------------


def day_bounds(day: str) -> tuple[datetime, datetime]:
    start = datetime.combine(date.fromisoformat(day), time(0), tzinfo=UTC)
    return start, start + timedelta(days=1)


async def day_keys_before(session: AsyncSession, day: str, limit: int) -> list[str]:
    """Names of the day keys (YYYY-MM-DD) of days before `day`, oldest first."""
    stmt = (
        select(_keys.c.name)
        .where(_keys.c.kind == "day", _keys.c.name < day)
        .order_by(_keys.c.name)
        .limit(limit)
    )
    return [str(n) for n in (await session.scalars(stmt)).all()]


def _personal_of_day(day: str) -> list[ColumnElement[bool]]:
    lo, hi = day_bounds(day)
    e = _events
    return [
        e.c.recorded_at >= lo,
        e.c.recorded_at < hi,
        or_(e.c.ip.is_not(None), e.c.user_agent.is_not(None)),
    ]


async def day_blockers(
    session: AsyncSession, day: str, held: ColumnElement[bool]
) -> tuple[int, int]:
    """(held rows, unsequenced rows) among the day's rows with an IP or a user agent."""
    e = _events
    where = _personal_of_day(day)
    n_held = await session.scalar(select(func.count()).select_from(e).where(*where, held))
    unsequenced = await session.scalar(
        select(func.count())
        .select_from(e.outerjoin(_leaves, _leaves.c.event_pk == e.c.id))
        .where(*where, _leaves.c.position.is_(None))
    )
    return int(n_held or 0), int(unsequenced or 0)


async def day_count(session: AsyncSession, day: str) -> int:
    n = await session.scalar(
        select(func.count()).select_from(_events).where(*_personal_of_day(day))
    )
    return int(n or 0)


async def day_rows(
    session: AsyncSession, day: str, after_id: int, limit: int
) -> list[dict[str, Any]]:
    """The day's rows with an IP or a user agent, by id after `after_id`, with the
    commitments already kept for them."""
    e = _events
    stmt = (
        select(
            e.c.id,
            e.c.event_id,
            e.c.recorded_at,
            e.c.ip,
            e.c.user_agent,
            _kept.c.ip.label("kept_ip"),
            _kept.c.user_agent.label("kept_ua"),
        )
        .select_from(e.outerjoin(_kept, _kept.c.event_pk == e.c.id))
        .where(*_personal_of_day(day), e.c.id > after_id)
        .order_by(e.c.id)
        .limit(limit)
    )
    return [dict(r._mapping) for r in (await session.execute(stmt)).all()]


async def day_key(session: AsyncSession, day: str) -> bytes | None:
    return await _key(session, "day", day)


async def _key(session: AsyncSession, kind: str, name: str) -> bytes | None:
    found = await session.scalar(
        select(_keys.c.key).where(_keys.c.kind == kind, _keys.c.name == name)
    )
    return None if found is None else bytes(found)


async def keys_for(
    session: AsyncSession, wanted: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], bytes]:
    return await integrity_repo.read_keys(session, wanted)


# --- erasure: the subject's rows -----------------------------------------------------------


def subject_clause(
    actor_id: str, source: str | None, tenant_id: str | None
) -> list[ColumnElement[bool]]:
    e = _events
    where = [e.c.actor_type == "user", e.c.actor_id == actor_id]
    if source is not None:
        where.append(e.c.source == source)
    if tenant_id is not None:
        where.append(e.c.tenant_id == tenant_id)
    return where


async def subject_counts(
    session: AsyncSession, where: Sequence[ColumnElement[bool]], held: ColumnElement[bool]
) -> tuple[int, int, int]:
    """(rows, held rows, unsequenced rows) of a subject."""
    e = _events
    total = await session.scalar(select(func.count()).select_from(e).where(*where))
    n_held = await session.scalar(select(func.count()).select_from(e).where(*where, held))
    unsequenced = await session.scalar(
        select(func.count())
        .select_from(e.outerjoin(_leaves, _leaves.c.event_pk == e.c.id))
        .where(*where, _leaves.c.position.is_(None))
    )
    return int(total or 0), int(n_held or 0), int(unsequenced or 0)


async def subject_rows(
    session: AsyncSession, where: Sequence[ColumnElement[bool]], after_id: int, limit: int
) -> list[dict[str, Any]]:
    e = _events
    stmt = (
        select(
            e.c.id,
            e.c.event_id,
            e.c.recorded_at,
            e.c.actor_type,
            e.c.actor_id,
            e.c.actor_name,
            e.c.ip,
            e.c.user_agent,
            _kept.c.ip.label("kept_ip"),
            _kept.c.user_agent.label("kept_ua"),
        )
        .select_from(e.outerjoin(_kept, _kept.c.event_pk == e.c.id))
        .where(*where, e.c.id > after_id)
        .order_by(e.c.id)
        .limit(limit)
    )
    return [dict(r._mapping) for r in (await session.execute(stmt)).all()]


async def add_erasure(session: AsyncSession, values: dict[str, Any]) -> int:
    result = await session.execute(insert(_erasures).values(**values).returning(_erasures.c.id))
    return int(result.scalar_one())


async def finish_erasure(
    session: AsyncSession, erasure_id: int, event_pk: int, events: int, key_destroyed: bool
) -> None:
    await session.execute(
        update(_erasures)
        .where(_erasures.c.id == erasure_id)
        .values(event_pk=event_pk, events=events, key_destroyed=key_destroyed)
    )


async def list_erasures(session: AsyncSession, limit: int) -> list[RetentionErasure]:
    stmt = select(RetentionErasure).order_by(RetentionErasure.id.desc()).limit(limit)
    return list((await session.scalars(stmt)).all())


# --- the rewrite: the restricted path --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rewrite:
    """One row for the rewrite functions: the user agent's family (or None) and the
    commitments to keep (None: none to add for that field)."""

    id: int
    user_agent: str | None
    ip: bytes | None
    ua: bytes | None
    actor_id: bytes | None
    actor_name: bytes | None


_ARRAYS: dict[str, Any] = {
    "ids": ARRAY(BigInteger),
    "uas": ARRAY(Text),
    "cip": ARRAY(BYTEA),
    "cua": ARRAY(BYTEA),
    "cid": ARRAY(BYTEA),
    "cname": ARRAY(BYTEA),
}


async def rewrite(session: AsyncSession, kind: str, event_pk: int, rows: Sequence[Rewrite]) -> int:
    """`kind` "anonymize" (event retention.anonymized) or "pseudonymize" (retention.erased):
    rewrite the rows through the restricted path. Returns the rows rewritten."""
    if not rows:
        return 0
    if is_postgres(session):
        stmt = text(
            f"SELECT audit_retention_{kind}(:e, :ids, :uas, :cip, :cua, :cid, :cname)"
        ).bindparams(*(bindparam(k, type_=t) for k, t in _ARRAYS.items()))
        n = await session.scalar(
            stmt,
            {
                "e": event_pk,
                "ids": [r.id for r in rows],
                "uas": [r.user_agent for r in rows],
                "cip": [r.ip for r in rows],
                "cua": [r.ua for r in rows],
                "cid": [r.actor_id for r in rows],
                "cname": [r.actor_name for r in rows],
            },
        )
        return int(n or 0)
    return await _sqlite_rewrite(session, kind, event_pk, rows)


def anonymized_ip(ip: str) -> tuple[str, bytes]:
    """An address as its /24 (IPv4) or /48 (IPv6) network address, and that address's key."""
    network = ip_prefix(ip).split("/", 1)[0]
    return network, canonical_ip_key(str(parse_ip(network)))


async def _sqlite_rewrite(
    session: AsyncSession, kind: str, event_pk: int, rows: Sequence[Rewrite]
) -> int:
    action = ANONYMIZED if kind == "anonymize" else ERASED
    md = await _tombstone(session, event_pk, action)
    held = await policy_repo.held_clause(session)
    e = _events
    ids = [r.id for r in rows]
    found = {
        int(r.id): r
        for r in (
            await session.execute(
                select(
                    e.c.id,
                    e.c.recorded_at,
                    e.c.actor_type,
                    e.c.actor_id,
                    e.c.actor_name,
                    e.c.ip,
                    e.c.ip_bytes,
                    e.c.user_agent,
                    held.label("held"),
                ).where(e.c.id.in_(ids))
            )
        ).all()
    }
    pseudonym = md.get("pseudonym")
    subject: str | None = None
    n = 0
    upsert = upsert_for(session)
    async with _opened(session):
        for r in rows:
            row = found.get(r.id)
            if row is None:
                continue
            if row.held:
                raise Refused(f"event {r.id} is under a legal hold")
            values: dict[str, Any] = {}
            if kind == "anonymize":
                day = row.recorded_at.astimezone(UTC).date().isoformat()
                if day not in (md.get("days") or ()):
                    raise Refused(f"event {r.id} is outside the days of event {event_pk}")
                rewrite_ip, rewrite_ua = bool(md.get("ip")), bool(md.get("user_agent"))
            else:
                if row.actor_type != "user":
                    raise Refused(f"event {r.id} is not a user's")
                if row.actor_id != pseudonym:
                    if subject is None:
                        subject = row.actor_id or ""
                    elif subject != (row.actor_id or ""):
                        raise Refused("one call rewrites one subject")
                rewrite_ip = rewrite_ua = True
                values["actor_id"] = None if row.actor_id is None else pseudonym
                values["actor_name"] = None if row.actor_name is None else pseudonym
            if row.ip is not None and rewrite_ip:
                values["ip"], values["ip_bytes"] = anonymized_ip(row.ip)
            if row.user_agent is not None and rewrite_ua:
                if r.user_agent is None or family(r.user_agent) != r.user_agent:
                    raise Refused("a user agent family must be a short label")
                values["user_agent"] = r.user_agent
            ins = upsert(_kept).values(
                event_pk=r.id,
                ip=r.ip,
                user_agent=r.ua,
                actor_id=r.actor_id,
                actor_name=r.actor_name,
            )
            k = _kept.c
            await session.execute(
                ins.on_conflict_do_update(
                    index_elements=[k.event_pk],
                    set_={
                        "ip": func.coalesce(k.ip, ins.excluded.ip),
                        "user_agent": func.coalesce(k.user_agent, ins.excluded.user_agent),
                        "actor_id": func.coalesce(k.actor_id, ins.excluded.actor_id),
                        "actor_name": func.coalesce(k.actor_name, ins.excluded.actor_name),
                    },
                )
            )
            if values:
                await session.execute(update(e).where(e.c.id == r.id).values(**values))
            n += 1
    return n


async def forget_key(session: AsyncSession, event_pk: int, kind: str, name: str) -> bool:
    """Destroy a commitment key once nothing needs it: a day key when every row of that day
    with an IP or user agent has its commitments kept; a subject key when no row still
    names the subject. False: the subject key is still needed (kept)."""
    if is_postgres(session):
        done = await session.scalar(
            text("SELECT audit_retention_forget_key(:e, :k, :n)"),
            {"e": event_pk, "k": kind, "n": name},
        )
        return bool(done)
    e = _events
    if kind == "day":
        md = await _tombstone(session, event_pk, ANONYMIZED)
        if name not in (md.get("days") or ()):
            raise Refused(f"event {event_pk} does not name day {name}")
        lo, hi = day_bounds(name)
        left = await session.scalar(
            select(func.count())
            .select_from(e.outerjoin(_kept, _kept.c.event_pk == e.c.id))
            .where(
                e.c.recorded_at >= lo,
                e.c.recorded_at < hi,
                or_(
                    and_(e.c.ip.is_not(None), _kept.c.ip.is_(None)),
                    and_(e.c.user_agent.is_not(None), _kept.c.user_agent.is_(None)),
                ),
            )
        )
        if left:
            raise Refused(f"day {name} still has rows that need its key")
    elif kind == "subject":
        await _tombstone(session, event_pk, ERASED)
        actor_type, _, actor_id = name.partition(":")
        left = await session.scalar(
            select(func.count())
            .select_from(e)
            .where(e.c.actor_type == actor_type, e.c.actor_id == actor_id)
        )
        if left:
            return False
    else:
        raise Refused("unknown key kind")
    result = await session.execute(delete(_keys).where(_keys.c.kind == kind, _keys.c.name == name))
    return bool(getattr(result, "rowcount", 0))
