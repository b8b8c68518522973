#!/bin/sh
# docker-compose.yml's PostgreSQL, first boot only (/docker-entrypoint-initdb.d): the roles and
# the database of docs/roles.sql, and the login roles' passwords from the environment.
set -eu
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -f "${AUDIT_ROLES_SQL:-/audit/roles.sql}"
# psql quotes the values itself (:'name'), whatever characters the passwords hold.
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres \
    -v app="$AUDIT_APP_DB_PASSWORD" -v verifier="$AUDIT_VERIFIER_DB_PASSWORD" <<'SQL'
ALTER ROLE audit_app PASSWORD :'app';
ALTER ROLE audit_verifier PASSWORD :'verifier';
SQL
