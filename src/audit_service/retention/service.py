"""Retention rules, legal holds, the preview of the next run, and the archive list.

Rules and holds are configuration: every change records `config.changed` with the values
before and after (holds: `retention.hold_created` / `retention.hold_released`, kept as
critical events by the default rules)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.audit_log.sink import EventSink
from audit_service.core.errors import Conflict, FieldError, NotFound, ValidationFailed
from audit_service.integrity.bundle_export import newest_checkpoint
from audit_service.kit.models import utcnow
from audit_service.kit.schemas import config_change
from audit_service.retention import repository as repo
from audit_service.retention.archive import archive_end, day_bounds
from audit_service.retention.policy import Policy
from audit_service.retention.schemas import (
    ArchiveList,
    ArchiveOut,
    HoldIn,
    HoldList,
    HoldOut,
    PolicyIn,
    PolicyList,
    PolicyOut,
    PolicyUpdate,
    RetentionMatch,
    RetentionPreview,
    RetentionPreviewItem,
    _check_days,
)

# --- rules -----------------------------------------------------------------------------


def policy_out(p: Policy) -> PolicyOut:
    return PolicyOut(
        id=p.id,
        position=p.position,
        name=p.name,
        match=dict(p.match),
        archive_after_days=p.archive_after_days,
        delete_after_days=p.delete_after_days,
        critical=p.critical,
        created_at=p.created_at,
        created_by=p.created_by,
        updated_at=p.updated_at,
        updated_by=p.updated_by,
    )


def shadows(earlier: dict[str, str], later: dict[str, str]) -> bool:
    """Every event `later` matches is matched by `earlier` (so `later`, evaluated after it,
    would never get an event)."""
    for key, value in earlier.items():
        if key == "action_prefix":
            if not later.get("action_prefix", "").startswith(value):
                return False
        elif later.get(key) != value:
            return False
    return True


def _check_rules(rules: Sequence[Policy], changed: int, loc: str) -> None:
    """Refuse a rule set where a rule can never match: an earlier rule covers all of it."""
    ordered = sorted(rules, key=lambda p: p.position)
    for i, later in enumerate(ordered):
        for earlier in ordered[:i]:
            if changed in (later.id, earlier.id) and shadows(
                dict(earlier.match), dict(later.match)
            ):
                message = (
                    f"rule '{later.name}' (position {later.position}) would never match: "
                    f"rule '{earlier.name}' (position {earlier.position}) before it takes "
                    "every event it matches; reorder them or narrow the earlier one"
                )
                raise ValidationFailed(
                    message, errors=[FieldError(loc=["body", loc], msg=message, type="value_error")]
                )


async def list_policies(session: AsyncSession, audit: EventSink) -> PolicyList:
    items = [policy_out(p) for p in await repo.list_policies(session)]
    audit.describe(target_type="retention_policy", returned=len(items))
    return PolicyList(items=items)


async def _policy(session: AsyncSession, policy_id: int) -> Policy:
    policy = await repo.get_policy(session, policy_id)
    if policy is None:
        raise NotFound(f"No retention rule with id {policy_id}")
    return policy


def _taken() -> Conflict:
    return Conflict("Another retention rule has this name or position")


async def create_policy(session: AsyncSession, audit: EventSink, data: PolicyIn) -> PolicyOut:
    audit.describe(target_type="retention_policy", setting="retention_policy")
    now = utcnow()
    values = {
        "name": data.name,
        "position": data.position,
        "match": data.match.stored(),
        "archive_after_days": data.archive_after_days,
        "delete_after_days": data.delete_after_days,
        "critical": data.critical,
        "created_at": now,
        "created_by": audit.actor.name,
        "updated_at": now,
        "updated_by": audit.actor.name,
    }
    rules = await repo.list_policies(session)
    _check_rules([*rules, Policy(id=-1, **_rule_fields(values))], -1, "match")
    try:
        policy = await repo.add_policy(session, values)
    except repo.Conflict:
        raise _taken() from None
    out = policy_out(policy)
    audit.describe(
        target_id=str(out.id),
        description=f"Created retention rule {out.id} '{out.name}'",
        **config_change(before=None, after=out.public()),
    )
    return out


def _rule_fields(values: dict[str, Any]) -> dict[str, Any]:
    keys = ("position", "name", "match", "archive_after_days", "delete_after_days", "critical")
    return {k: values[k] for k in keys}


async def update_policy(
    session: AsyncSession, audit: EventSink, policy_id: int, data: PolicyUpdate
) -> PolicyOut:
    audit.describe(
        target_type="retention_policy", target_id=str(policy_id), setting="retention_policy"
    )
    before = await _policy(session, policy_id)
    given = data.model_fields_set
    values: dict[str, Any] = {}
    for name in ("name", "position", "critical"):
        value = getattr(data, name)
        if name in given and value is None:
            message = f"{name} cannot be null"
            raise ValidationFailed(
                message, errors=[FieldError(loc=["body", name], msg=message, type="value_error")]
            )
        if name in given:
            values[name] = value
    if "match" in given:
        values["match"] = (data.match or RetentionMatch()).stored()
    for name in ("archive_after_days", "delete_after_days"):
        if name in given:
            values[name] = getattr(data, name)
    archive = values.get("archive_after_days", before.archive_after_days)
    delete = values.get("delete_after_days", before.delete_after_days)
    try:
        _check_days(archive, delete)
    except ValueError as exc:
        raise ValidationFailed(
            str(exc),
            errors=[
                FieldError(loc=["body", "delete_after_days"], msg=str(exc), type="value_error")
            ],
        ) from None
    merged = _rule_fields(_as(before))
    merged.update({k: v for k, v in values.items() if k in merged})
    rules = [p for p in await repo.list_policies(session) if p.id != policy_id]
    _check_rules([*rules, Policy(id=policy_id, **merged)], policy_id, "match")
    values.update(updated_at=utcnow(), updated_by=audit.actor.name)
    try:
        after = await repo.update_policy(session, policy_id, values)
    except repo.Conflict:
        raise _taken() from None
    out = policy_out(after)
    audit.describe(
        description=f"Changed retention rule {out.id} '{out.name}'",
        **config_change(before=policy_out(before).public(), after=out.public()),
    )
    return out


def _as(p: Policy) -> dict[str, Any]:
    return {name: getattr(p, name) for name in Policy.__slots__}


async def delete_policy(session: AsyncSession, audit: EventSink, policy_id: int) -> None:
    audit.describe(
        target_type="retention_policy", target_id=str(policy_id), setting="retention_policy"
    )
    before = await _policy(session, policy_id)
    await repo.delete_policy(session, policy_id)
    audit.describe(
        description=f"Deleted retention rule {before.id} '{before.name}' (its archive "
        "segments stay)",
        **config_change(before=policy_out(before).public(), after=None),
    )


# --- preview ---------------------------------------------------------------------------


def delete_end(policy: Policy, now: datetime) -> datetime | None:
    if policy.delete_after_days is None or policy.archive_after_days is None:
        return None
    return now - timedelta(days=policy.delete_after_days)


async def preview(
    session: AsyncSession, audit: EventSink, now: datetime | None = None
) -> RetentionPreview:
    """Per rule, what the next run would archive and delete.

    Cost (checked with EXPLAIN in tests/retention/test_preview.py): every count is one
    range of ix_audit_event_recorded_at_id with the rule's clause as a filter, never a scan
    of the table.
    - archive: recorded_at from the day after the rule's last segment (the archive step's
      own cursor) to the rule's archive end. After the first run that is the day or so
      that came due since the last run; only the very first preview of an old log pays for
      its whole backlog (as the first run does).
    - delete: recorded_at below min(the delete cutoff, the end of the rule's last archived
      day): only archived events are deleted. Deleted rows are gone from the index, so
      once the purge keeps up, the range holds the rows due now plus the ones kept on
      purpose (held, or another rule's).
    """
    now = now or utcnow()
    policies = await repo.list_policies(session)
    held = await repo.held_clause(session)
    checkpoint = await newest_checkpoint(session)
    items = []
    for p in policies:
        clause = repo.policy_clause(policies, p.id)
        done = await repo.archived_until(session, p.id)
        archive_before = archive_end(p, now)
        archive = 0
        if archive_before is not None:
            after = None if done is None else day_bounds(done)[1]
            archive = await repo.count_events(session, clause, after, archive_before)
        delete_before = delete_end(p, now)
        delete = kept = 0
        if delete_before is not None and done is not None:
            bound = min(delete_before, day_bounds(done)[1])
            delete = await repo.count_events(session, clause, None, bound, ~held)
            kept = await repo.count_events(session, clause, None, bound, held)
        items.append(
            RetentionPreviewItem(
                policy_id=p.id,
                name=p.name,
                critical=p.critical,
                archive=archive,
                archive_before=archive_before,
                delete=delete,
                delete_before=delete_before,
                held=kept,
            )
        )
    audit.describe(target_type="retention_policy", returned=len(items))
    return RetentionPreview(
        as_of=now, checkpoint_size=None if checkpoint is None else checkpoint.size, items=items
    )


# --- holds -----------------------------------------------------------------------------


def hold_out(row: Any) -> HoldOut:
    return HoldOut(
        id=row.id,
        reason=row.reason,
        filter=dict(row.filter),
        active=row.released_at is None,
        created_at=row.created_at,
        created_by=row.created_by,
        released_at=row.released_at,
        released_by=row.released_by,
    )


async def create_hold(session: AsyncSession, audit: EventSink, data: HoldIn) -> HoldOut:
    audit.describe(target_type="retention_hold", setting="retention_hold")
    row = await repo.add_hold(
        session,
        {
            "reason": data.reason,
            "filter": data.filter.stored(),
            "created_at": utcnow(),
            "created_by": audit.actor.name,
        },
    )
    out = hold_out(row)
    audit.describe(
        target_id=str(out.id),
        description=f"Placed legal hold {out.id}",
        **config_change(before=None, after=out.public()),
    )
    return out


async def list_holds(session: AsyncSession, audit: EventSink, active: bool) -> HoldList:
    items = [hold_out(r) for r in await repo.list_holds(session, active_only=active)]
    audit.describe(target_type="retention_hold", returned=len(items))
    return HoldList(items=items)


async def release_hold(session: AsyncSession, audit: EventSink, hold_id: int) -> HoldOut:
    audit.describe(target_type="retention_hold", target_id=str(hold_id), setting="retention_hold")
    before = await repo.get_hold(session, hold_id)
    if before is None:
        raise NotFound(f"No legal hold with id {hold_id}")
    row = await repo.release_hold(session, hold_id, utcnow(), audit.actor.name)
    if row is None:
        raise Conflict(f"Legal hold {hold_id} is released already")
    out = hold_out(row)
    audit.describe(
        description=f"Released legal hold {hold_id}",
        **config_change(before=hold_out(before).public(), after=out.public()),
    )
    return out


# --- archives --------------------------------------------------------------------------


def archive_out(row: Any) -> ArchiveOut:
    return ArchiveOut(
        id=row.id,
        policy_id=row.policy_id,
        policy=row.policy_name,
        day=row.day,
        count=row.count,
        first_id=row.first_id,
        last_id=row.last_id,
        first_position=row.first_position,
        last_position=row.last_position,
        checkpoint_size=row.checkpoint_size,
        path=row.path,
        sha256=row.sha256,
        manifest_hash=row.manifest_hash,
        previous_manifest_hash=row.previous_manifest_hash,
        created_at=row.created_at,
        s3_key=row.s3_key,
        uploaded_at=row.uploaded_at,
        s3_error=row.s3_error,
    )


async def list_archives(
    session: AsyncSession,
    audit: EventSink,
    *,
    policy_id: int | None,
    limit: int,
    before_id: int | None,
) -> ArchiveList:
    rows = await repo.list_archives(
        session, policy_id=policy_id, limit=limit + 1, before_id=before_id
    )
    more = len(rows) > limit
    items = [archive_out(r) for r in rows[:limit]]
    audit.describe(target_type="retention_archive", returned=len(items))
    return ArchiveList(items=items, next_before_id=items[-1].id if more and items else None)
