"""`ecs` (work in progress: the interface is fixed, the mapping lands next)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from audit_service.forwarding.formats.native import COLUMNS as _ALL

COLUMNS = _ALL


def render(event: Mapping[str, Any]) -> dict[str, Any]:
    raise NotImplementedError("ecs: not yet")
