"""Statistics: rollups of the log kept by the `stats.rollup` job, and the /admin/stats API."""
