"""Data-subject erasure (GDPR art. 17, where the law allows it: audit logs are often exempt,
so it is an admin decision, and recorded): every event of one user — narrowed to a source
and tenant if asked — gets a stable pseudonym for its actor id and name, its IP reduced to
the /24 (/48) network and its user agent to the family, and the subject's commitment key is
destroyed once no event names the subject in clear any more.

The pseudonym is `subject-` + the first 32 hex digits of HMAC-SHA256(key, "user:" + actor
id), key = AUDIT_PSEUDONYM_KEY (or one derived from the log signing key): the same subject
always gets the same pseudonym, so the history stays readable, and without the key it cannot
be turned back into the id. The `retention.erased` event names only the pseudonym and the
counts, never the id or name.

Proofs: the leaf of a `user` actor's event holds only commitments of its id and name (and
the prefix of its IP), so the commitments are kept before the values change and every leaf,
tile and proof stays as it was. What cannot be erased this way (it is in the leaf in clear):
target ids, descriptions and metadata that name the person, and the actor id of non-user
actors. An active legal hold covering any of the subject's events refuses the erasure (409).
"""

from __future__ import annotations

import hashlib
import hmac

from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.audit_log.context import system_event
from audit_service.audit_log.sink import EventSink
from audit_service.core.config import Settings
from audit_service.core.errors import Conflict
from audit_service.integrity.entry import (
    DOMAIN_ACTOR_ID,
    DOMAIN_ACTOR_NAME,
    DOMAIN_IP,
    DOMAIN_USER_AGENT,
    commit,
    event_salt,
    forget_keys,
)
from audit_service.integrity.jobs import log_signers
from audit_service.integrity.service import DAY, SUBJECT, day_key_name
from audit_service.kit.models import utcnow
from audit_service.retention import forget_repository as repo
from audit_service.retention import repository as policy_repo
from audit_service.retention.privacy_agent import family
from audit_service.retention.privacy_schemas import ErasureIn, ErasureList, ErasureOut

LIST_LIMIT = 500


def pseudonym_key(settings: Settings) -> bytes:
    if settings.pseudonym_key is not None and settings.pseudonym_key.get_secret_value():
        return settings.pseudonym_key.get_secret_value().encode()
    seed = log_signers(settings)[0].private_key.encode()
    return hmac.new(seed, b"audit-service retention pseudonym key", hashlib.sha256).digest()


def pseudonym(key: bytes, actor_id: str) -> str:
    digest = hmac.new(key, f"user:{actor_id}".encode(), hashlib.sha256).hexdigest()
    return f"subject-{digest[:32]}"


async def erase(
    session: AsyncSession, audit: EventSink, settings: Settings, data: ErasureIn
) -> ErasureOut:
    alias = pseudonym(pseudonym_key(settings), data.actor_id)
    audit.describe(target_type="retention_erasure", pseudonym=alias)
    where = repo.subject_clause(data.actor_id, data.source, data.tenant_id)
    held = await policy_repo.held_clause(session)
    total, n_held, unsequenced = await repo.subject_counts(session, where, held)
    if n_held:
        raise Conflict(
            f"an active legal hold covers {n_held} event(s) of this subject: release the "
            "hold first (GET /admin/retention/holds)"
        )
    if unsequenced:
        raise Conflict(
            f"{unsequenced} event(s) of this subject are not in the log yet (sequenced "
            "within seconds): retry shortly"
        )
    now = utcnow()
    erasure_id = await repo.add_erasure(
        session,
        {
            "pseudonym": alias,
            "source": data.source,
            "tenant_id": data.tenant_id,
            "reason": data.reason,
            "requested_by": audit.actor.name,
            "events": 0,
            "key_destroyed": False,
            "created_at": now,
        },
    )
    event_pk = await repo.insert_event(
        session,
        system_event(
            repo.ERASED,
            "retention",
            f"Retention: data subject {alias} pseudonymised in {total} event(s)",
            actor=audit.actor,
            target_type="retention_erasure",
            target_id=str(erasure_id),
            pseudonym=alias,
            source=data.source,
            tenant_id=data.tenant_id,
            count=total,
        ),
    )
    subject_name = f"user:{data.actor_id}"
    subject_key = (await repo.keys_for(session, {(SUBJECT, subject_name)})).get(
        (SUBJECT, subject_name)
    )
    done = 0
    after = 0
    while True:
        rows = await repo.subject_rows(session, where, after, settings.retention_batch)
        if not rows:
            break
        after = rows[-1]["id"]
        days = {(DAY, d) for r in rows if (d := day_key_name(r)) is not None}
        day_keys = await repo.keys_for(session, days)
        batch: list[repo.Rewrite] = []
        for r in rows:
            c_ip = c_ua = c_id = c_name = None
            day = day_key_name(r)
            dk = None if day is None else day_keys.get((DAY, day))
            if dk is not None:
                salt = event_salt(dk, r["event_id"])
                if r["ip"] is not None and r["kept_ip"] is None:
                    c_ip = commit(DOMAIN_IP, salt, r["ip"])
                if r["user_agent"] is not None and r["kept_ua"] is None:
                    c_ua = commit(DOMAIN_USER_AGENT, salt, r["user_agent"])
            if subject_key is not None:
                salt = event_salt(subject_key, r["event_id"])
                if r["actor_id"] is not None:
                    c_id = commit(DOMAIN_ACTOR_ID, salt, r["actor_id"])
                if r["actor_name"] is not None:
                    c_name = commit(DOMAIN_ACTOR_NAME, salt, r["actor_name"])
            ua = r["user_agent"]
            batch.append(
                repo.Rewrite(
                    id=r["id"],
                    user_agent=None if ua is None else family(ua),
                    ip=c_ip,
                    ua=c_ua,
                    actor_id=c_id,
                    actor_name=c_name,
                )
            )
        done += await repo.rewrite(session, "pseudonymize", event_pk, batch)
    destroyed = await repo.forget_key(session, event_pk, SUBJECT, subject_name)
    forget_keys()
    await repo.finish_erasure(session, erasure_id, event_pk, done, destroyed)
    audit.describe(
        target_id=str(erasure_id),
        description=f"Data subject {alias} pseudonymised in {done} event(s)",
        events=done,
        key_destroyed=destroyed,
    )
    return ErasureOut(
        id=erasure_id,
        pseudonym=alias,
        source=data.source,
        tenant_id=data.tenant_id,
        reason=data.reason,
        requested_by=audit.actor.name,
        events=done,
        key_destroyed=destroyed,
        created_at=now,
    )


async def list_erasures(session: AsyncSession, audit: EventSink) -> ErasureList:
    items = [
        ErasureOut(
            id=e.id,
            pseudonym=e.pseudonym,
            source=e.source,
            tenant_id=e.tenant_id,
            reason=e.reason,
            requested_by=e.requested_by,
            events=e.events,
            key_destroyed=e.key_destroyed,
            created_at=e.created_at,
        )
        for e in await repo.list_erasures(session, LIST_LIMIT)
    ]
    audit.describe(count=len(items))
    return ErasureList(items=items)
