"""Retention: the one path that may delete or rewrite events (forgetting that keeps proofs)

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-03

- `integrity_commitment`: the commitments of an event's personal fields, kept when the key
  they were made with is destroyed (anonymisation, erasure) or the clear value is replaced,
  so that `verify` still rebuilds the event's leaf from the row (leaves never change).
- `retention_purge`: each tombstone and whether its deletion finished (a rerun finishes it);
  `retention_erasure`: the data-subject erasures asked for (pseudonym only, no personal data).
- PostgreSQL: `SECURITY DEFINER` functions owned by the migration's role, search_path pinned:
  `audit_retention_purge(tombstone, max_rows)` deletes only rows inside the id ranges named by
  a committed, sequenced `retention.purged` event, archived by a segment it names and under no
  active hold; `audit_retention_anonymize(...)` / `audit_retention_pseudonymize(...)` rewrite
  only ip (to its /24 or /48), ip_bytes, user_agent (to a family) and actor fields (to the
  pseudonym the call's own event names), for rows that event covers; `audit_retention_forget_key`
  destroys a day or subject key once nothing still needs it. The append-only trigger lets
  their DELETE / UPDATE through (a transaction-local setting only they set; the service role
  has no DELETE/UPDATE privilege anyway: docs/grants.sql gives it EXECUTE on them).
- SQLite (no roles): the append-only triggers get a door, a row in `retention_door` that the
  same Python path inserts and removes in its own transaction. Weaker: anyone who can write
  the file can open it (README).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from audit_service.kit.models import UTCDateTime

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REWRITABLE = "'{ip,ip_bytes,user_agent,actor_id,actor_name}'::text[]"

_TRIGGER = f"""
CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The retention functions below (and nothing else that lacks the privilege anyway) set
    -- audit.retention for the statement they run.
    IF TG_OP = 'DELETE' AND current_setting('audit.retention', true) = 'purge' THEN
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' AND current_setting('audit.retention', true) = 'rewrite'
       AND (to_jsonb(NEW) - {_REWRITABLE}) = (to_jsonb(OLD) - {_REWRITABLE}) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_event is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""

# 0004's function, verbatim, for the downgrade.
_TRIGGER_BEFORE = """
CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_event is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""

# True when an active legal hold may cover the row. The keys are the /admin/activity filter
# names; `ip`, `q` and any key not known here are not evaluated: such a hold covers every
# row its other keys match (conservative: the Python side decides precisely, this only
# refuses).
_HELD = """
CREATE OR REPLACE FUNCTION audit_retention_held(e audit_event) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT EXISTS (
        SELECT 1 FROM retention_hold h, LATERAL (SELECT h.filter::jsonb AS f) x
        WHERE h.released_at IS NULL
          AND (f->>'actor' IS NULL OR f->>'actor' = e.actor_id OR f->>'actor' = e.actor_name)
          AND (f->>'actor_id' IS NULL OR f->>'actor_id' = e.actor_id)
          AND (f->'action' IS NULL OR jsonb_typeof(f->'action') = 'null'
               OR (jsonb_typeof(f->'action') = 'array' AND (jsonb_array_length(f->'action') = 0
                   OR EXISTS (SELECT 1 FROM jsonb_array_elements_text(f->'action') a(v)
                              WHERE a.v = e.action
                                 OR (right(a.v, 1) IN ('*', '.')
                                     AND starts_with(e.action, rtrim(a.v, '*'))))))
               OR (jsonb_typeof(f->'action') = 'string' AND (f->>'action' = e.action
                   OR (right(f->>'action', 1) IN ('*', '.')
                       AND starts_with(e.action, rtrim(f->>'action', '*'))))))
          AND (f->>'module' IS NULL OR f->>'module' = e.module)
          AND (f->>'outcome' IS NULL OR f->>'outcome' = e.outcome)
          AND (f->>'source' IS NULL OR f->>'source' = e.source)
          AND (f->>'tenant_id' IS NULL OR f->>'tenant_id' = e.tenant_id)
          AND (f->>'target_type' IS NULL OR f->>'target_type' = e.target_type)
          AND (f->>'target_id' IS NULL OR f->>'target_id' = e.target_id)
          AND (f->>'since' IS NULL OR e.occurred_at >= (f->>'since')::timestamptz)
          AND (f->>'until' IS NULL OR e.occurred_at < (f->>'until')::timestamptz)
    )
