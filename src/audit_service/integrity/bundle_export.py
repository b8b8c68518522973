"""Writing signed bundles from the database: entries rebuilt from the rows with the stored
commitment keys, range proofs from the stored tiles, the manifest signed with the log key.

The caller (the activity export) chooses the events: rows in log order, each with its
`position` and stored `leaf_hash`, read inside the same snapshot as the checkpoint. Memory
holds one chunk of `bundle.CHUNK_EVENTS` events at a time, whatever the export's size.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from audit_service.integrity import bundle, note
from audit_service.integrity import repository as repo
from audit_service.integrity.entry import (
    Commitments,
    build_entry,
    commitments_with,
    encode_entry,
    event_salt,
)
from audit_service.integrity.merkle import HashSource
from audit_service.integrity.service import (
    Bind,
    day_key_name,
    entry_keys,
    needed_keys,
    subject_key_name,
    with_tiles,
)


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    size: int
    root_hash: bytes
    note: str


async def newest_checkpoint(bind: Bind) -> SignedCheckpoint | None:
    """The newest signed checkpoint: what a bundle made now proves against."""
    row = await repo.latest_checkpoint(bind)
    if row is None:
        return None
    return SignedCheckpoint(int(row.tree_size), bytes(row.root_hash), str(row.note))


async def kept_for(bind: Bind, events: Sequence[Mapping[str, Any]]) -> dict[int, Commitments]:
    """The commitments retention kept for these events (by id)."""
    if not events:
        return {}
    ids = [int(e["id"]) for e in events]
    return await repo.kept_commitments(bind, min(ids), max(ids))


def chunk_entries(
    events: Sequence[Mapping[str, Any]],
    keys: Mapping[tuple[str, str], bytes],
    readable: bool,
    kept: Mapping[int, Commitments] | None = None,
) -> tuple[list[bundle.BundleEntry], list[bundle.ReadableRow] | None]:
    """Entries (and readable rows with their salts) of one chunk: CPU work, off the loop.
    `kept`: the commitments retention kept (kept_for); such a row's entry is built with them
    and its readable row carries them."""
    entries, rows = [], []
    for event in events:
        ek = entry_keys(event, keys)
        k = None if kept is None else kept.get(int(event["id"]))
        entry = (
            build_entry(event, ek)
            if k is None
            else encode_entry(event, commitments_with(event, ek, k))
        )
        entries.append(bundle.BundleEntry(event["position"], bytes(event["leaf_hash"]), entry))
        if readable:
            day = ek.day_key if day_key_name(event) is not None else None
            subject = ek.subject_key if subject_key_name(event) is not None else None
            rows.append(
                bundle.ReadableRow(
                    event["position"],
                    bundle.readable_event(event),
                    None if day is None else event_salt(day, event["event_id"]),
                    None if subject is None else event_salt(subject, event["event_id"]),
                    k,
                )
            )
    return entries, rows if readable else None


async def bundle_chunks(
    bind: Bind,
    checkpoint: SignedCheckpoint,
    batches: AsyncIterator[Sequence[Mapping[str, Any]]],
    signer: note.Signer,
    info: Mapping[str, Any],
    *,
    exported_at: datetime,
    readable: bool = True,
) -> AsyncIterator[bytes]:
    """The bundle's bytes: `batches` are the chosen events in log order (at most
    `bundle.CHUNK_EVENTS` each, positions below the checkpoint's size); `info` goes into the
    manifest as given (filters, who, when, counts)."""
    size = checkpoint.size
    writer = bundle.BundleWriter(checkpoint.note, mtime=int(exported_at.timestamp()))
    yield writer.start()
    after = 0
    async for events in batches:
        if not events:
            continue
        keys = await repo.read_keys(bind, needed_keys(events))
        kept = await kept_for(bind, events)
        entries, rows = await asyncio.to_thread(chunk_entries, events, keys, readable, kept)
        runs = bundle.runs_of([e.position for e in entries])

        def prove(src: HashSource, runs: list[tuple[int, int]] = runs, start: int = after) -> Any:
            return bundle.prove_runs(src, size, runs, after=start)

        proofs = await with_tiles(bind, size, prove)
        after = runs[-1][1]
        yield writer.chunk(entries, proofs, rows)
    end = await with_tiles(bind, size, lambda src: bundle.prove_end(src, size, after))
    yield writer.finish(end, info, signer)
