"""Retention: the purge function reads only its tombstone's id span

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-03

`audit_retention_purge` (0023) found its rows with `EXISTS (… jsonb_array_elements(id_ranges)
… e.id BETWEEN …)`, which no index can answer: every call walked `pk_audit_event` from the
first row, calling `audit_retention_held(e)` (SECURITY DEFINER, so never inlined: ≈ 47 µs a
row) on each, and sorted every leaf below the tombstone for a merge join: 5.1 s per call at
900k events (EXPLAIN ANALYZE), minutes at 10M. And per row it unpacked every range from the
jsonb again: a day of the 10M log has ≈ 1,900 ranges (the critical rows interrupt them),
≈ 100 µs a row. Now the ranges are read once into an int8multirange (`@>` is a binary
search); its bounds limit the scan to one `pk_audit_event` range (the segment's day); the
per-row hold check runs only while some hold is active (one InitPlan per statement, the same
snapshot as the rows). Figures: docs/performance.md "Retention (issue 12)".

And a row is deleted only if it was recorded on its segment's day (as the SQLite path
already required): ids follow insertion, not `recorded_at`, so rows of neighbouring days lie
inside a segment's id span. With ranges that spanned them (retention/forget_repository.py
`segment_rows` computed the runs over the day's rows only, fixed with this revision), 0023
deleted them: in the 10M-event benchmark ≈ 60,000 critical rows (kept 2,555 days) of
neighbouring days went with the "Everything else" segments.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HEAD = """
CREATE OR REPLACE FUNCTION audit_retention_purge(tombstone bigint, max_rows integer)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    t record;
    gone bigint;
    spans int8multirange;
    lo bigint;
    hi bigint;
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
"""

_PURGE = (
    _HEAD
    + """    SELECT range_agg(int8range((r->>0)::bigint, (r->>1)::bigint, '[]')) INTO spans
        FROM jsonb_array_elements(t.md->'id_ranges') r;
    IF spans IS NULL OR isempty(spans) THEN
        RETURN 0;
    END IF;
    lo := lower(spans);
    hi := upper(spans) - 1;  -- int8 ranges are canonical [lo, hi + 1)
    PERFORM set_config('audit.retention', 'purge', true);
    WITH doomed AS (
        SELECT e.id FROM audit_event e
        JOIN audit_leaf l ON l.event_pk = e.id
        JOIN audit_leaf tl ON tl.event_pk = tombstone
        WHERE e.id BETWEEN lo AND hi
          AND spans @> e.id
          AND e.id <> tombstone
          AND l.position < tl.position
          AND EXISTS (
                SELECT 1 FROM retention_archive a
                WHERE e.id BETWEEN a.first_id AND a.last_id
                  AND e.recorded_at >= a.recorded_from AND e.recorded_at < a.recorded_until
                  AND a.manifest_hash IN (
                      SELECT jsonb_array_elements_text(t.md->'manifest_hashes')))
          AND (NOT EXISTS (SELECT 1 FROM retention_hold h WHERE h.released_at IS NULL)
               OR NOT audit_retention_held(e))
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
)

# 0023's body, verbatim, for the downgrade.
_PURGE_BEFORE = (
    _HEAD.replace("    spans int8multirange;\n    lo bigint;\n    hi bigint;\n", "")
    + """    PERFORM set_config('audit.retention', 'purge', true);
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
)


def upgrade() -> None:
    # CREATE OR REPLACE keeps the owner and the grants (EXECUTE revoked from PUBLIC in 0023).
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PURGE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PURGE_BEFORE)