$$
"""

_PURGE = """
CREATE OR REPLACE FUNCTION audit_retention_purge(tombstone bigint, max_rows integer)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    t record;
    gone bigint;
BEGIN
    SELECT e.id, e.action, e.source, e.metadata::jsonb AS md, e.txid INTO t
        FROM audit_event e WHERE e.id = tombstone;
    IF NOT FOUND OR t.action <> 'retention.purged' OR t.source <> 'audit-service' THEN
        RAISE EXCEPTION 'event % is not a retention.purged tombstone', tombstone
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF t.txid IS NULL OR pg_xact_status(t.txid) IS DISTINCT FROM 'committed' THEN
        RAISE EXCEPTION 'tombstone % is not committed', tombstone
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM audit_leaf WHERE event_pk = tombstone) THEN
        RAISE EXCEPTION 'tombstone % is not sequenced yet', tombstone
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM set_config('audit.retention', 'purge', true);
    WITH doomed AS (
        SELECT e.id FROM audit_event e
        JOIN audit_leaf l ON l.event_pk = e.id
        JOIN audit_leaf tl ON tl.event_pk = tombstone
        WHERE EXISTS (
                SELECT 1 FROM jsonb_array_elements(t.md->'id_ranges') r
                WHERE e.id BETWEEN (r->>0)::bigint AND (r->>1)::bigint)
          AND e.id <> tombstone
          AND l.position < tl.position
          AND EXISTS (
                SELECT 1 FROM retention_archive a
                WHERE e.id BETWEEN a.first_id AND a.last_id
                  AND a.manifest_hash IN (
                      SELECT jsonb_array_elements_text(t.md->'manifest_hashes')))
          AND NOT audit_retention_held(e)
        ORDER BY e.id
        LIMIT max_rows
    ), deleted AS (
        DELETE FROM audit_event e USING doomed d WHERE e.id = d.id RETURNING e.id
    ), dropped AS (
        DELETE FROM integrity_commitment c USING deleted d WHERE c.event_pk = d.id
    )
    SELECT count(*) INTO gone FROM deleted;
    PERFORM set_config('audit.retention', '', true);
    RETURN gone;
END
$$
"""

# Shared body of the two rewrites: the rows named (ids) must be covered by the call's own
# event (`days` for anonymisation, the one subject for pseudonymisation), under no hold; ip
# becomes its network address (/24, /48) and ip_bytes its key, user_agent a family (a short
# label of letters, digits, spaces and . / _ -), actor fields the event's pseudonym; the
# commitments passed in are kept (the first kept per field wins: they never change).
_REWRITE = """
CREATE OR REPLACE FUNCTION audit_retention_{name}(
    p_event bigint, ids bigint[], user_agents text[],
    c_ip bytea[], c_ua bytea[], c_actor_id bytea[], c_actor_name bytea[])
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    t record;
    e audit_event;
    i integer;
    n bigint := 0;
    new_ip text;
    new_bytes bytea;
    new_ua text;
    new_id text;
    new_name text;
    subject text;
