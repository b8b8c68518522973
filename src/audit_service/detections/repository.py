"""All SQL of detections: the evaluator's cursor and window, alerts, rule settings."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.core.db import in_values, lock_for_transaction, upsert_for
from audit_service.detections.models import (
    Alert,
    DetectionLogin,
    DetectionNetwork,
    DetectionPrivilege,
    DetectionRuleSetting,
    DetectionState,
    DetectionSubject,
    DetectionSuppression,
    DetectionVolume,
)

_state = cast(Table, DetectionState.__table__)
_logins = cast(Table, DetectionLogin.__table__)
_settings = cast(Table, DetectionRuleSetting.__table__)
_networks = cast(Table, DetectionNetwork.__table__)


def _chunks(values: Iterable[str], size: int = 500) -> Iterator[list[str]]:
    """The distinct values, sorted, in slices of `size` (bounded statement parameters)."""
    unique = sorted(set(values))
    for i in range(0, len(unique), size):
        yield unique[i : i + size]


_privileges = cast(Table, DetectionPrivilege.__table__)
RESOLVED = "resolved"


# --- the evaluator ---------------------------------------------------------------------------


async def lock_state(session: AsyncSession, name: str) -> int:
    """The evaluator's position (-1: nothing evaluated), locked until this transaction ends:
    a second evaluator waits here, then reads the moved position instead of evaluating the
    same events again."""
    await lock_for_transaction(session, f"detections:{name}", _state)
    value = (await session.execute(select(_state.c.position).where(_state.c.name == name))).scalar()
    return -1 if value is None else int(value)


async def read_state(session: AsyncSession, name: str) -> int:
    value = (await session.execute(select(_state.c.position).where(_state.c.name == name))).scalar()
    return -1 if value is None else int(value)


async def move_state(session: AsyncSession, name: str, position: int, at: datetime) -> None:
    insert = upsert_for(session)
    stmt = insert(_state).values(name=name, position=position, updated_at=at)
    stmt = stmt.on_conflict_do_update(
        index_elements=[_state.c.name],
        set_={"position": stmt.excluded.position, "updated_at": stmt.excluded.updated_at},
    )
    await session.execute(stmt)


async def add_logins(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        return
    insert = upsert_for(session)
    # executemany of one statement: a VALUES list of thousands of rows costs more to compile.
    await session.execute(
        insert(_logins).on_conflict_do_nothing(index_elements=["event_pk"]), list(rows)
    )


async def window_logins(
    session: AsyncSession, ips: Sequence[str], users: Sequence[str], since: datetime
) -> list[Any]:
    """Every stored attempt since `since` from one of `ips` or for one of `users`."""
    out: dict[int, Any] = {}
    for column, values in ((_logins.c.ip, ips), (_logins.c.user_name, users)):
        for chunk in _chunks(values, 1000):
            stmt = select(_logins).where(
                in_values(session, column, chunk), _logins.c.recorded_at >= since
            )
            for r in (await session.execute(stmt)).all():
                out[r.event_pk] = r
    return list(out.values())


async def prune_logins(session: AsyncSession, before: datetime) -> None:
    await session.execute(delete(_logins).where(_logins.c.recorded_at < before))


async def networks_of(session: AsyncSession, users: Sequence[tuple[str, str, str]]) -> list[Any]:
    """The network rows of these (source, tenant, user) keys."""
    return await _rows_of_users(session, _networks, users)


async def privileges_of(session: AsyncSession, users: Sequence[tuple[str, str, str]]) -> list[Any]:
    """The privilege rows of these (source, tenant, user) keys."""
    return await _rows_of_users(session, _privileges, users)


async def save_privileges(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        return
    insert = upsert_for(session)
    stmt = insert(_privileges)
    stmt = stmt.on_conflict_do_update(
        index_elements=["source", "tenant_id", "user_name", "action"],
        set_={
            "last_allowed_at": stmt.excluded.last_allowed_at,
            "last_denied_at": stmt.excluded.last_denied_at,
        },
    )
    await session.execute(stmt, list(rows))


async def _rows_of_users(
    session: AsyncSession, table: Table, users: Sequence[tuple[str, str, str]]
) -> list[Any]:
    out: list[Any] = []
    wanted = set(users)
    for names in _chunks((u for _, _, u in users), 1000):
        stmt = select(table).where(in_values(session, table.c.user_name, names))
        out += [
            r
            for r in (await session.execute(stmt)).all()
            if (r.source, r.tenant_id, r.user_name) in wanted
        ]
    return out


async def save_networks(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows as they are now (the caller counted the batch's logins into them)."""
    if not rows:
        return
    insert = upsert_for(session)
    # executemany of one statement (a VALUES list of many rows costs more to compile).
    stmt = insert(_networks)
    stmt = stmt.on_conflict_do_update(
        index_elements=["source", "tenant_id", "user_name", "network"],
        set_={"logins": stmt.excluded.logins, "last_seen_at": stmt.excluded.last_seen_at},
    )
    await session.execute(stmt, list(rows))


