-- Least-privilege PostgreSQL roles for audit-service (see docs/deployment.md).
--
-- Part 1, once, as a superuser (or a role with CREATEROLE and CREATEDB):
--   psql -U postgres -f docs/roles.sql
-- then give the login roles passwords (never in a file):  \password audit_app  \password audit_verifier
--
-- audit_owner owns the database, its schema and every table: migrations run as it. It cannot
-- log in: an administrator's own login that is a member of it migrates with
-- `audit-service migrate --role audit_owner` (SET ROLE), so the server's logs name the person.
-- audit_app is what `audit-service serve` and `worker` connect as: it reads and writes the
-- service's tables but can never UPDATE, DELETE or TRUNCATE the log, nor change the schema.
-- audit_verifier is what `audit-service verify --database-url …` connects as: it reads the
-- log and the commitment keys, and nothing else.

CREATE ROLE audit_owner NOLOGIN;
CREATE ROLE audit_app LOGIN;
CREATE ROLE audit_verifier LOGIN;
-- The database owner also owns its `public` schema (PostgreSQL 15+) and may create the
-- trusted pg_trgm extension the migrations add.
CREATE DATABASE audit OWNER audit_owner;
-- An administrator who runs the migrations (their own login, their own password):
--   CREATE ROLE alice LOGIN IN ROLE audit_owner;