BEGIN
    SELECT x.id, x.action, x.source, x.metadata::jsonb AS md INTO t
        FROM audit_event x WHERE x.id = p_event;
    IF NOT FOUND OR t.action <> '{action}' OR t.source <> 'audit-service' THEN
        RAISE EXCEPTION 'event % is not a {action} event', p_event
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF coalesce(array_length(ids, 1), 0) = 0 THEN
        RETURN 0;
    END IF;
    IF array_length(user_agents, 1) IS DISTINCT FROM array_length(ids, 1)
       OR array_length(c_ip, 1) IS DISTINCT FROM array_length(ids, 1)
       OR array_length(c_ua, 1) IS DISTINCT FROM array_length(ids, 1)
       OR array_length(c_actor_id, 1) IS DISTINCT FROM array_length(ids, 1)
       OR array_length(c_actor_name, 1) IS DISTINCT FROM array_length(ids, 1) THEN
        RAISE EXCEPTION 'one value per row is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR i IN 1 .. array_length(ids, 1) LOOP
        SELECT * INTO e FROM audit_event WHERE id = ids[i];
        IF NOT FOUND THEN
            CONTINUE;
        END IF;
        IF audit_retention_held(e) THEN
            RAISE EXCEPTION 'event % is under a legal hold', e.id
                USING ERRCODE = 'insufficient_privilege';
        END IF;
{check}
        new_ip := e.ip;
        new_bytes := e.ip_bytes;
        IF e.ip IS NOT NULL AND {rewrite_ip} THEN
            IF family(e.ip::inet) = 4 THEN
                new_ip := host(network(set_masklen(e.ip::inet, 24)));
                new_bytes := substring(e.ip_bytes from 1 for 15) || '\\x00'::bytea;
            ELSE
                new_ip := host(network(set_masklen(e.ip::inet, 48)));
                new_bytes := substring(e.ip_bytes from 1 for 6) || '\\x00000000000000000000'::bytea;
            END IF;
        END IF;
        new_ua := e.user_agent;
        IF e.user_agent IS NOT NULL AND {rewrite_ua} THEN
            IF user_agents[i] IS NULL OR user_agents[i] !~ '^[A-Za-z0-9 ./_-]{{1,64}}$' THEN
                RAISE EXCEPTION 'a user agent family must be a short label'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            new_ua := user_agents[i];
        END IF;
{actor}
        INSERT INTO integrity_commitment AS k (event_pk, ip, user_agent, actor_id, actor_name)
            VALUES (e.id, c_ip[i], c_ua[i], c_actor_id[i], c_actor_name[i])
            ON CONFLICT (event_pk) DO UPDATE SET
                ip = coalesce(k.ip, excluded.ip),
                user_agent = coalesce(k.user_agent, excluded.user_agent),
                actor_id = coalesce(k.actor_id, excluded.actor_id),
                actor_name = coalesce(k.actor_name, excluded.actor_name);
        PERFORM set_config('audit.retention', 'rewrite', true);
        UPDATE audit_event SET ip = new_ip, ip_bytes = new_bytes, user_agent = new_ua,
            actor_id = new_id, actor_name = new_name WHERE id = e.id;
        PERFORM set_config('audit.retention', '', true);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$
