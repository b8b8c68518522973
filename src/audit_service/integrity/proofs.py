"""The proof API's service: the newest checkpoint, the verifier keys, tiles, inclusion proofs
(c2sp.org/tlog-proof@v1) and consistency proofs, all computed from the stored tiles.

Nothing here trusts its own storage blindly: an entry is rebuilt from the event's row and
must hash to the stored leaf, and an inclusion proof must lead to the checkpoint's signed
root before it is served, so a tampered row, leaf or tile is answered with a 409 saying so
instead of a proof that would fail in the verifier's hands.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.audit_log import log
from audit_service.audit_log.context import RequestAudit
from audit_service.core.errors import (
    BadRequest,
    Conflict,
    FieldError,
    NotFound,
    ServiceUnavailable,
    ValidationFailed,
)
from audit_service.integrity import merkle, note
from audit_service.integrity import repository as repo
from audit_service.integrity.entry import build_entry, commitments_with, encode_entry
from audit_service.integrity.merkle import HASH_SIZE
from audit_service.integrity.schemas import (
    ConsistencyProof,
    InclusionProof,
    VerifierKey,
    VerifierKeys,
)
from audit_service.integrity.service import Bind, entry_keys, needed_keys, with_tiles
from audit_service.integrity.tiles import TILE_WIDTH, Tile, parse_tile_path

TLOG_PROOF_V1 = "c2sp.org/tlog-proof@v1"
# The log job signs within about a second of the tree growing.
RETRY_AFTER = {"Retry-After": "1"}


# --- errors ----------------------------------------------------------------------------------


class NoCheckpoint(ServiceUnavailable):
    slug, title = "no-checkpoint", "No checkpoint signed yet"

    def __init__(self) -> None:
        super().__init__(
            "The log has not signed a checkpoint yet (the log job signs one within seconds "
            "of its start)",
            headers=RETRY_AFTER,
        )


class NotSequenced(Conflict):
    slug, title = "event-not-sequenced", "Event not yet sequenced"


class NotCheckpointed(Conflict):
    slug, title = "event-not-checkpointed", "Event not yet in a signed checkpoint"


class EntryMismatch(Conflict):
    slug, title = "entry-mismatch", "Entry does not match its leaf"


class LogInconsistent(Conflict):
    slug, title = "log-inconsistent", "Stored tree does not match its checkpoint"


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        message, errors=[FieldError(loc=["query", field], msg=message, type="value_error")]
    )


# --- the tlog-proof format -------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError(f"{what} is not valid base64") from None
    if _b64(raw) != text:
        raise ValueError(f"{what} is not canonical base64")
    return raw


def format_tlog_proof(
    index: int, hashes: Sequence[bytes], checkpoint: str, extra: bytes | None = None
) -> str:
    """A c2sp.org/tlog-proof@v1 text: header, optional `extra`, `index`, one base64 hash a
    line (leaf's sibling first), an empty line, then the signed checkpoint verbatim."""
    lines = [TLOG_PROOF_V1]
    if extra is not None:
        lines.append(f"extra {_b64(extra)}")
    lines.append(f"index {index}")
    lines.extend(_b64(h) for h in hashes)
    return "\n".join(lines) + "\n\n" + checkpoint


@dataclass(frozen=True)
class TlogProof:
    index: int
    hashes: list[bytes]
    checkpoint: str
    extra: bytes | None = None


_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def parse_tlog_proof(text: str) -> TlogProof:
    """Parse a c2sp.org/tlog-proof@v1 text (ValueError saying what is wrong). The
    checkpoint is returned as text: open it with `note.open_checkpoint` and your keys."""
    head, sep, checkpoint = text.partition("\n\n")
    if not sep or not checkpoint:
        raise ValueError("tlog-proof has no empty line before its checkpoint")
    lines = head.split("\n")
    if lines[0] != TLOG_PROOF_V1:
        raise ValueError(f"tlog-proof must start with {TLOG_PROOF_V1}")
    rest = lines[1:]
    extra = None
    if rest and rest[0].startswith("extra "):
        extra = _unb64(rest.pop(0)[len("extra ") :], "extra data")
    if not rest or not rest[0].startswith("index "):
        raise ValueError("tlog-proof has no index line")
    index_text = rest.pop(0)[len("index ") :]
    if not _DECIMAL.fullmatch(index_text):
        raise ValueError("tlog-proof index must be decimal without leading zeros")
    hashes = []
    for i, line in enumerate(rest):
        h = _unb64(line, f"proof hash {i}")
        if len(h) != HASH_SIZE:
            raise ValueError(f"proof hash {i} is not {HASH_SIZE} bytes")
        hashes.append(h)
    return TlogProof(int(index_text), hashes, checkpoint, extra)


# --- proofs from the tiles -------------------------------------------------------------------


async def inclusion_hashes(bind: Bind, index: int, tree_size: int) -> list[bytes]:
    return await with_tiles(
        bind, tree_size, lambda src: merkle.inclusion_proof(src, index, tree_size)
    )


async def consistency_hashes(bind: Bind, old_size: int, new_size: int) -> list[bytes]:
    return await with_tiles(
        bind, new_size, lambda src: merkle.consistency_proof(src, old_size, new_size)
    )


# --- the API ---------------------------------------------------------------------------------


async def newest_checkpoint(session: AsyncSession, audit: RequestAudit) -> str:
    row = await repo.latest_checkpoint(session)
    if row is None:
        audit.describe(description="Asked for the checkpoint; none is signed yet")
        raise NoCheckpoint()
    audit.describe(
        description=f"Viewed the newest checkpoint ({row.tree_size} events)",
        target_type="checkpoint",
        target_id=str(row.tree_size),
        tree_size=row.tree_size,
    )
    return str(row.note)


async def verifier_keys(
    session: AsyncSession,
    audit: RequestAudit,
    verifiers: Sequence[note.Verifier],
    configured_origin: str,
) -> VerifierKeys:
    origin = await repo.origin(session) or configured_origin or None
    audit.describe(description="Viewed the log's verifier keys", count=len(verifiers))
    return VerifierKeys(
        origin=origin,
        vkeys=[
            VerifierKey(
                vkey=v.vkey,
                name=v.name,
                key_id=f"{v.key_id:08x}",
                type="cosignature/v1" if v.sig_type == note.COSIGNATURE_V1 else "ed25519",
            )
            for v in verifiers
        ],
    )


async def read_tile(session: AsyncSession, audit: RequestAudit, path: str) -> tuple[Tile, bytes]:
    """The exact bytes of `tile/<path>` (full, or a partial width the stored tile reached)."""
    audit.describe(target_type="tile", target_id=f"tile/{path}")
    if path.startswith("entries/"):
        raise NotFound(
            "Entry bundles are not served: level-0 tiles hold leaf hashes; an event's entry "
            "comes with its proof (GET /admin/integrity/events/{event_id}/proof)"
        )
    try:
        tile = parse_tile_path(f"tile/{path}")
    except ValueError as exc:
        raise BadRequest(f"Not a tile path: {exc}") from None
    # A tree of at most 2^63 leaves has no tile beyond this index (and the column is bigint).
    if tile.index >= 2**63 // TILE_WIDTH:
        raise NotFound(f"No tile {tile.path}: the index is beyond any tree this log can hold")
    stored = (await repo.read_tiles(session, [(tile.level, tile.index)])).get(
        (tile.level, tile.index)
    )
    size = tile.width * HASH_SIZE
    # A partial tile's row grows in place: every width up to the stored one existed once
    # and is a prefix of the row; wider ones (and the full tile) do not exist yet.
    if stored is None or len(stored) < size:
        have = 0 if stored is None else len(stored) // HASH_SIZE
        raise NotFound(
            f"No tile {tile.path}"
            + (f" (the log has {have} hashes of tile {tile.level}/{tile.index})" if have else "")
        )
    return tile, stored[:size]


async def prove_event(
    session: AsyncSession, audit: RequestAudit, event_id: uuid.UUID, size: int | None
) -> InclusionProof:
    """Inclusion proof of one event against the newest checkpoint, or (`size`) against the
    first checkpoint whose tree holds at least `size` events."""
    audit.describe(target_type="audit_event", target_id=str(event_id))
    if size is not None:
        audit.describe(size=size)
    found = await repo.event_leaf(session, event_id)
    if found is None:
        raise NotFound(f"No event with event_id {event_id}")
    position, stored_leaf = found.position, found.leaf_hash
    if position is None or stored_leaf is None:
        raise NotSequenced(
            "The event is committed but has no log position yet (the sequencer appends "
            "committed events within a second)",
            headers=RETRY_AFTER,
        )
    checkpoint = await _checkpoint_for(session, position, size)
    tree_size = int(checkpoint.tree_size)
    entry = await _rebuilt_entry(session, found.event, stored_leaf, position)
    hashes = await _proven(session, position, tree_size, stored_leaf, checkpoint.root_hash)
    audit.describe(position=position, tree_size=tree_size)
    return InclusionProof(
        event_id=event_id,
        position=position,
        tree_size=tree_size,
        entry=_b64(entry),
        leaf_hash=_b64(stored_leaf),
        hashes=[_b64(h) for h in hashes],
        checkpoint=checkpoint.note,
        proof=format_tlog_proof(position, hashes, checkpoint.note, extra=entry),
    )


async def _checkpoint_for(session: AsyncSession, position: int, size: int | None) -> Any:
    if size is None:
        row = await repo.latest_checkpoint(session)
        if row is None or row.tree_size <= position:
            raise NotCheckpointed(
                f"The event is at position {position}; the newest signed checkpoint covers "
                f"{0 if row is None else row.tree_size} events",
                headers=RETRY_AFTER,
            )
        return row
    if size <= position:
        raise _invalid(
            "size",
            f"The event is at position {position}: only trees of {position + 1} events or "
            "more hold it",
        )
    tree_size = await log.tree_size(session)
    if size > tree_size:
        raise _invalid("size", f"size {size} is beyond the log ({tree_size} events)")
    row = await repo.checkpoint_at_least(session, size)
    if row is None:
        raise NotCheckpointed(
            f"No checkpoint of {size} events or more is signed yet", headers=RETRY_AFTER
        )
    return row


async def _rebuilt_entry(
    session: AsyncSession, event: dict[str, Any], stored_leaf: bytes, position: int
) -> bytes:
    keys = await repo.read_keys(session, needed_keys([event]))
    kept = (await repo.kept_commitments(session, event["id"], event["id"])).get(event["id"])
    try:
        if kept is None:
            entry = build_entry(event, entry_keys(event, keys))
        else:  # retention replaced a value or destroyed its key: the kept commitment stands
            entry = encode_entry(event, commitments_with(event, entry_keys(event, keys), kept))
    except ValueError as exc:
        # e.g. a commitment key erased for a data subject: the row alone cannot give the
        # entry back any more.
        raise EntryMismatch(
            f"The entry at position {position} cannot be rebuilt from its row: {exc}"
        ) from None
    if not hmac.compare_digest(merkle.leaf_hash(entry), stored_leaf):
        raise EntryMismatch(
            f"The event's row does not hash to the leaf at position {position}: the row or "
            "the leaf was changed after sequencing"
        )
    return entry


async def _proven(
    session: AsyncSession, position: int, tree_size: int, leaf: bytes, root: bytes
) -> list[bytes]:
    try:
        hashes = await inclusion_hashes(session, position, tree_size)
        merkle.verify_inclusion(position, tree_size, leaf, hashes, bytes(root))
    except merkle.ProofError as exc:
        raise LogInconsistent(
            f"The stored tiles do not prove position {position} against the signed root of "
            f"{tree_size}: {exc}"
        ) from None
    return hashes


async def prove_consistency(
    session: AsyncSession, audit: RequestAudit, old: int, new: int | None
) -> ConsistencyProof:
    """Consistency proof from the tree of `old` events to the tree of `new` (default: the
    newest checkpoint's)."""
    audit.describe(old=old, new=new)
    if new is None:
        row = await repo.latest_checkpoint(session)
        if row is None:
            raise NoCheckpoint()
        new = int(row.tree_size)
    else:
        tree_size = await log.tree_size(session)
        if new > tree_size:
            raise _invalid("new", f"new {new} is beyond the log ({tree_size} events)")
        row = await repo.checkpoint_of_size(session, new)
    if old > new:
        raise _invalid("old", f"old ({old}) must not be greater than new ({new})")
    try:
        hashes = await consistency_hashes(session, old, new)
    except merkle.ProofError as exc:
        raise LogInconsistent(f"The stored tiles cannot prove {old} → {new}: {exc}") from None
    audit.describe(new=new, description=f"Consistency proof {old} → {new}")
    return ConsistencyProof(
        old_size=old,
        new_size=new,
        hashes=[_b64(h) for h in hashes],
        checkpoint=None if row is None else row.note,
    )