# --- alerts ----------------------------------------------------------------------------------


async def unresolved_by_keys(session: AsyncSession, keys: Sequence[str]) -> dict[str, Alert]:
    out: dict[str, Alert] = {}
    for chunk in _chunks(keys):
        stmt = select(Alert).where(Alert.dedup_key.in_(chunk), Alert.status != RESOLVED)
        for a in (await session.scalars(stmt)).all():
            out[a.dedup_key] = a
    return out


async def resolved_keys(session: AsyncSession, keys: Sequence[str]) -> set[str]:
    out: set[str] = set()
    for chunk in _chunks(keys):
        stmt = (
            select(Alert.dedup_key)
            .where(Alert.dedup_key.in_(chunk), Alert.status == RESOLVED)
            .distinct()
        )
        out.update((await session.scalars(stmt)).all())
    return out


async def unresolved_of_rule(session: AsyncSession, rule_id: str) -> Sequence[Alert]:
    stmt = select(Alert).where(Alert.rule_id == rule_id, Alert.status != RESOLVED)
    return (await session.scalars(stmt)).all()


async def add_alert(session: AsyncSession, **values: Any) -> Alert:
    alert = Alert(**values)
    session.add(alert)
    await session.flush()
    return alert


async def get_alert(session: AsyncSession, alert_id: int) -> Alert | None:
    return await session.get(Alert, alert_id, populate_existing=True)


async def change_alert(session: AsyncSession, alert: Alert, **values: Any) -> bool:
    """Compare-and-set on the alert's version: False when someone changed it meanwhile."""
    result = await session.execute(
        update(Alert)
        .where(Alert.id == alert.id, Alert.version == alert.version)
        .values(version=Alert.version + 1, **values)
        .execution_options(synchronize_session=False)
    )
    changed: bool = result.rowcount == 1  # type: ignore[attr-defined]
    return changed


async def list_alerts(
    session: AsyncSession,
    *,
    status: str | None,
    severity: str | None,
    rule_id: str | None,
    entity: str | None,
    since: datetime | None,
    until: datetime | None,
    older_than: tuple[datetime, int] | None,
    limit: int,
) -> Sequence[Alert]:
    """Newest opened first."""
    stmt = select(Alert)
    if status is not None:
        stmt = stmt.where(Alert.status == status)
    if severity is not None:
        stmt = stmt.where(Alert.severity == severity)
    if rule_id is not None:
        stmt = stmt.where(Alert.rule_id == rule_id)
    if entity is not None:
        stmt = stmt.where(Alert.entity_value == entity)
    if since is not None:
        stmt = stmt.where(Alert.opened_at >= since)
    if until is not None:
        stmt = stmt.where(Alert.opened_at < until)
    if older_than is not None:
        at, pk = older_than
        stmt = stmt.where(or_(Alert.opened_at < at, (Alert.opened_at == at) & (Alert.id < pk)))
    stmt = stmt.order_by(Alert.opened_at.desc(), Alert.id.desc()).limit(limit)
    return (await session.scalars(stmt)).all()


# --- rule settings ---------------------------------------------------------------------------


async def all_settings(session: AsyncSession) -> Sequence[DetectionRuleSetting]:
    stmt = select(DetectionRuleSetting).order_by(
        DetectionRuleSetting.rule_id, DetectionRuleSetting.tenant_id
    )
    return (await session.scalars(stmt)).all()


async def get_setting(
    session: AsyncSession, rule_id: str, tenant_id: str
) -> DetectionRuleSetting | None:
    return await session.get(DetectionRuleSetting, (rule_id, tenant_id))


async def add_setting(session: AsyncSession, **values: Any) -> DetectionRuleSetting:
    setting = DetectionRuleSetting(**values)
    session.add(setting)
    await session.flush()
    return setting


async def add_repeat(
    session: AsyncSession,
    alert_id: int,
    triggers: int,
    last_seen_at: datetime,
    evidence: dict[str, Any],
    title: str,
) -> bool:
    """A repeat of an unresolved alert: False when it was resolved meanwhile."""
    result = await session.execute(
        update(Alert)
        .where(Alert.id == alert_id, Alert.status != RESOLVED)
        .values(
            count=Alert.count + triggers,
            last_seen_at=last_seen_at,
            evidence=evidence,
            title=title[:300],
            version=Alert.version + 1,
        )
        .execution_options(synchronize_session=False)
    )
    changed: bool = result.rowcount == 1  # type: ignore[attr-defined]
    return changed


# --- baselines (detection_volume, detection_subject) ------------------------------------------