"""

_ANONYMIZE = _REWRITE.format(
    name="anonymize",
    action="retention.anonymized",
    check="""        IF NOT (t.md->'days')
               ? to_char(e.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') THEN
            RAISE EXCEPTION 'event % is outside the days of event %', e.id, p_event
                USING ERRCODE = 'insufficient_privilege';
        END IF;""",
    rewrite_ip="coalesce((t.md->>'ip')::boolean, false)",
    rewrite_ua="coalesce((t.md->>'user_agent')::boolean, false)",
    actor="""        new_id := e.actor_id;
        new_name := e.actor_name;""",
)

_PSEUDONYMIZE = _REWRITE.format(
    name="pseudonymize",
    action="retention.erased",
    # One subject per call: every row the call rewrites has the first row's actor (type, id),
    # or is already the pseudonym's; the event names only the pseudonym.
    check="""        IF e.actor_type <> 'user' THEN
            RAISE EXCEPTION 'event % is not a user''s', e.id
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF e.actor_id IS DISTINCT FROM t.md->>'pseudonym' THEN
            IF subject IS NULL THEN
                subject := coalesce(e.actor_id, '');
            ELSIF subject <> coalesce(e.actor_id, '') THEN
                RAISE EXCEPTION 'one call rewrites one subject'
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
        END IF;""",
    rewrite_ip="true",
    rewrite_ua="true",
    actor="""        new_id := CASE WHEN e.actor_id IS NULL THEN NULL ELSE t.md->>'pseudonym' END;
        new_name := CASE WHEN e.actor_name IS NULL THEN NULL ELSE t.md->>'pseudonym' END;""",
)

# A day key goes once every row of that day that used it has its commitments kept; a subject
# key once no row of that subject is left in clear.
_FORGET_KEY = """
CREATE OR REPLACE FUNCTION audit_retention_forget_key(p_event bigint, key_kind text, key_name text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    t record;
BEGIN
    SELECT x.action, x.source, x.metadata::jsonb AS md INTO t
        FROM audit_event x WHERE x.id = p_event;
    IF NOT FOUND OR t.source <> 'audit-service' THEN
        RAISE EXCEPTION 'event % is not a retention event', p_event
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF key_kind = 'day' THEN
        IF t.action <> 'retention.anonymized' OR NOT (t.md->'days') ? key_name THEN
            RAISE EXCEPTION 'event % does not name day %', p_event, key_name
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF EXISTS (
            SELECT 1 FROM audit_event e
            LEFT JOIN integrity_commitment c ON c.event_pk = e.id
            WHERE e.recorded_at >= key_name::date::timestamp AT TIME ZONE 'UTC'
              AND e.recorded_at < (key_name::date + 1)::timestamp AT TIME ZONE 'UTC'
              AND ((e.ip IS NOT NULL AND c.ip IS NULL)
                   OR (e.user_agent IS NOT NULL AND c.user_agent IS NULL))) THEN
            RAISE EXCEPTION 'day % still has rows that need its key', key_name
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
    ELSIF key_kind = 'subject' THEN
        IF t.action <> 'retention.erased' THEN
            RAISE EXCEPTION 'event % is not an erasure', p_event
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF EXISTS (
            SELECT 1 FROM audit_event e
            WHERE e.actor_id IS NOT NULL
              AND e.actor_type || ':' || e.actor_id = key_name) THEN
            RETURN false;
        END IF;
    ELSE
        RAISE EXCEPTION 'unknown key kind' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM integrity_key WHERE kind = key_kind AND name = key_name;
    RETURN FOUND;
END
$$
"""

_FUNCTIONS = (
    "audit_retention_purge(bigint, integer)",
    "audit_retention_anonymize(bigint, bigint[], text[], bytea[], bytea[], bytea[], bytea[])",
    "audit_retention_pseudonymize(bigint, bigint[], text[], bytea[], bytea[], bytea[], bytea[])",
    "audit_retention_forget_key(bigint, text, text)",
    "audit_retention_held(audit_event)",
)

_SQLITE_DOOR = "WHEN NOT EXISTS (SELECT 1 FROM retention_door)"


def _tables() -> None:
    op.create_table(
        "integrity_commitment",
        sa.Column("event_pk", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("ip", sa.LargeBinary(32), nullable=True),
        sa.Column("user_agent", sa.LargeBinary(32), nullable=True),
        sa.Column("actor_id", sa.LargeBinary(32), nullable=True),
        sa.Column("actor_name", sa.LargeBinary(32), nullable=True),
        sa.PrimaryKeyConstraint("event_pk", name=op.f("pk_integrity_commitment")),
    )
    op.create_table(
        "retention_purge",
        sa.Column("event_pk", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("policy_id", sa.Integer(), nullable=False),
        sa.Column("archive_id", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("planned", sa.BigInteger(), nullable=False),
        sa.Column("deleted", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("event_pk", name=op.f("pk_retention_purge")),
        sa.UniqueConstraint("archive_id", name=op.f("uq_retention_purge_archive_id")),
    )
    op.create_table(
        "retention_erasure",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.Identity(always=False),
            nullable=False,
        ),
        sa.Column("pseudonym", sa.String(80), nullable=False),
        sa.Column("source", sa.String(100), nullable=True),
        sa.Column("tenant_id", sa.String(100), nullable=True),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("requested_by", sa.String(255), nullable=True),
        sa.Column("event_pk", sa.BigInteger(), nullable=True),
        sa.Column("events", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("key_destroyed", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_erasure")),
    )


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    _tables()
    op.create_table(
        "retention_door",
        sa.Column("opened", sa.Integer(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("opened", name=op.f("pk_retention_door")),
    )
    if postgres:
        op.execute(_TRIGGER)
        for sql in (_HELD, _PURGE, _ANONYMIZE, _PSEUDONYMIZE, _FORGET_KEY):
            op.execute(sql)
        for signature in _FUNCTIONS:
            # PostgreSQL grants EXECUTE to PUBLIC by default; docs/grants.sql grants it back
            # to the service role only.
            op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        return
    for verb in ("UPDATE", "DELETE"):
        op.execute(f"DROP TRIGGER IF EXISTS audit_event_no_{verb.lower()}")
        op.execute(
            f"CREATE TRIGGER audit_event_no_{verb.lower()} BEFORE {verb} ON audit_event "
            f"{_SQLITE_DOOR} "
            f"BEGIN SELECT RAISE(ABORT, 'audit_event is append-only: {verb} refused'); END"
        )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        for signature in _FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS {signature}")
        op.execute(_TRIGGER_BEFORE)
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"DROP TRIGGER IF EXISTS audit_event_no_{verb.lower()}")
            op.execute(
                f"CREATE TRIGGER audit_event_no_{verb.lower()} BEFORE {verb} ON audit_event "
                f"BEGIN SELECT RAISE(ABORT, 'audit_event is append-only: {verb} refused'); END"
            )
    op.drop_table("retention_door")
    op.drop_table("retention_erasure")
    op.drop_table("retention_purge")
    op.drop_table("integrity_commitment")
