"""Which retention rule an event belongs to: the first, in `position` order, whose match it
satisfies. The pure form (`assign`) for rows in hand; `policy_case` in repository.py is the
same decision as one SQL CASE, so "the events of rule P" is a WHERE clause."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# The keys a rule may match on: action by prefix, the others exactly.
MATCH_KEYS = ("action_prefix", "module", "outcome", "source", "tenant_id")


@dataclass(frozen=True, slots=True)
class Policy:
    id: int
    position: int
    name: str
    match: Mapping[str, str] = field(default_factory=dict)
    archive_after_days: int | None = None
    delete_after_days: int | None = None
    critical: bool = False
    created_at: datetime | None = None
    created_by: str | None = None
    updated_at: datetime | None = None
    updated_by: str | None = None


def matches(match: Mapping[str, str], event: Mapping[str, Any]) -> bool:
    """Whether `event` (a row as a mapping of audit_event columns) satisfies every key of
    `match`; an empty match is the catch-all."""
    for key, wanted in match.items():
        if key == "action_prefix":
            if not str(event.get("action") or "").startswith(wanted):
                return False
        elif event.get(key) != wanted:
            return False
    return True


def assign(policies: Sequence[Policy], event: Mapping[str, Any]) -> Policy | None:
    """The first policy (by position) the event matches; None: no rule covers it (kept
    forever, never archived)."""
    for policy in sorted(policies, key=lambda p: p.position):
        if matches(policy.match, event):
            return policy
    return None
