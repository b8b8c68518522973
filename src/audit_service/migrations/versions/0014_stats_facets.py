"""Statistics facets

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02

`stats_facet`: all-time event counts per value of action, module, source, tenant_id and
actor (GET /admin/activity/facets), kept by the `stats.rollup` job under its own watermark
`facets` (stats/rollup.py).

Backfill: the events the rollup has already counted (log positions up to its watermark) are
counted here, in one pass over audit_event: a GROUP BY of the six columns, materialised
once, then folded per field. The rollup's lock is held meanwhile, so no round commits
between reading the watermark and counting up to it; `facets` starts at that watermark.
Positions counted later by a replica still running the code before this migration are
caught up by the job itself (the `facets` watermark is then behind the rollup's).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from audit_service.core.db import advisory_xact_lock, code_point_string
from audit_service.kit.models import UTCDateTime, utcnow

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_watermark = sa.table(
    "stats_watermark",
    sa.column("name", sa.String()),
    sa.column("position", sa.BigInteger()),
    sa.column("updated_at", UTCDateTime()),
)

# One scan of the counted events; each field folds the small grouped result.
_BACKFILL = """
WITH g AS MATERIALIZED (
    SELECT e.action, e.module, e.source, e.tenant_id, e.actor_type, e.actor_id,
           count(*) AS n, max(e.occurred_at) AS last_seen
    FROM audit_event e JOIN audit_leaf l ON l.event_pk = e.id
    WHERE l.position <= :watermark
    GROUP BY e.action, e.module, e.source, e.tenant_id, e.actor_type, e.actor_id
)
INSERT INTO stats_facet (field, value, actor_type, events, last_seen)
SELECT 'action', action, '', sum(n), max(last_seen) FROM g GROUP BY action
UNION ALL
SELECT 'module', module, '', sum(n), max(last_seen) FROM g GROUP BY module
UNION ALL
SELECT 'source', source, '', sum(n), max(last_seen) FROM g GROUP BY source
UNION ALL
SELECT 'tenant_id', tenant_id, '', sum(n), max(last_seen) FROM g
    WHERE tenant_id IS NOT NULL AND tenant_id <> '' GROUP BY tenant_id
UNION ALL
SELECT 'actor', actor_id, actor_type, sum(n), max(last_seen) FROM g
    WHERE actor_id IS NOT NULL AND actor_id <> '' GROUP BY actor_id, actor_type
"""


def upgrade() -> None:
    op.create_table(
        "stats_facet",
        sa.Column("field", sa.String(20), nullable=False),
        sa.Column("value", code_point_string(200), nullable=False),
        sa.Column("actor_type", sa.String(20), nullable=False),
        sa.Column("events", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_seen", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("field", "value", "actor_type", name=op.f("pk_stats_facet")),
    )
    op.create_index("ix_stats_facet_rank", "stats_facet", ["field", "events", "value"])

    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # The lock every rollup round takes (stats/repository.py lock_watermark); SQLite's
        # writer lock, held by this DDL transaction, already keeps rounds out.
        bind.execute(advisory_xact_lock("stats:rollup"))
    watermark = bind.execute(
        sa.select(_watermark.c.position).where(_watermark.c.name == "rollup")
    ).scalar()
    if watermark is None:
        return  # nothing counted yet: the job counts the facets from the start
    bind.execute(sa.text(_BACKFILL), {"watermark": watermark})
    bind.execute(
        sa.insert(_watermark).values(name="facets", position=watermark, updated_at=utcnow())
    )


def downgrade() -> None:
    op.execute("DELETE FROM stats_watermark WHERE name = 'facets'")
    op.drop_index("ix_stats_facet_rank", table_name="stats_facet")
    op.drop_table("stats_facet")
