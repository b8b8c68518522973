"""The rollups equal a GROUP BY over the raw rows, for random and back-dated event streams
ingested in random chunks and rolled up in rounds of random sizes (both dialects)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Harness
from tests.stats.helpers import post_events, raw_group_by, roll_up, stored_rollups

NOW = datetime.now(UTC).replace(microsecond=0)

events = st.fixed_dictionaries(
    {
        # Back-dated up to 400 days, some exactly on a bucket boundary.
        "occurred_at": st.one_of(
            st.integers(0, 400 * 86400).map(lambda s: NOW - timedelta(seconds=s)),
            st.integers(1, 400 * 96).map(
                lambda q: datetime.fromtimestamp((int(NOW.timestamp()) // 900 - q) * 900, UTC)
            ),
        ).map(lambda d: d.isoformat()),
        "action": st.sampled_from(
            ["exam.submitted", "exam.graded", "auth.login", "auth.login_failed", "user.updated"]
        ),
        "outcome": st.sampled_from(["success", "failure", "denied", "error"]),
        "actor_type": st.sampled_from(["user", "service"]),
        "actor_id": st.sampled_from(["u1", "u2", "u3", "svc-9"]),
        "tenant_id": st.sampled_from([None, "t1", "t2"]),
        "ip": st.sampled_from([None, "198.51.100.7", "2001:db8::1"]),
    }
).map(lambda e: {k: v for k, v in e.items() if v is not None})

streams = st.lists(
    st.tuples(
        st.sampled_from(["lms", "hr-portal"]),
        st.lists(events, min_size=1, max_size=25),
        st.integers(1, 40),  # the rollup's batch size after this chunk
    ),
    min_size=1,
    max_size=3,
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stream=streams)
async def test_rollups_equal_a_group_by_over_the_raw_rows(
    h: Harness, stream: list[tuple[str, list[dict[str, Any]], int]]
) -> None:
    # The database is the harness's for all examples: the property holds cumulatively.
    for source, chunk, batch in stream:
        await post_events(h, source, chunk)
        watermark = await roll_up(h, batch=batch)
    assert await stored_rollups(h) == await raw_group_by(h, watermark)
    assert watermark >= 0
