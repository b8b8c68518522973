"""Ingestion rules: validate everything first, then store the batch in one statement."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jsonschema import exceptions as jsonschema_errors
from jsonschema.protocols import Validator
from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.audit_log import repository as events
from audit_service.audit_log.context import RequestAudit
from audit_service.auth.models import ApiKey, User
from audit_service.core.errors import Conflict, FieldError, NotFound, ValidationFailed
from audit_service.ingestion import repository as repo
from audit_service.ingestion import safe_schema
from audit_service.ingestion.models import ActionSchema
from audit_service.ingestion.schemas import (
    ACTION_SCHEMA_MAX_BYTES,
    API_KEY_PREFIX,
    RECEIVED_FROM,
    ActionList,
    ActionOut,
    ActionSchemaOut,
    BatchAccepted,
    BatchItemResult,
    EventAccepted,
    EventIn,
    json_size,
)
from audit_service.kit.ids import new_event_id
from audit_service.kit.models import utcnow
from audit_service.kit.net import canonical_ip_key
from audit_service.kit.schemas import config_change, json_problem

# Rejections name at most this many failing fields (the count is always given).
MAX_REPORTED_ERRORS = 200
_MSG_MAX = 300


# --- metadata schemas ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Compiled:
    updated_at: datetime
    validator: Validator


# Compiled validators by action, reused until the stored schema changes (checked per request,
# so every process sees a new schema at once).
_compiled: dict[str, _Compiled] = {}


def _validator(row: ActionSchema) -> Validator:
    cached = _compiled.get(row.action)
    if cached is None or cached.updated_at != row.updated_at:
        cached = _Compiled(row.updated_at, safe_schema.make_validator(row.json_schema))
        if len(_compiled) > 1000:
            _compiled.clear()
        _compiled[row.action] = cached
    return cached.validator


def _schema_errors(validator: Validator, metadata: Any, loc: list[str | int]) -> list[FieldError]:
    try:
        found = sorted(validator.iter_errors(metadata), key=lambda e: list(e.absolute_path))
    except (
        jsonschema_errors.SchemaError,
        jsonschema_errors.UnknownType,
        # Schemas stored before registration refused these (a pattern RE2 cannot compile,
        # a reference cycle): the event is refused, the service stays up.
        ValueError,
        RecursionError,
    ) as exc:
        return [
            FieldError(
                loc=loc, msg=f"schema cannot be applied: {exc}"[:_MSG_MAX], type="metadata_schema"
            )
        ]
    return [
        FieldError(
            loc=[*loc, *e.absolute_path],
            msg=f"does not match the action's schema: {e.message}"[:_MSG_MAX],
            type=f"metadata_schema.{e.validator}",
        )
        for e in found
    ]


def _walk_refs(schema: Any) -> list[str]:
    refs: list[str] = []
    stack = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for name, value in item.items():
                if name in ("$ref", "$dynamicRef") and isinstance(value, str):
                    refs.append(value)
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return refs


def check_schema(schema: dict[str, Any]) -> None:
    """Refuse what cannot work as a metadata schema (422, naming where it is wrong)."""
    # Before anything walks it recursively (jsonschema's own checks, json.dumps).
    problem = json_problem(schema)
    if problem is not None:
        raise ValidationFailed(
            f"A schema {problem}",
            errors=[FieldError(loc=["body"], msg=problem, type="value_error")],
        )
    if json_size(schema) > ACTION_SCHEMA_MAX_BYTES:
        raise ValidationFailed(
            f"A schema is at most {ACTION_SCHEMA_MAX_BYTES} bytes as JSON",
            errors=[FieldError(loc=["body"], msg="schema too large", type="too_long")],
        )
    try:
        safe_schema.check_schema(schema)
    except jsonschema_errors.SchemaError as exc:
        message = exc.message
        if exc.validator == "format" and exc.validator_value == "regex":
            message = (
                f"{exc.instance!r} is not a pattern RE2 can match in linear time "
                "(look-arounds and back-references are not supported)"
            )
        raise ValidationFailed(
            "Not a valid JSON Schema",
            errors=[
                FieldError(
                    loc=["body", *exc.absolute_path], msg=message[:_MSG_MAX], type="json_schema"
                )
            ],
        ) from None
    # Only references inside the document: resolving a URL would make every ingest request
    # depend on (and let an admin make us fetch) someone else's server.
    external = [ref for ref in _walk_refs(schema) if not ref.startswith("#")]
    if external:
        raise ValidationFailed(
            "Only local references (#/…) are allowed",
            errors=[
                FieldError(
                    loc=["body"], msg=f"external $ref: {external[0]}"[:_MSG_MAX], type="json_schema"
                )
            ],
        )
    cycle = safe_schema.reference_cycle(schema)
    if cycle is not None:
        raise ValidationFailed(
            "The schema refers to itself without descending into the value",
            errors=[
                FieldError(
                    loc=["body"],
                    msg=f"reference cycle: {' -> '.join(cycle)}"[:_MSG_MAX],
                    type="json_schema",
                )
            ],
        )
    if safe_schema.uses_unevaluated_with_patterns(schema):
        raise ValidationFailed(
            "unevaluatedProperties cannot be combined with patternProperties",
            errors=[
                FieldError(
                    loc=["body"],
                    msg="unevaluatedProperties with patternProperties is not supported",
                    type="json_schema",
                )
            ],
        )


def _schema_out(row: ActionSchema) -> ActionSchemaOut:
    return ActionSchemaOut(
        action=row.action,
        json_schema=row.json_schema,
        created_at=row.created_at,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


def _sha256(schema: dict[str, Any] | None) -> str | None:
    if schema is None:
        return None
    return hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()


async def put_schema(
    session: AsyncSession, audit: RequestAudit, admin: User, action: str, schema: dict[str, Any]
) -> ActionSchemaOut:
    audit.describe(target_type="action", target_id=action, setting="action_schema")
    check_schema(schema)
    row = await repo.get_schema(session, action)
    previous = row.json_schema if row else None
    now = utcnow()
    try:
        if row is None:
            row = await repo.create_schema(
                session,
                ActionSchema(
                    action=action,
                    json_schema=schema,
                    created_at=now,
                    updated_at=now,
                    updated_by=admin.id,
                ),
            )
        else:
            row = await repo.update_schema(session, action, schema, now, admin.id)
    except repo.ConcurrentChange:
        raise Conflict(f"The schema of '{action}' was changed concurrently; retry") from None
    audit.describe(
        description=f"{'Replaced' if previous else 'Registered'} the metadata schema of '{action}'",
        schema_sha256=_sha256(schema),
        previous_sha256=_sha256(previous),
        **config_change(before=previous, after=schema),
    )
    return _schema_out(row)


async def get_schema(session: AsyncSession, audit: RequestAudit, action: str) -> ActionSchemaOut:
    audit.describe(target_type="action", target_id=action)
    row = await repo.get_schema(session, action)
    if row is None:
        raise NotFound(f"No schema is registered for '{action}'")
    return _schema_out(row)


async def delete_schema(session: AsyncSession, audit: RequestAudit, action: str) -> None:
    audit.describe(target_type="action", target_id=action, setting="action_schema")
    row = await repo.get_schema(session, action)
    if row is None:
        raise NotFound(f"No schema is registered for '{action}'")
    audit.describe(
        description=f"Removed the metadata schema of '{action}'",
        previous_sha256=_sha256(row.json_schema),
        **config_change(before=row.json_schema, after=None),
    )
    try:
        await repo.delete_schema(session, action)
    except repo.ConcurrentDelete:
        raise NotFound(f"No schema is registered for '{action}' (removed concurrently)") from None


ACTION_COUNT_EXACT_UP_TO = 10_000


async def list_actions(session: AsyncSession, audit: RequestAudit) -> ActionList:
    rows = await repo.list_actions(
        session,
        cap=ACTION_COUNT_EXACT_UP_TO + 1,
        # When statistics expect well past the cap, counting could not make it exact: the
        # estimate is the answer (reading 10,000 index entries for each of hundreds of
        # actions was most of the listing's cost).
        skip_count_above=2 * ACTION_COUNT_EXACT_UP_TO,
    )
    items = []
    for row in rows:
        exact = row.counted is not None and row.counted <= ACTION_COUNT_EXACT_UP_TO
        count = row.counted if exact else max(row.counted or 0, row.estimate or 0)
        items.append(
            ActionOut(
                action=row.action,
                module=row.module,
                event_count=int(count or 0),
                event_count_is_estimate=not exact,
                json_schema=row.json_schema,
                schema_updated_at=row.schema_updated_at,
            )
        )
    audit.describe(returned=len(items))
    return ActionList(items=items)


# --- events --------------------------------------------------------------------------------


def _row(event: EventIn, received: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": new_event_id(),
        "occurred_at": event.occurred_at,
        "tenant_id": event.tenant_id,
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "actor_name": event.actor_name,
        "actor_role": event.actor_role,
        "action": event.action,
        "module": event.module,
        "outcome": event.outcome,
        "description": event.description,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "ip": event.ip,
        "ip_bytes": canonical_ip_key(event.ip) if event.ip else None,
        "user_agent": event.user_agent,
        "metadata": {**event.metadata, **received},
        "idempotency_key": event.idempotency_key,
    }


async def _check_metadata(
    session: AsyncSession, batch: Sequence[EventIn], loc: list[str | int], single: bool
) -> list[FieldError]:
    schemas = await repo.get_schemas(session, {e.action for e in batch})
    if not schemas:
        return []
    checks = [
        (_validator(row), event.metadata, [*loc, "metadata"] if single else [*loc, i, "metadata"])
        for i, event in enumerate(batch)
        if (row := schemas.get(event.action)) is not None
    ]

    def check_all() -> list[FieldError]:
        return [error for check in checks for error in _schema_errors(*check)]

    # Off the event loop and time-limited: a costly schema slows its own request only.
    try:
        return await safe_schema.run_bounded(check_all)
    except safe_schema.ValidationTimeout:
        raise ValidationFailed(
            "The metadata could not be checked against the registered schema in time; "
            "nothing was stored",
            errors=[
                FieldError(
                    loc=[*loc, "metadata"] if single else loc,
                    msg="schema check timed out",
                    type="metadata_schema.timeout",
                )
            ],
        ) from None


async def _check_new_actions(
    session: AsyncSession,
    key: ApiKey,
    batch: Sequence[EventIn],
    loc: list[str | int],
    single: bool,
    cap: int,
) -> None:
    """Refuse the request (nothing stored) if its new actions take the posting service past
    `cap` distinct actions. Most requests only use known actions: one indexed read."""
    actions = {e.action for e in batch}
    if not actions - await repo.known_actions(session, key.name, actions):
        return
    have = await repo.add_actions(session, key.name, sorted(actions), cap)
    if have is None:
        return
    known = await repo.known_actions(session, key.name, actions)
    failing = [i for i, e in enumerate(batch) if e.action not in known]
    message = (
        f"'{key.name}' already uses {have} of at most {cap} distinct actions "
        "(AUDIT_MAX_ACTIONS_PER_SOURCE); this action is new"
    )
    raise ValidationFailed(
        f"{len(failing)} event(s) use an action new to '{key.name}', past its limit of {cap} "
        "distinct actions; nothing was stored",
        errors=[
            FieldError(
                loc=[*loc, "action"] if single else [*loc, i, "action"],
                msg=message,
                type="too_many_actions",
            )
            for i in failing[:MAX_REPORTED_ERRORS]
        ],
    )


async def _store(
    session: AsyncSession,
    audit: RequestAudit,
    key: ApiKey,
    batch: Sequence[EventIn],
    *,
    single: bool,
    max_actions: int,
) -> list[events.Ingested]:
    loc: list[str | int] = ["body"] if single else ["body", "events"]
    audit.describe(description=f"Events posted by '{key.name}'", events=len(batch))
    errors = await _check_metadata(session, batch, loc, single)
    if errors:
        failing = sorted({e.loc[2] for e in errors if not single and isinstance(e.loc[2], int)})
        audit.describe(rejected=len(failing) or 1, rejected_indexes=failing[:100])
        noun = "The event" if single else f"{len(failing)} of {len(batch)} events"
        raise ValidationFailed(
            f"{noun} did not match the registered metadata schema; nothing was stored",
            errors=errors[:MAX_REPORTED_ERRORS],
        )
    await _check_new_actions(session, key, batch, loc, single, max_actions)
    # Who delivered it, next to what the service says: the posting service's own address
    # (trusted-proxy aware) and the key it used.
    received = {RECEIVED_FROM: audit.ip, API_KEY_PREFIX: key.prefix}
    stored = await events.ingest_events(session, key.name, [_row(e, received) for e in batch])
    # The stored events are the record of this request; only a failure is recorded on its own.
    audit.record_on_success = False
    return stored


async def ingest_one(
    session: AsyncSession,
    audit: RequestAudit,
    key: ApiKey,
    event: EventIn,
    header_key: str | None,
    *,
    max_actions: int,
) -> EventAccepted:
    if header_key is not None:
        if event.idempotency_key not in (None, header_key):
            raise ValidationFailed(
                "The Idempotency-Key header and the body's idempotency_key differ",
                errors=[
                    FieldError(
                        loc=["header", "Idempotency-Key"],
                        msg="differs from body.idempotency_key",
                        type="value_error",
                    )
                ],
            )
        event = event.model_copy(update={"idempotency_key": header_key})
    (stored,) = await _store(session, audit, key, [event], single=True, max_actions=max_actions)
    return EventAccepted(id=stored.id, event_id=stored.event_id, duplicate=stored.duplicate)


async def ingest_batch(
    session: AsyncSession,
    audit: RequestAudit,
    key: ApiKey,
    batch: Sequence[EventIn],
    *,
    max_actions: int,
) -> BatchAccepted:
    stored = await _store(session, audit, key, batch, single=False, max_actions=max_actions)
    duplicates = sum(s.duplicate for s in stored)
    return BatchAccepted(
        inserted=len(stored) - duplicates,
        duplicates=duplicates,
        results=[
            BatchItemResult(index=i, id=s.id, event_id=s.event_id, duplicate=s.duplicate)
            for i, s in enumerate(stored)
        ],
    )
