"""Verify the tamper-evident log: recompute it from the rows and hold it against what was
signed. The engine behind `audit-service verify`, `POST /admin/integrity/verify` and the
daily `integrity.verify` job.

What the database holds, and what each copy is checked against:

- the rows (`audit_event`): each row's v1 entry is recomputed with the stored commitment
  keys; its leaf hash must be the stored leaf (`audit_leaf`) at its position;
- the leaves: the tree over them must have, at each signed checkpoint's size, the signed root;
- the tiles (`integrity_tile`): a second copy of the leaf hashes (level 0) and of the tree's
  inner hashes (levels 1+); each must be what the leaves give;
- the checkpoints: each must be signed (Ed25519 note signature and timestamped cosignature)
  by a trusted key, agree with its own columns, and be consistent with the others and with
  a checkpoint pinned from an earlier run (`--state`).

When copies disagree the signed roots say which one is right. Three trees are built: S over
the stored leaves, L over the leaves recomputed from the rows (S where a row is gone) and T
over the level-0 tiles (S where a tile is missing). The largest valid checkpoint whose root S
(or L, or T) reproduces proves that tree up to that size. So a row that no longer gives its
leaf while S is proven was *modified*; a leaf that no longer matches its row while only L is
proven was *forged*; a tile that differs from a proven leaf was forged; leaves that differ from
proven tiles were moved (shifted: *inserted* or *deleted*; swapped: *reordered*). Positions
past the newest checkpoint are still cross-checked, but nothing says which side is right.

Independently of the trees: a leaf whose row is gone is *deleted*; a row the sequencer has
passed (at or below its cursor) without a leaf was *inserted*; a row whose commit order
(txid, id) does not fit between its neighbours' was moved or forged (positions follow that
order strictly); and a row whose entry matches another position's leaf (also with its id
exchanged) was *reordered* (or its id changed).

Speed: the work is one entry per event (~20 µs of Python), so positions are cut into tasks of
2^16 (one level-1 tile) that `jobs` processes take in turn, each streaming its range by
position in chunks; the coordinator keeps only per-tile hashes and the anomalies. A task's
result is small and self-contained (JSON-able), which makes runs resumable: the API's runs
persist each finished task and a restarted run skips them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import hashlib
import itertools
import multiprocessing
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from audit_service.audit_log import log
from audit_service.core.db import create_engine, tune_for_scan
from audit_service.integrity import note
from audit_service.integrity import repository as repo
from audit_service.integrity.entry import (
    Commitments,
    EntryKeys,
    commitments_with,
    encode_entry,
    entry_leaf_hash,
    ip_prefix,
)
from audit_service.integrity.merkle import EMPTY_ROOT, HASH_SIZE, MemoryTree, leaf_hash
from audit_service.integrity.service import DAY, SUBJECT, day_key_name, subject_key_name
from audit_service.integrity.tiles import TILE_HEIGHT, TILE_WIDTH, Tile
from audit_service.kit.net import canonical_ip_key, ip_key, parse_ip

TASK_LEVEL = 16
TASK_SPAN = 1 << TASK_LEVEL  # positions per task: one level-1 tile's worth
CHUNK = 8192  # positions per query
# Anomalies of one kind a task keeps in full (it counts the rest): enough for any targeted
# tampering, bounded when a whole range is gone (TRUNCATE) or shifted.
TASK_KEEP = 4096
CROSS_MATCH_LIMIT = 256  # rows tried against other positions' leaves (quadratic)
INSERTED_LIMIT = 100_000
KEY_CACHE = 200_000
ZERO = bytes(HASH_SIZE)

# Problem kinds.
MODIFIED = "modified"
DELETED = "deleted"
INSERTED = "inserted"
REORDERED = "reordered"
OUT_OF_ORDER = "out_of_order"
FORGED_LEAF = "forged_leaf"
FORGED_TILE = "forged_tile"
MISSING_LEAVES = "missing_leaves"
DROPPED_TAIL = "dropped_tail"
FORGED_CHECKPOINT = "forged_checkpoint"
WRONG_KEY = "wrong_key"
MISSING_COSIGNATURE = "missing_cosignature"
ROOT_MISMATCH = "root_mismatch"
INCONSISTENT = "inconsistent_checkpoints"
ROLLBACK = "rollback"
REWRITTEN = "rewritten_history"
MISSING_CURSOR = "missing_cursor"
KINDS = (
    MODIFIED,
    DELETED,
    INSERTED,
    REORDERED,
    OUT_OF_ORDER,
    FORGED_LEAF,
    FORGED_TILE,
    MISSING_LEAVES,
    DROPPED_TAIL,
    FORGED_CHECKPOINT,
    WRONG_KEY,
    MISSING_COSIGNATURE,
    ROOT_MISMATCH,
    INCONSISTENT,
    ROLLBACK,
    REWRITTEN,
    MISSING_CURSOR,
)


class CannotVerify(Exception):
    """Verification could not be carried out (not: "found tampering")."""


class SinceBeyondTree(CannotVerify):
    """`since` names a position the tree does not have (the caller's mistake)."""


@dataclass(frozen=True)
class Problem:
    """One finding. `position`..`last_position` is the range of log positions it concerns;
    `event_pk` is audit_event.id and `event_id` the event's UUID, where known."""

    kind: str
    detail: str
    position: int | None = None
    last_position: int | None = None
    event_pk: int | None = None
    event_id: str | None = None
    checkpoint_id: int | None = None
    tree_size: int | None = None
    tile: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Problem:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def line(self) -> str:
        where = []
        if self.position is not None:
            span = self.position if self.last_position in (None, self.position) else None
            where.append(
                f"position {span}"
                if span is not None
                else f"positions {self.position}..{self.last_position}"
            )
        if self.event_id is not None:
            where.append(f"event {self.event_id}")
        if self.event_pk is not None:
            where.append(f"id {self.event_pk}")
        if self.checkpoint_id is not None:
            where.append(f"checkpoint #{self.checkpoint_id}")
        if self.tree_size is not None:
            where.append(f"tree size {self.tree_size}")
        if self.tile is not None:
            where.append(self.tile)
        return f"{self.kind:<24} {', '.join(where)}: {self.detail}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


# --- checkpoints -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedCheckpoint:
    id: int
    size: int
    root: bytes
    note: str


def check_signatures(
    rows: Iterable[Any], verifiers: Sequence[note.Verifier], origin: str | None
) -> tuple[list[SignedCheckpoint], list[Problem]]:
    """The checkpoints that are validly signed (in id order) and a problem for each other.

    Valid: a note signature by a trusted 0x01 key, every trusted key's signature on it good,
    a good cosignature by a trusted 0x04 key when any is trusted, the log's origin, and the
    row's own size and root columns equal to the signed ones."""
    cosigners = [v for v in verifiers if v.sig_type == note.COSIGNATURE_V1]
    valid: list[SignedCheckpoint] = []
    problems: list[Problem] = []
    for row in rows:
        cid, size = int(row.id), int(row.tree_size)
        try:
            checkpoint, _ = note.open_checkpoint(row.note, verifiers, origin=origin)
        except note.UnverifiedNote:
            problems.append(
                Problem(
                    WRONG_KEY,
                    "not signed by any trusted key (re-signed?)",
                    checkpoint_id=cid,
                    tree_size=size,
                )
            )
            continue
        except note.InvalidNoteSignature as exc:
            problems.append(
                Problem(
                    FORGED_CHECKPOINT,
                    f"signature does not verify: {exc}",
                    checkpoint_id=cid,
                    tree_size=size,
                )
            )
            continue
        except note.NoteError as exc:
            problems.append(
                Problem(
                    FORGED_CHECKPOINT,
                    f"malformed signed note: {exc}",
                    checkpoint_id=cid,
                    tree_size=size,
                )
            )
            continue
        if cosigners:
            try:
                cosigned = note.find_cosignatures(row.note, cosigners)
            except note.NoteError as exc:
                problems.append(
                    Problem(
                        FORGED_CHECKPOINT, f"cosignature: {exc}", checkpoint_id=cid, tree_size=size
                    )
                )
                continue
            if not cosigned:
                problems.append(
                    Problem(
                        MISSING_COSIGNATURE,
                        "no cosignature by a trusted key",
                        checkpoint_id=cid,
                        tree_size=size,
                    )
                )
                continue
        if checkpoint.size != row.tree_size or checkpoint.root_hash != bytes(row.root_hash):
            problems.append(
                Problem(
                    FORGED_CHECKPOINT,
                    f"its columns (size {row.tree_size}) disagree with the signed note "
                    f"(size {checkpoint.size}, root {_b64(checkpoint.root_hash)})",
                    checkpoint_id=cid,
                    tree_size=size,
                )
            )
            continue
        valid.append(SignedCheckpoint(int(row.id), checkpoint.size, checkpoint.root_hash, row.note))
    return valid, problems


def open_pinned(text: str, verifiers: Sequence[note.Verifier]) -> note.Checkpoint:
    """The checkpoint of a `--state` file (a signed note); CannotVerify if it is not one
    signed by a trusted key."""
    try:
        checkpoint, _ = note.open_checkpoint(text, verifiers)
    except note.NoteError as exc:
        raise CannotVerify(f"the pinned checkpoint is not valid: {exc}") from None
    return checkpoint


# --- tasks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """Positions [start, end) of a tree of `tree_size` leaves; `recompute=False` checks the
    leaves and tiles only (below --since). `sizes`: the sizes whose root needs this task's
    partial tile (tree sizes n with start < n <= end that are not a multiple of 256)."""

    index: int
    start: int
    end: int
    tree_size: int
    recompute: bool
    sizes: tuple[int, ...] = ()
    # --since inside this task: rows below it are not recomputed (a task spans 2^16
    # positions, so without this a small log would be recomputed whole whatever --since said).
    since: int = 0


# (position, event_pk, event_id, stored leaf, recomputed leaf or None, why it failed)
Mismatch = tuple[int, int, str, bytes, bytes | None, str]


@dataclass
class TaskResult:
    index: int
    start: int
    end: int
    checked: int = 0  # rows whose entry was recomputed
    # Roots of the complete level-0 tiles, per tree; None: same as S in this task.
    tiles_s: list[bytes] = field(default_factory=list)
    tiles_l: list[bytes] | None = None
    tiles_t: list[bytes] | None = None
    # n -> fold of the complete subtrees of [256 * (n // 256), n), per tree (S, L, T).
    folds: dict[int, tuple[bytes, bytes, bytes]] = field(default_factory=dict)
    mismatches: list[Mismatch] = field(default_factory=list)
    mismatch_count: int = 0
    deleted: list[tuple[int, int, bytes]] = field(default_factory=list)
    deleted_count: int = 0
    # Rows gone inside a retention tombstone's range (allowed: their leaves stay).
    purged_count: int = 0
    # (position, stored leaf, tile hash, event_pk or -1, event_id or "")
    tile_diffs: list[tuple[int, bytes, bytes, int, str]] = field(default_factory=list)
    tile_diff_count: int = 0
    missing: list[tuple[int, int]] = field(default_factory=list)  # leafless [start, end)
    tile_problems: list[Problem] = field(default_factory=list)
    out_of_order: list[tuple[int, int, str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        def hashes(xs: list[bytes] | None) -> str | None:
            return None if xs is None else _b64(b"".join(xs))

        return {
            "index": self.index,
            "start": self.start,
            "end": self.end,
            "checked": self.checked,
            "tiles_s": hashes(self.tiles_s),
            "tiles_l": hashes(self.tiles_l),
            "tiles_t": hashes(self.tiles_t),
            "folds": {str(n): [_b64(h) for h in f] for n, f in self.folds.items()},
            "mismatches": [
                [p, pk, eid, _b64(s), None if r is None else _b64(r), why]
                for p, pk, eid, s, r, why in self.mismatches
            ],
            "mismatch_count": self.mismatch_count,
            "deleted": [[p, pk, _b64(s)] for p, pk, s in self.deleted],
            "deleted_count": self.deleted_count,
            "purged_count": self.purged_count,
            "tile_diffs": [[p, _b64(s), _b64(t), pk, eid] for p, s, t, pk, eid in self.tile_diffs],
            "tile_diff_count": self.tile_diff_count,
            "missing": [list(m) for m in self.missing],
            "tile_problems": [p.to_json() for p in self.tile_problems],
            "out_of_order": [list(o) for o in self.out_of_order],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TaskResult:
        def hashes(text: str | None) -> list[bytes] | None:
            if text is None:
                return None
            raw = _unb64(text)
            return [raw[i : i + HASH_SIZE] for i in range(0, len(raw), HASH_SIZE)]

        folds: dict[int, tuple[bytes, bytes, bytes]] = {}
        for n, f in d["folds"].items():
            a, b, c = (_unb64(h) for h in f)
            folds[int(n)] = (a, b, c)
        return cls(
            index=d["index"],
            start=d["start"],
            end=d["end"],
            checked=d["checked"],
            tiles_s=hashes(d["tiles_s"]) or [],
            tiles_l=hashes(d["tiles_l"]),
            tiles_t=hashes(d["tiles_t"]),
            folds=folds,
            mismatches=[
                (p, pk, eid, _unb64(s), None if r is None else _unb64(r), why)
                for p, pk, eid, s, r, why in d["mismatches"]
            ],
            mismatch_count=d["mismatch_count"],
            deleted=[(p, pk, _unb64(s)) for p, pk, s in d["deleted"]],
            deleted_count=d["deleted_count"],
            purged_count=d.get("purged_count", 0),
            tile_diffs=[(p, _unb64(s), _unb64(t), pk, eid) for p, s, t, pk, eid in d["tile_diffs"]],
            tile_diff_count=d["tile_diff_count"],
            missing=[(a, b) for a, b in d["missing"]],
            tile_problems=[Problem.from_json(p) for p in d["tile_problems"]],
            out_of_order=[(p, pk, eid, why) for p, pk, eid, why in d["out_of_order"]],
        )


def _node(left: bytes, right: bytes, _sha: Any = hashlib.sha256) -> bytes:
    digest: bytes = _sha(b"\x01" + left + right).digest()
    return digest


def _subtree(hashes: Sequence[bytes]) -> bytes:
    """MTH of a power-of-two run of hashes."""
    layer = list(hashes)
    while len(layer) > 1:
        layer = [_node(layer[i], layer[i + 1]) for i in range(0, len(layer), 2)]
    return layer[0]


def _fold(pieces: Sequence[bytes]) -> bytes:
    """MTH from complete-subtree pieces, largest first (they nest to the right)."""
    result = pieces[-1]
    for h in reversed(pieces[:-1]):
        result = _node(h, result)
    return result


def _partial_fold(hashes: Sequence[bytes], offset: int, n: int) -> bytes:
    """Fold of the complete subtrees of [256 * (n // 256), n); `hashes[i]` is position
    offset + i."""
    s = n - n % TILE_WIDTH
    pieces = []
    while s < n:
        level = (n - s).bit_length() - 1
        pieces.append(_subtree(hashes[s - offset : s - offset + (1 << level)]))
        s += 1 << level
    return _fold(pieces)


def _tile_path(level: int, index: int, width: int = TILE_WIDTH) -> str:
    return Tile(level, index, width).path


def _culprits(keys: Sequence[tuple[int, tuple[int, int]]]) -> dict[int, str]:
    """Positions whose order key does not fit: for each consecutive pair (i, j) with
    key(j) <= key(i), j is the culprit when i fits after its own predecessor's... precisely:
    i is out of place (a spike) when the pair's predecessor h has key(h) < key(j), else j is
    (a dip); at the very start, the successor of j decides."""
    found: dict[int, str] = {}
    for x in range(1, len(keys)):
        (pi, ki), (pj, kj) = keys[x - 1], keys[x]
        if kj > ki:
            continue
        if x >= 2:
            spike = keys[x - 2][1] < kj
        else:
            # At the very start there is no predecessor: when the successor fits after
            # either row, order alone cannot say which one moved; the ids break the tie
            # (a forged row's id is a fresh, high one, out of line with its neighbours'),
            # else a row forged at position 0 was blamed on the innocent row at 1.
            nxt = keys[x + 1][1] if x + 1 < len(keys) else None
            spike = nxt is not None and nxt > kj and (nxt <= ki or ki[1] > nxt[1] > kj[1])
        culprit, other = (pi, pj) if spike else (pj, pi)
        found.setdefault(
            culprit,
            f"its commit order (txid, id) does not fit between its neighbours' "
            f"(next to position {other}): the row was moved or forged",
        )
    return found


class _KeyCache:
    """Commitment keys by (kind, name), read from the database as chunks need them."""

    def __init__(self) -> None:
        self.keys: dict[tuple[str, str], bytes] = {}
        self.entry_keys: dict[tuple[str | None, str | None], EntryKeys] = {}

    async def load(self, conn: AsyncConnection, names: set[tuple[str, str]]) -> None:
        missing = names - self.keys.keys()
        if not missing:
            return
        if len(self.keys) > KEY_CACHE:
            self.keys.clear()
            self.entry_keys.clear()
        found = await repo.read_keys(conn, missing)
        self.keys.update(found)
        for name in missing - found.keys():
            self.keys[name] = b""  # known to be missing: the entry will say which key

    def get(self, day: str | None, subject: str | None) -> EntryKeys:
        pair = (day, subject)
        got = self.entry_keys.get(pair)
        if got is None:
            dk = None if day is None else self.keys.get((DAY, day)) or None
            sk = None if subject is None else self.keys.get((SUBJECT, subject)) or None
            got = self.entry_keys[pair] = EntryKeys(day_key=dk, subject_key=sk)
        return got


def _ip_bytes_ok(event: Mapping[str, Any]) -> bool:
    ip, stored = event.get("ip"), event.get("ip_bytes")
    if ip is None:
        return stored is None
    if stored is None:
        return False
    stored = bytes(stored)
    if canonical_ip_key(ip) == stored:
        return True
    try:
        return ip_key(parse_ip(ip)) == stored
    except ValueError:
        return False


def _kept_leaf(ev: Mapping[str, Any], keys: EntryKeys, kept: Commitments) -> bytes:
    """The leaf of a row whose personal fields are (partly) committed by kept commitments."""
    return leaf_hash(encode_entry(ev, commitments_with(ev, keys, kept)))


def _kept_why(ev: Mapping[str, Any], kept: Commitments) -> str:
    """What a row rewritten by retention must look like beyond its leaf: an anonymised IP is
    its own network address (the leaf holds only the prefix, so any other address of the
    network would match it)."""
    ip = ev.get("ip")
    if kept.ip is None or ip is None:
        return ""
    prefix = ip_prefix(ip)
    if prefix.split("/", 1)[0] != str(parse_ip(ip)):
        return f"its anonymised ip is not the network address of {prefix}"
    return ""


async def run_task(conn: AsyncConnection, task: Task, keys: _KeyCache) -> TaskResult:
    """Check positions [task.start, task.end): leaves against rows and level-0 tiles."""
    start, end = task.start, task.end
    width = end - start
    out = TaskResult(task.index, start, end)
    first_tile, stop_tile = start // TILE_WIDTH, -(-end // TILE_WIDTH)
    stored_tiles = await repo.tiles_at_level(conn, 0, first_tile, stop_tile)
    t_hashes: list[bytes | None] = [None] * width
    for b in range(first_tile, stop_tile):
        lo, hi = b * TILE_WIDTH, min(b * TILE_WIDTH + TILE_WIDTH, end)
        data = stored_tiles.get(b)
        if data is None:
            out.tile_problems.append(
                Problem(
                    FORGED_TILE, "the tile is missing", lo, hi - 1, tile=_tile_path(0, b, hi - lo)
                )
            )
            continue
        have = min(len(data) // HASH_SIZE, hi - lo)
        if have < hi - lo:
            out.tile_problems.append(
                Problem(
                    FORGED_TILE,
                    f"the tile holds {have} hashes, the tree needs {hi - lo}",
                    lo,
                    hi - 1,
                    tile=_tile_path(0, b, hi - lo),
                )
            )
        for j in range(have):
            t_hashes[lo - start + j] = data[j * HASH_SIZE : (j + 1) * HASH_SIZE]

    s_hashes: list[bytes] = [ZERO] * width
    l_hashes: list[bytes] | None = None  # copied from S at the first divergence
    order: list[tuple[int, tuple[int, int]]] = []
    ids: dict[int, tuple[int, str]] = {}  # position -> (event_pk, event_id), order context
    first = max(start, task.since) if task.recompute else end  # first position recomputed
    if task.recompute and first > 0:
        for pos, pk, _, ev, okey in await log.stored_range(conn, max(0, first - 2), first):
            if ev is not None and okey is not None:
                order.append((pos, okey))
                ids[pos] = (pk, str(ev["event_id"]))
    # Retention: rows allowed to be gone (inside a tombstone's range), and commitments kept
    # for rows whose key was destroyed or whose clear value was replaced.
    tombs = await repo.tombstones(conn) if task.recompute else []
    kept: dict[int, Commitments] = {}
    expect = start
    gc_was = gc.isenabled()
    pending: asyncio.Task[list[log.StoredLeaf]] | None = None

    def fetch(a: int) -> asyncio.Task[list[log.StoredLeaf]]:
        return asyncio.ensure_future(
            log.stored_range(conn, a, min(a + CHUNK, end), events=min(a + CHUNK, end) > first)
        )

    try:
        # Millions of short-lived, acyclic objects: the cyclic GC would only rescan the ones
        # still alive (a chunk's rows) over and over; reference counting frees them all.
        gc.disable()
        pending = fetch(start)
        for chunk_start in range(start, end, CHUNK):
            assert pending is not None
            rows = await pending
            if min(chunk_start + CHUNK, end) > first:
                names: set[tuple[str, str]] = set()
                pairs: list[tuple[str | None, str | None]] = []
                for row in rows:
                    ev = row[3]
                    if ev is None:
                        pairs.append((None, None))
                        continue
                    day, subject = day_key_name(ev), subject_key_name(ev)
                    if day is not None:
                        names.add((DAY, day))
                    if subject is not None:
                        names.add((SUBJECT, subject))
                    pairs.append((day, subject))
                await keys.load(conn, names)
                pks = [row[1] for row in rows if row[3] is not None]
                kept = await repo.kept_commitments(conn, min(pks), max(pks)) if pks else {}
            # The next chunk's query runs on the server while this one is hashed (the
            # connection is free: nothing below awaits until the next chunk is taken).
            pending = fetch(chunk_start + CHUNK) if chunk_start + CHUNK < end else None
            for _ in range(3):
                await asyncio.sleep(0)
            for x, (pos, pk, leaf, ev, okey) in enumerate(rows):
                if pos != expect:
                    out.missing.append((expect, pos))
                expect = pos + 1
                i = pos - start
                s_hashes[i] = leaf
                if pos < first:  # below --since: the leaf feeds the trees, the row is not read
                    if l_hashes is not None:
                        l_hashes[i] = leaf
                    continue
                if ev is None:
                    if l_hashes is not None:
                        l_hashes[i] = leaf
                    if task.recompute and any(t.covers(pk, pos) for t in tombs):
                        out.purged_count += 1
                    elif task.recompute:
                        out.deleted_count += 1
                        if len(out.deleted) < TASK_KEEP:
                            out.deleted.append((pos, pk, leaf))
                    continue
                if okey is not None:
                    order.append((pos, okey))
                out.checked += 1
                why = ""
                try:
                    k = kept.get(pk)
                    if k is None:
                        h: bytes | None = entry_leaf_hash(ev, keys.get(*pairs[x]))
                    else:
                        h = _kept_leaf(ev, keys.get(*pairs[x]), k)
                        why = _kept_why(ev, k)
                        if why:
                            h = None
                except ValueError as exc:
                    h, why = None, f"its entry cannot be recomputed: {exc}"
                if h == leaf and not _ip_bytes_ok(ev):
                    h, why = None, "ip_bytes does not encode its ip"
                if h != leaf:
                    event_id = str(ev["event_id"])
                    ids[pos] = (pk, event_id)
                    out.mismatch_count += 1
                    if len(out.mismatches) < TASK_KEEP:
                        out.mismatches.append((pos, pk, event_id, leaf, h, why))
                    if h is not None and l_hashes is None:
                        l_hashes = list(s_hashes)
                if l_hashes is not None:
                    l_hashes[i] = leaf if h is None else h
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        if gc_was:
            gc.enable()
    if expect < end:
        out.missing.append((expect, end))
    for a, b in out.missing:
        for p in range(a, b):  # no leaf: the tile's copy (if any) stands in for it in S
            t = t_hashes[p - start]
            s_hashes[p - start] = t if t is not None else ZERO
            if l_hashes is not None:
                l_hashes[p - start] = s_hashes[p - start]

    # Level-0 tiles against the leaves.
    t_diverged = False
    for b in range(first_tile, stop_tile):
        lo, hi = b * TILE_WIDTH - start, min(b * TILE_WIDTH + TILE_WIDTH, end) - start
        data = stored_tiles.get(b)
        if data is not None and data[: (hi - lo) * HASH_SIZE] == b"".join(s_hashes[lo:hi]):
            continue
        for i in range(lo, hi):
            t = t_hashes[i]
            if t is None or t == s_hashes[i]:
                continue
            t_diverged = True
            out.tile_diff_count += 1
            if len(out.tile_diffs) < TASK_KEEP:
                pk, eid = ids.get(start + i, (-1, ""))
                out.tile_diffs.append((start + i, s_hashes[i], t, pk, eid))
    t_full: list[bytes] | None = None
    if t_diverged:
        t_full = [t if t is not None else s for t, s in zip(t_hashes, s_hashes, strict=True)]
    complete = width // TILE_WIDTH
    out.tiles_s = [
        _subtree(s_hashes[k * TILE_WIDTH : (k + 1) * TILE_WIDTH]) for k in range(complete)
    ]
    if l_hashes is not None:
        out.tiles_l = [
            _subtree(l_hashes[k * TILE_WIDTH : (k + 1) * TILE_WIDTH]) for k in range(complete)
        ]
    if t_full is not None:
        out.tiles_t = [
            _subtree(t_full[k * TILE_WIDTH : (k + 1) * TILE_WIDTH]) for k in range(complete)
        ]
    for n in task.sizes:
        fs = _partial_fold(s_hashes, start, n)
        fl = fs if l_hashes is None else _partial_fold(l_hashes, start, n)
        ft = fs if t_full is None else _partial_fold(t_full, start, n)
        out.folds[n] = (fs, fl, ft)
    culprits = _culprits(order)
    # Event ids for the findings whose row matched its leaf (only mismatches noted theirs).
    need = {d[0] for d in out.tile_diffs if d[3] == -1} | (culprits.keys() - ids.keys())
    if need and task.recompute:
        for pos, pk, _, ev, _ in await log.stored_range(conn, min(need), max(need) + 1):
            if pos in need and ev is not None:
                ids[pos] = (pk, str(ev["event_id"]))
        out.tile_diffs = [(p, s, t, *ids.get(p, (pk, eid))) for p, s, t, pk, eid in out.tile_diffs]
    for pos, why in culprits.items():
        pk, eid = ids.get(pos, (-1, ""))
        out.out_of_order.append((pos, pk, eid, why))
    return out


# --- running tasks: in this process, or in a pool of processes --------------------------------


class Runner(Protocol):
    def run(self, tasks: Sequence[Task]) -> AsyncIterator[TaskResult]: ...


@dataclass
class InProcess:
    """Tasks one after another on this process's engine (the CLI with --jobs 1, tests)."""

    engine: AsyncEngine

    async def run(self, tasks: Sequence[Task]) -> AsyncIterator[TaskResult]:
        keys = _KeyCache()
        async with self.engine.connect() as conn:
            await tune_for_scan(conn)
            for task in tasks:
                yield await run_task(conn, task, keys)
                # A long read-only transaction holds back nothing the sequencer needs, but
                # ending it between tasks keeps its snapshot from aging for minutes.
                await conn.rollback()


# Per worker process (set by _worker_init): its own loop, engine and key cache.
_worker: dict[str, Any] = {}


def _worker_init(url: str) -> None:
    loop = asyncio.new_event_loop()
    _worker.update(
        loop=loop, engine=create_engine(url, pool_size=1, max_overflow=0), keys=_KeyCache()
    )


def _worker_run(task: Task) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        engine: AsyncEngine = _worker["engine"]
        try:
            async with engine.connect() as conn:
                await tune_for_scan(conn)
                return (await run_task(conn, task, _worker["keys"])).to_json()
        finally:
            # No connection outlives its task: the pool's processes are never told when the
            # run ends, and a connection left open would be cut off at their exit.
            await engine.dispose()

    loop: asyncio.AbstractEventLoop = _worker["loop"]
    return loop.run_until_complete(run())


@dataclass
class Pool:
    """Tasks spread over `jobs` processes (spawned, not forked: the parent may be a running
    server with threads and open connections). Results come back as they finish."""

    url: str
    jobs: int

    async def run(self, tasks: Sequence[Task]) -> AsyncIterator[TaskResult]:
        if not tasks:
            return
        context = multiprocessing.get_context("spawn")
        executor = ProcessPoolExecutor(
            max_workers=max(1, min(self.jobs, len(tasks))),
            mp_context=context,
            initializer=_worker_init,
            initargs=(self.url,),
        )
        submitted: list[Future[dict[str, Any]]] = []
        try:
            submitted = [executor.submit(_worker_run, t) for t in tasks]
            waiting = {asyncio.wrap_future(f) for f in submitted}
            while waiting:
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    yield TaskResult.from_json(finished.result())
        finally:
            for f in submitted:
                f.cancel()
            executor.shutdown(wait=False, cancel_futures=True)


# --- the coordinator -------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What a run checks, fixed at its start (so a resumed run checks the same thing): the
    tree of `tree_size` leaves, the sequencer's cursor then, and the checkpoints up to id
    `max_checkpoint_id`."""

    tree_size: int
    cursor_txid: int | None
    cursor_id: int
    cursor_found: bool
    max_checkpoint_id: int
    since: int = 0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Progress:
    tasks_done: int
    tasks_total: int
    positions_done: int
    tree_size: int


@dataclass
class Report:
    status: str  # "intact" | "tampered" | "unverifiable"
    origin: str | None
    tree_size: int
    checkpoints: int
    valid_checkpoints: int
    newest: SignedCheckpoint | None
    checked: int
    since: int
    seconds: float
    jobs: int
    problems: list[Problem]
    reason: str | None = None  # why unverifiable
    purged: int = 0  # rows gone inside retention tombstones (allowed; their leaves stay)

    @property
    def exit_code(self) -> int:
        return {"intact": 0, "tampered": 1}.get(self.status, 2)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.problems:
            out[p.kind] = out.get(p.kind, 0) + 1
        return out

    def to_json(self, problem_limit: int | None = None) -> dict[str, Any]:
        shown = self.problems if problem_limit is None else self.problems[:problem_limit]
        return {
            "status": self.status,
            "reason": self.reason,
            "origin": self.origin,
            "tree_size": self.tree_size,
            "checkpoints": self.checkpoints,
            "valid_checkpoints": self.valid_checkpoints,
            "newest_checkpoint": None
            if self.newest is None
            else {"id": self.newest.id, "tree_size": self.newest.size, "note": self.newest.note},
            "checked": self.checked,
            "purged": self.purged,
            "since": self.since,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.checked / self.seconds) if self.seconds else None,
            "jobs": self.jobs,
            "problem_count": len(self.problems),
            "problem_counts": self.counts(),
            "problems": [p.to_json() for p in shown],
            "problems_truncated": len(shown) < len(self.problems),
        }


async def make_plan(conn: AsyncConnection, since: int = 0) -> Plan:
    cursor = await log.read_cursor(conn)
    if cursor is None:
        _, size = await log.leaf_count(conn)
    else:
        size = cursor.next_position
    newest = await repo.latest_checkpoint(conn)
    return Plan(
        tree_size=size,
        cursor_txid=None if cursor is None else cursor.txid,
        cursor_id=0 if cursor is None else cursor.event_pk,
        cursor_found=cursor is not None,
        max_checkpoint_id=0 if newest is None else int(newest.id),
        since=since,
    )


async def _checkpoint_rows(conn: AsyncConnection, max_id: int) -> list[Any]:
    rows: list[Any] = []
    after = 0
    while True:
        page = await repo.checkpoints(conn, after_id=after, limit=1000)
        page = [r for r in page if r.id <= max_id]
        if not page:
            return rows
        rows += page
        after = page[-1].id


def plan_tasks(plan: Plan, sizes: Iterable[int]) -> list[Task]:
    n = plan.tree_size
    wanted = sorted({s for s in sizes if 0 < s <= n and s % TILE_WIDTH})
    tasks = []
    for index, start in enumerate(range(0, n, TASK_SPAN)):
        end = min(start + TASK_SPAN, n)
        mine = tuple(s for s in wanted if start < s <= end)
        tasks.append(
            Task(index, start, end, n, recompute=end > plan.since, sizes=mine, since=plan.since)
        )
    return tasks


@dataclass
class _Trees:
    """S, L, T over the complete level-0 tiles of the tree, plus the partial-tile folds."""

    s: MemoryTree
    recomputed: MemoryTree
    t: MemoryTree
    folds: dict[int, tuple[bytes, bytes, bytes]]

    def root(self, which: int, n: int) -> bytes:
        tree = (self.s, self.recomputed, self.t)[which]
        tiles = n >> TILE_HEIGHT
        pieces = []
        s = 0
        while s < tiles:
            level = (tiles - s).bit_length() - 1
            pieces.append(tree.hash_at(level, s >> level))
            s += 1 << level
        if n % TILE_WIDTH:
            pieces.append(self.folds[n][which])
        return _fold(pieces) if pieces else EMPTY_ROOT


Progressed = Callable[[Progress, TaskResult], Awaitable[None]]


async def verify_log(
    engine: AsyncEngine,
    verifiers: Sequence[note.Verifier],
    runner: Runner,
    *,
    pinned: note.Checkpoint | None = None,
    since: int = 0,
    plan: Plan | None = None,
    done: Mapping[int, TaskResult] | None = None,
    on_task: Progressed | None = None,
    jobs: int = 1,
) -> Report:
    """Verify the log in `engine`'s database. `plan` and `done` resume an earlier run;
    `on_task` hears of each finished task (in completion order)."""
    started = time.perf_counter()
    async with engine.connect() as conn:
        await tune_for_scan(conn)
        if plan is None:
            plan = await make_plan(conn, since)
        origin = await repo.origin(conn)
        rows = await _checkpoint_rows(conn, plan.max_checkpoint_id)
    if pinned is not None and origin is not None and pinned.origin != origin:
        raise CannotVerify(
            f"the pinned checkpoint is of another log ({pinned.origin!r}, not {origin!r})"
        )
    valid, problems = check_signatures(rows, verifiers, origin)
    n = plan.tree_size
    if plan.since > n:
        raise SinceBeyondTree(f"--since {plan.since} is beyond the tree ({n} leaves)")
    if not plan.cursor_found:
        problems.append(Problem(MISSING_CURSOR, "the sequencer's cursor row (log_cursor) is gone"))

    sizes = {c.size for c in valid} | {n}
    if pinned is not None:
        sizes.add(pinned.size)
    tasks = plan_tasks(plan, sizes)
    # A stored result is reused only if it answers what this plan asks of its task.
    results = {
        t.index: done[t.index]
        for t in tasks
        if done and t.index in done and set(t.sizes) <= done[t.index].folds.keys()
    }
    todo = [t for t in tasks if t.index not in results]

    async def run_all() -> None:
        async for result in runner.run(todo):
            results[result.index] = result
            if on_task is not None:
                finished = sum(r.end - r.start for r in results.values())
                await on_task(Progress(len(results), len(tasks), finished, n), result)

    cursor = log.Cursor(n, plan.cursor_txid, plan.cursor_id)

    async def inserted_rows() -> list[dict[str, Any]]:
        if not plan.cursor_found:
            return []
        async with engine.connect() as c:
            return await log.rows_without_leaf(c, cursor, INSERTED_LIMIT)

    _, inserted = await asyncio.gather(run_all(), inserted_rows())
    ordered = [results[t.index] for t in tasks]

    trees = _build_trees(ordered)
    judged = await _judge(engine, plan, ordered, trees, valid, pinned, inserted)
    problems += judged
    problems.sort(key=_problem_order)
    checked = sum(r.checked for r in ordered)
    if rows and not valid and all(p.kind == WRONG_KEY for p in problems):
        # No checkpoint opens under the keys given and nothing else is wrong: far likelier
        # the wrong --vkey than a log re-signed whole, and nothing is left to verify against.
        # (One re-signed checkpoint among valid ones, or any other finding, is tampering.)
        status = "unverifiable"
        reason = (
            f"none of the {len(rows)} checkpoint(s) is signed by a trusted key: is --vkey the "
            "log's verifier key? (or every checkpoint was re-signed)"
        )
    elif problems:
        status, reason = "tampered", None
    elif not rows:
        status, reason = "unverifiable", "there is no signed checkpoint to verify against yet"
    else:
        status, reason = "intact", None
    return Report(
        status=status,
        origin=origin,
        tree_size=n,
        checkpoints=len(rows),
        valid_checkpoints=len(valid),
        newest=max(valid, key=lambda c: c.id) if valid else None,
        checked=checked,
        since=plan.since,
        seconds=time.perf_counter() - started,
        jobs=jobs,
        problems=problems,
        reason=reason,
        purged=sum(r.purged_count for r in ordered),
    )


def _problem_order(p: Problem) -> tuple[int, int, int]:
    return (
        -1 if p.position is None else p.position,
        KINDS.index(p.kind) if p.kind in KINDS else len(KINDS),
        -1 if p.checkpoint_id is None else p.checkpoint_id,
    )


def _build_trees(results: Sequence[TaskResult]) -> _Trees:
    s, ll, t = MemoryTree(), MemoryTree(), MemoryTree()
    folds: dict[int, tuple[bytes, bytes, bytes]] = {}
    for r in results:
        for h in r.tiles_s:
            s.append_hash(h)
        for h in r.tiles_l if r.tiles_l is not None else r.tiles_s:
            ll.append_hash(h)
        for h in r.tiles_t if r.tiles_t is not None else r.tiles_s:
            t.append_hash(h)
        folds.update(r.folds)
    return _Trees(s, ll, t, folds)


async def _judge(
    engine: AsyncEngine,
    plan: Plan,
    results: Sequence[TaskResult],
    trees: _Trees,
    valid: Sequence[SignedCheckpoint],
    pinned: note.Checkpoint | None,
    inserted: list[dict[str, Any]],
) -> list[Problem]:
    """Turn the tasks' anomalies into problems, deciding with the signed roots which copy
    (rows, leaves, tiles) is the authentic one at each position."""
    n = plan.tree_size
    problems: list[Problem] = []
    covered = [c for c in valid if c.size <= n]
    beyond = [c for c in valid if c.size > n]
    # auth[x]: the tree x (S, L, T) is proven for positions below it.
    auth = [0, 0, 0]
    for c in covered:
        for x in range(3):
            if trees.root(x, c.size) == c.root:
                auth[x] = max(auth[x], c.size)
    newest_size = max((c.size for c in covered), default=0)

    # Checkpoints: beyond the tree, roots nobody reproduces, pairs that contradict.
    if beyond:
        top = max(beyond, key=lambda c: c.size)
        problems.append(
            Problem(
                DROPPED_TAIL,
                f"the log has {n} leaves but checkpoint #{top.id} signed {top.size}: the "
                f"events at positions {n}..{top.size - 1} were removed",
                n,
                top.size - 1,
                checkpoint_id=top.id,
                tree_size=top.size,
            )
        )
    mismatched = [c for c in covered if all(trees.root(x, c.size) != c.root for x in range(3))]
    if mismatched:
        first = min(mismatched, key=lambda c: (c.size, c.id))
        lower = max(
            (c.size for c in covered if c.size < first.size and c not in mismatched), default=0
        )
        more = len(mismatched) - 1
        problems.append(
            Problem(
                ROOT_MISMATCH,
                "no copy of the log (rows, leaves, tiles) gives this signed root: history "
                f"was rewritten between positions {lower} and {first.size - 1}"
                + (f" (and {more} later checkpoint(s) fail the same way)" if more else ""),
                lower,
                first.size - 1,
                checkpoint_id=first.id,
                tree_size=first.size,
            )
        )
    by_id = sorted(valid, key=lambda c: c.id)
    for older, newer in itertools.pairwise(by_id):
        if newer.size < older.size:
            problems.append(
                Problem(
                    ROLLBACK,
                    f"signed after checkpoint #{older.id} (size {older.size}) but smaller",
                    checkpoint_id=newer.id,
                    tree_size=newer.size,
                )
            )
        elif newer.size == older.size and newer.root != older.root:
            problems.append(
                Problem(
                    INCONSISTENT,
                    f"same size as checkpoint #{older.id} but another root (a fork)",
                    checkpoint_id=newer.id,
                    tree_size=newer.size,
                )
            )
    if pinned is not None:
        newest_signed = max((c.size for c in valid), default=-1)
        if pinned.size > newest_signed:
            problems.append(
                Problem(
                    ROLLBACK,
                    f"the pinned checkpoint covers {pinned.size} events but the newest valid "
                    f"checkpoint in the database covers "
                    f"{'none' if newest_signed < 0 else newest_signed}",
                    tree_size=pinned.size,
                )
            )
        elif pinned.size <= n and all(
            trees.root(x, pinned.size) != pinned.root_hash for x in range(3)
        ):
            problems.append(
                Problem(
                    REWRITTEN,
                    f"the log's first {pinned.size} events no longer have the pinned root: "
                    "history was rewritten since it was pinned",
                    0,
                    max(0, pinned.size - 1),
                    tree_size=pinned.size,
                )
            )

    # Positions.
    mismatches = [m for r in results for m in r.mismatches]
    deleted = [d for r in results for d in r.deleted]
    tile_diffs = sorted((d for r in results for d in r.tile_diffs), key=lambda d: d[0])
    for r in results:
        problems += r.tile_problems
        for a, b in r.missing:
            problems.append(
                Problem(
                    MISSING_LEAVES,
                    f"{b - a} position(s) have no leaf",
                    a,
                    b - 1,
                )
            )
        extra = r.mismatch_count - len(r.mismatches)
        if extra:
            problems.append(
                Problem(
                    MODIFIED,
                    f"{extra} more rows of this range differ from their leaves",
                    r.start,
                    r.end - 1,
                )
            )
        extra = r.deleted_count - len(r.deleted)
        if extra:
            problems.append(
                Problem(DELETED, f"{extra} more rows of this range are gone", r.start, r.end - 1)
            )

    reported: set[int] = set()
    # Leaves that differ from proven tiles: moved (shifted or swapped).
    shifted_from: int | None = None
    for d in tile_diffs:
        pos = d[0]
        if pos < auth[0] or pos >= auth[2]:
            continue
        # The tiles are proven here and the leaves are not: see whether the leaves moved.
        shifted_from = pos
        break
    if shifted_from is not None:
        # The leaf after the run of differing positions: when the run reaches the end of
        # the tiles (a leaf inserted at the last signed position), that leaf has no tile
        # copy to differ from, yet it is the one that says the leaves moved up.
        diff_at = {d[0] for d in tile_diffs}
        after = shifted_from
        while after in diff_at:
            after += 1
        after_leaf = None
        if after < n:
            async with engine.connect() as conn:
                found = await log.leaves(conn, after, after + 1)
            after_leaf = bytes(found[0].leaf_hash) if found else None
        problems += _shift_problems(shifted_from, tile_diffs, reported, after_leaf)

    s_auth_rows: list[Mismatch] = []
    tile_at = {d[0]: d[2] for d in tile_diffs}
    for m in mismatches:
        pos, pk, eid, _, recomputed, why = m
        if pos in reported:
            continue
        if pos < auth[0]:
            s_auth_rows.append(m)
        elif recomputed is not None and (
            pos < auth[1]
            # The tiles are proven here and hold the row's hash: the leaf is the odd one out,
            # even when another edited row keeps L from reproducing a root (then a forged
            # leaf was reported as a modified row).
            or (pos < auth[2] and tile_at.get(pos) == recomputed)
        ):
            reported.add(pos)
            problems.append(
                Problem(
                    FORGED_LEAF,
                    "the stored leaf hash was edited: it matches no row, the row gives the "
                    "signed tree",
                    pos,
                    event_pk=pk,
                    event_id=eid,
                )
            )
        else:
            reported.add(pos)
            problems.append(
                Problem(
                    MODIFIED,
                    why
                    or (
                        "the row no longer gives its leaf (past the newest checkpoint: the row "
                        "or its leaf changed)"
                        if pos >= newest_size
                        else "the row no longer gives its leaf, and the leaves no longer give "
                        "the signed root"
                    ),
                    pos,
                    event_pk=pk,
                    event_id=eid,
                )
            )
    problems += await _cross_match(engine, s_auth_rows, deleted, inserted, reported)

    for d in tile_diffs:
        pos, _, _, pk, eid = d
        if pos in reported:
            continue
        reported.add(pos)
        problems.append(
            Problem(
                FORGED_TILE,
                "the tile's copy of this leaf hash was edited"
                if pos < auth[0]
                else "the tile's copy of this leaf hash differs from the leaf (not covered by a "
                "checkpoint that says which is right)",
                pos,
                event_pk=None if pk < 0 else pk,
                event_id=eid or None,
                tile=_tile_path(0, pos // TILE_WIDTH),
            )
        )
    problems += await _upper_tiles(engine, n, trees, auth)
    for r in results:
        for pos, pk, eid, why in r.out_of_order:
            if pos in reported:
                continue
            reported.add(pos)
            problems.append(
                Problem(
                    OUT_OF_ORDER, why, pos, event_pk=None if pk < 0 else pk, event_id=eid or None
                )
            )
    return problems


def _shift_problems(
    first: int,
    diffs: Sequence[tuple[int, bytes, bytes, int, str]],
    reported: set[int],
    after_leaf: bytes | None = None,
) -> list[Problem]:
    """Leaves differ from proven tiles from `first` on: swapped pairs (leaf p = tile q and
    vice versa), an extra leaf (leaf q+1 = tile q), or a removed one (leaf q = tile q+1).
    `after_leaf`: the leaf just after the run of differing positions, if any."""
    at = {d[0]: d for d in diffs}
    window = [at[p] for p in range(first, first + 32) if p in at]
    out: list[Problem] = []

    def run_end() -> int:
        p = first
        while p + 1 in at:
            p += 1
        return p

    # Swaps first: two adjacent leaves swapped also pass the first pair's "leaf at q+1 ==
    # tile at q" test below, and were reported as an insertion.
    for d in window:
        for e in window:
            if d[0] < e[0] and d[1] == e[2] and e[1] == d[2]:
                for x, y in ((d, e), (e, d)):
                    reported.add(x[0])
                    out.append(
                        Problem(
                            REORDERED,
                            f"its leaf was signed at position {y[0]}: the two leaves were swapped",
                            x[0],
                            event_pk=None if x[3] < 0 else x[3],
                            event_id=x[4] or None,
                        )
                    )
    if out:
        return out
    last = run_end()
    pairs = [(at[p], at[p + 1]) for p in range(first, first + 31) if p in at and p + 1 in at]
    # The run ends where the tiles end: the leaf after it has no tile copy, but must be the
    # last tiled hash if the leaves moved up.
    tail = [] if after_leaf is None or last + 1 in at else [after_leaf == at[last][2]]
    if (pairs or tail) and all(b[1] == a[2] for a, b in pairs) and all(tail):
        d = at[first]
        out.append(
            Problem(
                INSERTED,
                "a leaf was inserted here: the signed tiles continue with the leaves after it "
                f"(positions {first + 1}..{last + len(tail)} moved up by one)",
                first,
                event_pk=None if d[3] < 0 else d[3],
                event_id=d[4] or None,
            )
        )
        reported.update(range(first, last + 1))
        return out
    if pairs and all(a[1] == b[2] for a, b in pairs):  # leaf at q == tile at q+1
        out.append(
            Problem(
                DELETED,
                "the event signed at this position was removed with its leaf, and the leaves "
                f"after it moved down by one (positions {first}..{last})",
                first,
                last,
            )
        )
        reported.update(range(first, last + 1))
    return out


async def _cross_match(
    engine: AsyncEngine,
    rows: Sequence[Mismatch],
    deleted: Sequence[tuple[int, int, bytes]],
    inserted: Sequence[dict[str, Any]],
    reported: set[int],
) -> list[Problem]:
    """Rows that no longer give their (proven) leaf: does one give another position's leaf,
    as it is (the leaves' event ids were swapped) or with that position's id (the rows'
    contents were swapped, or a row's id was changed)? Else it was modified. Rows without a
    leaf likewise against the leaves whose row is gone."""
    problems: list[Problem] = []
    targets: dict[int, tuple[int, bytes]] = {m[0]: (m[1], m[3]) for m in rows}
    targets.update({p: (pk, leaf) for p, pk, leaf in deleted})
    by_leaf = {leaf: p for p, (_, leaf) in targets.items()}
    matched: set[int] = set()
    candidates = list(rows)[:CROSS_MATCH_LIMIT]
    events: dict[int, dict[str, Any]] = {}
    keys: dict[tuple[str, str], bytes] = {}
    small = len(targets) <= CROSS_MATCH_LIMIT and (candidates or inserted)
    if small:
        async with engine.connect() as conn:
            events = await log.events_by_pk(conn, [m[1] for m in candidates])
            wanted: set[tuple[str, str]] = set()
            for ev in [*events.values(), *inserted[:CROSS_MATCH_LIMIT]]:
                if (day := day_key_name(ev)) is not None:
                    wanted.add((DAY, day))
                if (subject := subject_key_name(ev)) is not None:
                    wanted.add((SUBJECT, subject))
            keys = await repo.read_keys(conn, wanted)

    def entry_with_id(ev: Mapping[str, Any], pk: int) -> bytes | None:
        day, subject = day_key_name(ev), subject_key_name(ev)
        ek = EntryKeys(
            day_key=None if day is None else keys.get((DAY, day)),
            subject_key=None if subject is None else keys.get((SUBJECT, subject)),
        )
        try:
            return entry_leaf_hash({**ev, "id": pk}, ek)
        except ValueError:
            return None

    for pos, pk, eid, _leaf, recomputed, why in rows:
        found: int | None = None
        how = ""
        if recomputed is not None and by_leaf.get(recomputed, pos) != pos:
            found, how = by_leaf[recomputed], "the leaves' event ids were swapped"
        elif small and pk in events:
            for q, (qpk, qleaf) in targets.items():
                if q != pos and entry_with_id(events[pk], qpk) == qleaf:
                    found, how = q, "the rows' contents were swapped"
                    break
        reported.add(pos)
        if found is not None:
            matched.add(found)
            problems.append(
                Problem(
                    REORDERED,
                    f"this row holds the event signed at position {found} ({how})",
                    pos,
                    event_pk=pk,
                    event_id=eid,
                )
            )
        else:
            problems.append(
                Problem(
                    MODIFIED,
                    why or "the row was changed: it no longer gives the signed leaf",
                    pos,
                    event_pk=pk,
                    event_id=eid,
                )
            )
    gone = {p: (pk, leaf) for p, pk, leaf in deleted}
    # A row whose id was raised past the cursor's (the last event's, say) has no leaf but is
    # not below the cursor, so it is not among `inserted`: without also trying the leafless
    # rows above the cursor, its leaf would only be "deleted", with no event id. Those rows
    # are normally the sequencer's backlog; they are tried, never reported themselves.
    pending: list[dict[str, Any]] = []
    if gone and len(gone) <= CROSS_MATCH_LIMIT and len(inserted) <= CROSS_MATCH_LIMIT:
        above = log.Cursor(0, 2**63 - 1, 2**63 - 1)  # every leafless row, in id order
        seen = {int(ev["id"]) for ev in inserted}
        async with engine.connect() as conn:
            rows_ = await log.rows_without_leaf(conn, above, len(seen) + CROSS_MATCH_LIMIT)
            pending = [ev for ev in rows_ if int(ev["id"]) not in seen][:CROSS_MATCH_LIMIT]
            wanted = set()
            for ev in pending:
                if (day := day_key_name(ev)) is not None:
                    wanted.add((DAY, day))
                if (subject := subject_key_name(ev)) is not None:
                    wanted.add((SUBJECT, subject))
            keys.update(await repo.read_keys(conn, wanted - keys.keys()))
    tried = [(ev, False) for ev in inserted] + [(ev, True) for ev in pending]
    for ev, is_pending in tried:
        moved_from: int | None = None
        if (small or is_pending) and len(inserted) <= CROSS_MATCH_LIMIT:
            for q, (qpk, qleaf) in gone.items():
                if q not in matched and entry_with_id(ev, qpk) == qleaf:
                    moved_from = q
                    break
        if moved_from is None and is_pending:
            continue  # not sequenced yet: not a finding
        if moved_from is not None:
            matched.add(moved_from)
            reported.add(moved_from)
            problems.append(
                Problem(
                    MODIFIED,
                    f"the row's id was changed from {gone[moved_from][0]} to {ev['id']}",
                    moved_from,
                    event_pk=gone[moved_from][0],
                    event_id=str(ev["event_id"]),
                )
            )
            continue
        problems.append(
            Problem(
                INSERTED,
                "a row the sequencer has passed but that has no leaf: written into the "
                "past, after the fact",
                event_pk=int(ev["id"]),
                event_id=str(ev["event_id"]),
            )
        )
    for p, pk, _ in deleted:
        if p in matched or p in reported:
            continue
        reported.add(p)
        problems.append(Problem(DELETED, "the row of this leaf is gone", p, event_pk=pk))
    return problems


async def _upper_tiles(
    engine: AsyncEngine, n: int, trees: _Trees, auth: Sequence[int]
) -> list[Problem]:
    """Tiles of levels 1+ against the tree of the authentic leaves (S; T where only the
    tiles are proven)."""
    problems: list[Problem] = []
    use_t = auth[2] > auth[0]
    tree = trees.t if use_t else trees.s
    level = 1
    async with engine.connect() as conn:
        while (count := n >> (TILE_HEIGHT * level)) > 0:
            stop = -(-count // TILE_WIDTH)
            stored = await repo.tiles_at_level(conn, level, 0, stop)
            for k in range(stop):
                w = min(TILE_WIDTH, count - k * TILE_WIDTH)
                path = _tile_path(level, k, w)
                span = 1 << (TILE_HEIGHT * level)
                lo, hi = k * TILE_WIDTH * span, (k * TILE_WIDTH + w) * span - 1
                data = stored.get(k)
                if data is None or len(data) < w * HASH_SIZE:
                    problems.append(
                        Problem(FORGED_TILE, "the tile is missing or too short", lo, hi, tile=path)
                    )
                    continue
                for j in range(w):
                    want = tree.hash_at(TILE_HEIGHT * (level - 1), k * TILE_WIDTH + j)
                    if data[j * HASH_SIZE : (j + 1) * HASH_SIZE] != want:
                        first = (k * TILE_WIDTH + j) * span
                        problems.append(
                            Problem(
                                FORGED_TILE,
                                f"hash {j} of this tile is not the hash of leaves "
                                f"{first}..{first + span - 1}",
                                first,
                                first + span - 1,
                                tile=path,
                            )
                        )
            level += 1
    return problems
