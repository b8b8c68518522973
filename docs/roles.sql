-- Least-privilege PostgreSQL roles for audit-service (see docs/deployment.md).
--
-- Part 1, once, as a superuser (or a role with CREATEROLE and CREATEDB):
--   psql -U postgres -f docs/roles.sql
-- then give both roles passwords (never in a file):  \password audit_owner  \password audit_app
--
-- audit_owner owns the database and its schema: it runs `audit-service migrate`.
-- audit_app is what `audit-service serve` connects as: it reads and writes the service's
-- tables but can never UPDATE, DELETE or TRUNCATE audit_event, nor change the schema.

CREATE ROLE audit_owner LOGIN;
CREATE ROLE audit_app LOGIN;
-- The database owner also owns its `public` schema (PostgreSQL 15+) and may create the
-- trusted pg_trgm extension the migrations add.
CREATE DATABASE audit OWNER audit_owner;