_volume = cast(Table, DetectionVolume.__table__)
_subjects = cast(Table, DetectionSubject.__table__)
_suppressions = cast(Table, DetectionSuppression.__table__)


async def volume_counts(
    session: AsyncSession, kind: str, subjects: Sequence[str], hours: Sequence[datetime]
) -> list[Any]:
    """The hourly rows of these subjects of `kind` at these hours (every source, tenant)."""
    out: list[Any] = []
    at = sorted(set(hours))
    if not at:
        return out
    for names in _chunks(subjects):
        stmt = select(_volume).where(
            _volume.c.kind == kind,
            in_values(session, _volume.c.subject, names),
            _volume.c.hour_start.in_(at),
        )
        out += (await session.execute(stmt)).all()
    return out


async def volume_since(
    session: AsyncSession, kind: str, subjects: Sequence[str], since: datetime
) -> list[Any]:
    out: list[Any] = []
    for names in _chunks(subjects):
        stmt = select(_volume).where(
            _volume.c.kind == kind,
            in_values(session, _volume.c.subject, names),
            _volume.c.hour_start >= since,
        )
        out += (await session.execute(stmt)).all()
    return out


async def save_volume(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows with their counts as they are now (the caller added the batch's events)."""
    if not rows:
        return
    insert = upsert_for(session)
    # executemany of one statement: a VALUES list of thousands of rows costs more to compile.
    stmt = insert(_volume)
    stmt = stmt.on_conflict_do_update(
        index_elements=["kind", "subject", "source", "tenant_id", "hour_start"],
        set_={"events": stmt.excluded.events},
    )
    await session.execute(stmt, list(rows))


async def subjects_of(session: AsyncSession, kind: str, subjects: Sequence[str]) -> list[Any]:
    out: list[Any] = []
    for names in _chunks(subjects):
        stmt = select(_subjects).where(
            _subjects.c.kind == kind, in_values(session, _subjects.c.subject, names)
        )
        out += (await session.execute(stmt)).all()
    return out


async def save_subjects(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """First seen stays; last seen moves."""
    if not rows:
        return
    insert = upsert_for(session)
    stmt = insert(_subjects)
    stmt = stmt.on_conflict_do_update(
        index_elements=["kind", "subject", "source", "tenant_id"],
        set_={"last_seen_at": stmt.excluded.last_seen_at},
    )
    await session.execute(stmt, list(rows))


async def prune_volume(session: AsyncSession, before: datetime) -> None:
    await session.execute(delete(_volume).where(_volume.c.hour_start < before))
    await session.execute(delete(_subjects).where(_subjects.c.last_seen_at < before))


# --- suppression and inhibition ---------------------------------------------------------------


async def suppressions_of(
    session: AsyncSession, rule_ids: Sequence[str], after: datetime | None = None
) -> Sequence[DetectionSuppression]:
    stmt = select(DetectionSuppression).where(
        DetectionSuppression.rule_id.in_(sorted(set(rule_ids)))
    )
    if after is not None:
        stmt = stmt.where(DetectionSuppression.until > after)
    stmt = stmt.order_by(
        DetectionSuppression.rule_id, DetectionSuppression.tenant_id, DetectionSuppression.entity
    )
    return (await session.scalars(stmt)).all()


async def get_suppression(
    session: AsyncSession, rule_id: str, tenant_id: str, entity: str
) -> DetectionSuppression | None:
    stmt = select(DetectionSuppression).where(
        DetectionSuppression.rule_id == rule_id,
        DetectionSuppression.tenant_id == tenant_id,
        DetectionSuppression.entity == entity,
    )
    return (await session.scalars(stmt)).first()


async def add_suppression(session: AsyncSession, **values: Any) -> DetectionSuppression:
    row = DetectionSuppression(**values)
    session.add(row)
    await session.flush()
    return row


async def delete_suppression(session: AsyncSession, row: DetectionSuppression) -> None:
    await session.delete(row)
    await session.flush()


async def last_resolved(session: AsyncSession, keys: Sequence[str]) -> dict[str, datetime]:
    """The latest resolution time of each key's resolved alerts."""
    out: dict[str, datetime] = {}
    for chunk in _chunks(keys):
        stmt = (
            select(Alert.dedup_key, func.max(Alert.resolved_at))
            .where(Alert.dedup_key.in_(chunk), Alert.status == RESOLVED)
            .group_by(Alert.dedup_key)
        )
        for key, at in (await session.execute(stmt)).all():
            if at is not None:
                out[key] = at
    return out


async def uninhibited_of_rules(
    session: AsyncSession, rule_ids: Sequence[str], source: str
) -> Sequence[Alert]:
    stmt = select(Alert).where(
        Alert.rule_id.in_(sorted(rule_ids)),
        Alert.source == source,
        Alert.status != RESOLVED,
        Alert.inhibited_by.is_(None),
    )
    return (await session.scalars(stmt)).all()
