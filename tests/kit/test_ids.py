"""Event ids are RFC 9562 version 7: time-ordered (cheap inserts into the unique index),
random in the rest, never repeated."""

from __future__ import annotations

import time
import uuid

from audit_service.kit.ids import new_event_id


def test_version_variant_and_embedded_time() -> None:
    before = time.time_ns() // 1_000_000
    value = new_event_id()
    after = time.time_ns() // 1_000_000
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert before <= value.int >> 80 <= after


def test_ids_sort_by_their_millisecond_and_never_repeat() -> None:
    ids = []
    for _ in range(3):
        ids += [new_event_id() for _ in range(20_000)]
        time.sleep(0.002)
    assert len(set(ids)) == len(ids)
    millis = [i.int >> 80 for i in ids]
    assert millis == sorted(millis)
    # 74 random bits: within one millisecond the ids are not a counter.
    assert len({i.int & ((1 << 62) - 1) for i in ids}) == len(ids)
