-- Part 2 of docs/roles.sql: the privileges of the service role and of the read-only verify
-- role. Run as audit_owner in the service's database after every `audit-service migrate`
-- (idempotent; it covers tables that new migrations add). From an administrator's login that
-- is a member of audit_owner:
--   DATABASE_URL=postgresql+asyncpg://alice@db/audit audit-service migrate --role audit_owner
--   PGOPTIONS='-c role=audit_owner' psql -U alice -d audit -v ON_ERROR_STOP=1 -f docs/grants.sql

-- Nobody but the owner creates objects (PostgreSQL < 15 lets PUBLIC create in `public`).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO audit_app, audit_verifier;
DO $$ BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO audit_app, audit_verifier',
                   current_database());
END $$;

-- Users, API keys, revoked tokens, action schemas, runtime settings, counters, job leases,
-- verify runs, the statistics rollups, facets and watermarks (stats_*: mutable bookkeeping,
-- rebuilt from the log, UPDATE by design), report schedules and runs, alerts and the
-- detections' settings, cursor and window (alert, detection_*), forwarding destinations,
-- dead letters and replays (forward_*: mutable delivery bookkeeping), alert channels and the
-- notification outbox (alert_channel, notification_*), retention policies, holds, archive
-- segments and the restore table (retention_*): read and write. No
-- TRUNCATE, REFERENCES or TRIGGER on anything.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO audit_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO audit_app;

-- The log is append-only for the service: insert and read, nothing else. The tables'
-- triggers (migrations 0001, 0004, 0009) refuse these verbs too, for every role, owner
-- included; without the privilege the door is shut before them.
REVOKE UPDATE, DELETE, TRUNCATE ON audit_event, audit_leaf, integrity_checkpoint,
    integrity_log FROM audit_app;
-- A partial tile's row grows in place (UPDATE); the trigger refuses any other change.
REVOKE DELETE, TRUNCATE ON integrity_tile FROM audit_app;
-- Commitment keys are created, never changed. Erasing one (anonymisation) is not the
-- service's everyday business: it gets no DELETE.
REVOKE UPDATE, DELETE, TRUNCATE ON integrity_key FROM audit_app;
-- The sequencer's one row is moved forward, never added or removed.
REVOKE INSERT, DELETE, TRUNCATE ON log_cursor FROM audit_app;
-- The schema version is the owner's business.
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON alembic_version FROM audit_app;

-- Retention (migration 0023): the one path that deletes or rewrites events. The service
-- role has no DELETE / UPDATE on the log; it may only call these SECURITY DEFINER functions
-- (owned by audit_owner, search_path pinned), which delete rows inside a committed,
-- sequenced tombstone's ranges and rewrite only IPs, user agents and actor fields of the
-- rows their own event covers. The commitments they keep are theirs to write.
GRANT EXECUTE ON FUNCTION
    audit_retention_purge(bigint, integer),
    audit_retention_anonymize(bigint, bigint[], text[], bytea[], bytea[], bytea[], bytea[]),
    audit_retention_pseudonymize(bigint, bigint[], text[], bytea[], bytea[], bytea[], bytea[]),
    audit_retention_forget_key(bigint, text, text)
    TO audit_app;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON integrity_commitment, retention_door FROM audit_app;

-- verify reads the events, their log positions, the tiles, the checkpoints, the log's
-- identity, the commitment keys, the sequencer's cursor (what should have a leaf by now) and
-- the commitments retention kept.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM audit_verifier;
GRANT SELECT ON audit_event, audit_leaf, integrity_tile, integrity_checkpoint, integrity_log,
    integrity_key, log_cursor, integrity_commitment TO audit_verifier;
