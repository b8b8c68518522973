"""bench/query.py's scenarios must mean the same on any day they are run."""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "query.py"


def _scenarios() -> object:
    spec = importlib.util.spec_from_file_location("bench_query", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.scenarios


@pytest.mark.parametrize(
    "latest",
    [
        datetime(2026, 12, 1, 0, 10, tzinfo=UTC),  # the 1st: "since the 1st" was empty
        datetime(2026, 3, 1, 23, 59, tzinfo=UTC),
        datetime(2026, 11, 22, 4, 14, 59, tzinfo=UTC),
    ],
)
def test_month_scenarios_cover_the_last_30_days(latest: datetime) -> None:
    values = defaultdict(lambda: "x", ip="10.1.2.3", latest=latest)
    scenarios = _scenarios()(values)  # type: ignore[operator]
    for name in ("date range: a month", "actor + month", "action + month", "ip CIDR + month"):
        query = parse_qs(scenarios[name])
        since = datetime.fromisoformat(query["since"][0])
        until = datetime.fromisoformat(query["until"][0])
        assert since < latest < until, name  # the newest event is inside the window
        assert (until - since).days == 30, name
