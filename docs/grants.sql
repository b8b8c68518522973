-- Part 2 of docs/roles.sql: the runtime role's grants. Run as audit_owner in the service's
-- database after every `audit-service migrate` (it is idempotent, and it covers tables that
-- new migrations add):
--   DATABASE_URL=postgresql+asyncpg://audit_owner@db/audit audit-service migrate
--   psql -U audit_owner -d audit -f docs/grants.sql

-- Nobody but the owner creates objects (PostgreSQL < 15 lets PUBLIC create in `public`).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO audit_app;
DO $$ BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO audit_app', current_database());
END $$;

-- Users, API keys, revoked tokens, action schemas, runtime settings, counters: read and
-- write. No TRUNCATE, REFERENCES or TRIGGER on anything.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO audit_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO audit_app;

-- The record is append-only for the service: insert and read, nothing else. (The table's
-- triggers refuse changes too; without the privilege the door is shut before them.)
REVOKE UPDATE, DELETE, TRUNCATE ON audit_event FROM audit_app;
-- The schema version is the owner's business.
REVOKE INSERT, UPDATE, DELETE ON alembic_version FROM audit_app;
