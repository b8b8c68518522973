"""The contract run takes minutes: run it after everything else, so the quick tests report
first and tests that build their data at import time (e.g. "now + 10 minutes") are not aged
by it."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: "tests/contract/" in item.nodeid)
