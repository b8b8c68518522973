"""Signed export bundles: evidence an outside auditor checks offline (docs/integrity.md).

A bundle is a tar of, in this order:

    README.txt                what this is and how to check it
    checkpoint                the signed checkpoint (C2SP tlog-checkpoint) everything proves against
    entries/NNNNNN.ndjson     ≤ CHUNK_EVENTS lines {"position", "leaf_hash", "entry"} (base64)
    proofs/NNNNNN.ndjson      one line per run of consecutive positions in that entries file:
                              {"start", "end", "gap": [base64 hashes]}
    events/NNNNNN.ndjson      (optional) the readable rows {"position", "event", "salts"}
    proofs/end.ndjson         the final line: {"start": size, "end": size, "gap": [...]}
    manifest                  a signed note: every file's SHA-256 and size, the filters, counts

**Range proofs.** Positions are folded left to right into a compact range (the binary
decomposition of [0, p) into complete, aligned subtrees). A run [start, end) brings its own
leaves; its `gap` is the compact range of the positions between the previous run's end and
`start` — the subtree hashes of the events the bundle leaves out, in order, at most two per
tree level. After the final gap (up to the checkpoint's size) the range folds into the root,
which must be the checkpoint's. Nothing is sent twice: a gap's hashes cover only that gap,
so a sparse selection costs about log2(gap) hashes per run, and a full export none at all.

**Readable rows** carry every column of the entry in clear, personal values included, plus
the event's *salts* (HMAC(K, event_id) for its day key and subject key, never K): with them
the verifier recomputes the commitments and re-encodes the whole v1 entry from the row, so
each readable value is checked against the log. A salt opens one event only.

Only the standard library, `cryptography` (via `note`) and the pure integrity primitives
are imported: `audit-service verify-bundle` runs where no database driver, web framework or
service configuration exists.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import multiprocessing
import os
import tarfile
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from audit_service.integrity import note
from audit_service.integrity.entry import (
    DOMAIN_ACTOR_ID,
    DOMAIN_ACTOR_NAME,
    DOMAIN_IP,
    DOMAIN_USER_AGENT,
    ENTRY_COLUMNS,
    ENTRY_FIELDS,
    Commitments,
    canonical_json,
    commit,
    encode_entry,
)
from audit_service.integrity.merkle import EMPTY_ROOT, HASH_SIZE, HashSource, node_hash

BUNDLE_FORMAT = "audit-service/bundle/v1"
MANIFEST_TITLE = "audit-service bundle manifest v1"
CHUNK_EVENTS = 5000
README_FILE = "README.txt"
CHECKPOINT_FILE = "checkpoint"
END_PROOF_FILE = "proofs/end.ndjson"
MANIFEST_FILE = "manifest"
# A member larger than this is not read into memory (a chunk of CHUNK_EVENTS rows of the
# largest events the service accepts is far below it).
MAX_MEMBER_BYTES = 512 * 1024 * 1024
MAX_MANIFEST_BYTES = 64 * 1024 * 1024

_TIMESTAMPS = ("occurred_at", "recorded_at")


def chunk_files(index: int) -> tuple[str, str, str]:
    """Names of the entries, proofs and events files of chunk `index`."""
    return (
        f"entries/{index:06d}.ndjson",
        f"proofs/{index:06d}.ndjson",
        f"events/{index:06d}.ndjson",
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not valid base64") from None


# --- range proofs ----------------------------------------------------------------------


def compact_pieces(start: int, end: int) -> list[tuple[int, int]]:
    """The compact range of [start, end): the maximal complete, aligned subtrees covering it,
    left to right, as (level, index) — what `HashSource.read_hashes` answers."""
    if not 0 <= start <= end:
        raise ValueError(f"not a range of positions: [{start}, {end})")
    pieces = []
    while start < end:
        level = (end - start).bit_length() - 1
        if start:
            level = min(level, (start & -start).bit_length() - 1)
        pieces.append((level, start >> level))
        start += 1 << level
    return pieces


class ProofFailure(ValueError):
    """Leaves and proof hashes do not fold into the expected root (the message says how)."""


class CompactRange:
    """Hashes of consecutive positions folded into complete subtrees as they arrive
    (transparency-dev's compact range), starting at `begin`."""

    def __init__(self, begin: int = 0) -> None:
        self.begin = self.end = begin
        self._stack: list[tuple[int, int, bytes]] = []  # (level, index, hash), largest first

    def push(self, level: int, index: int, h: bytes) -> None:
        """Append the complete subtree (level, index), which must start at `end`."""
        if index << level != self.end:
            raise ProofFailure(f"subtree {level}/{index} does not start at position {self.end}")
        self.end += 1 << level
        stack = self._stack
        # A right child meets its left sibling: merge upwards while that keeps happening.
        while index & 1 and stack and stack[-1][0] == level and stack[-1][1] == index - 1:
            h = node_hash(stack.pop()[2], h)
            level, index = level + 1, index >> 1
        stack.append((level, index, h))

    def push_leaves(self, hashes: Iterable[bytes]) -> None:
        stack = self._stack
        for h in hashes:
            index, level = self.end, 0
            self.end += 1
            while index & 1 and stack and stack[-1][0] == level and stack[-1][1] == index - 1:
                h = node_hash(stack.pop()[2], h)
                level, index = level + 1, index >> 1
            stack.append((level, index, h))

    @property
    def pieces(self) -> list[tuple[int, int, bytes]]:
        return list(self._stack)

    def root(self) -> bytes:
        """RFC 9162 root of [0, end): the pieces are then the binary digits of `end`, and
        the tree nests them to the right."""
        if self.begin != 0:
            raise ValueError("only a range that starts at position 0 has a root")
        if not self._stack:
            return EMPTY_ROOT
        result = self._stack[-1][2]
        for _, _, h in reversed(self._stack[:-1]):
            result = node_hash(h, result)
        return result


def runs_of(positions: Sequence[int]) -> list[tuple[int, int]]:
    """Maximal runs [start, end) of consecutive positions (ascending input)."""
    runs: list[tuple[int, int]] = []
    for p in positions:
        if runs and runs[-1][1] == p:
            runs[-1] = (runs[-1][0], p + 1)
        else:
            runs.append((p, p + 1))
    return runs


@dataclass(frozen=True, slots=True)
class RunProof:
    """A run [start, end) of included positions and the compact range of the gap before it
    (from the previous run's end); the final one has start == end == tree size."""

    start: int
    end: int
    gap: tuple[bytes, ...]

    def line(self) -> str:
        gap = ",".join(f'"{_b64(h)}"' for h in self.gap)
        return f'{{"start":{self.start},"end":{self.end},"gap":[{gap}]}}\n'


def prove_runs(
    source: HashSource, size: int, runs: Sequence[tuple[int, int]], *, after: int = 0
) -> list[RunProof]:
    """Proofs for `runs` (ascending, disjoint, within `size`), the first gap starting at
    `after` (the end of the previous run, for a selection proved in pieces); one read of
    `source` for all of them."""
    coords: list[tuple[int, int]] = []
    spans = []
    for start, end in runs:
        if not after <= start < end <= size:
            raise ValueError(f"run [{start}, {end}) is not after {after} and within {size}")
        pieces = compact_pieces(after, start)
        spans.append((start, end, len(coords), len(pieces)))
        coords += pieces
        after = end
    hashes = list(source.read_hashes(coords)) if coords else []
    return [RunProof(s, e, tuple(hashes[i : i + n])) for s, e, i, n in spans]


def prove_end(source: HashSource, size: int, after: int) -> RunProof:
    """The final record: the gap from the last run's end to the tree size."""
    pieces = compact_pieces(after, size)
    return RunProof(size, size, tuple(source.read_hashes(pieces)) if pieces else ())


class RangeVerifier:
    """Folds runs (their leaf hashes) and gaps (their proof hashes) into the root of a tree
    of `size` leaves, checking the proof's shape on the way."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.range = CompactRange()
        self.runs = 0

    def gap(self, start: int, hashes: Sequence[bytes]) -> None:
        if start < self.range.end:
            raise ProofFailure(
                f"run at {start} starts before the previous one ended ({self.range.end})"
            )
        if start > self.size:
            raise ProofFailure(f"run at {start} is beyond the checkpoint's size {self.size}")
        pieces = compact_pieces(self.range.end, start)
        if len(hashes) != len(pieces):
            raise ProofFailure(
                f"the gap before position {start} needs {len(pieces)} hash(es), "
                f"the proof has {len(hashes)}"
            )
        for (level, index), h in zip(pieces, hashes, strict=True):
            if len(h) != HASH_SIZE:
                raise ProofFailure(f"a proof hash before position {start} is not 32 bytes")
            self.range.push(level, index, h)

    def _check_run(self, start: int, end: int) -> None:
        if end <= start:
            raise ProofFailure(f"run [{start}, {end}) is empty")
        if end > self.size:
            raise ProofFailure(
                f"run [{start}, {end}) goes beyond the checkpoint's tree (size {self.size})"
            )

    def run(self, start: int, end: int, gap: Sequence[bytes], leaves: Sequence[bytes]) -> None:
        self._check_run(start, end)
        self.gap(start, gap)
        self.range.push_leaves(leaves)
        self.runs += 1

    def pieces(self, start: int, end: int, gap: Sequence[bytes], folded: CompactRange) -> None:
        """A run whose leaves were already folded elsewhere (by a worker process)."""
        self._check_run(start, end)
        if (folded.begin, folded.end) != (start, end):
            raise ProofFailure(f"run [{start}, {end}) was folded as [{folded.begin}, {folded.end})")
        self.gap(start, gap)
        for level, index, h in folded.pieces:
            self.range.push(level, index, h)
        self.runs += 1

    def finish(self, gap: Sequence[bytes]) -> bytes:
        self.gap(self.size, gap)
        return self.range.root()


# --- readable rows ---------------------------------------------------------------------


def readable_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """An event's entry columns as JSON values (UTC ISO 8601 times, UUID text)."""
    out: dict[str, Any] = {}
    for name in ENTRY_COLUMNS:
        value = event[name]
        if isinstance(value, datetime):
            value = value.astimezone(UTC).isoformat(timespec="microseconds")
        elif isinstance(value, uuid.UUID):
            value = str(value)
        out[name] = value
    return out


def _event_from_row(row: Any) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise ValueError("event is not an object")
    if set(row) != set(ENTRY_COLUMNS):
        missing = sorted(set(ENTRY_COLUMNS) - set(row))
        extra = sorted(set(row) - set(ENTRY_COLUMNS))
        raise ValueError(f"event fields differ from the entry's (missing {missing}, extra {extra})")
    event = dict(row)
    for name in _TIMESTAMPS:
        value = event[name]
        if not isinstance(value, str):
            raise ValueError(f"{name} is not an ISO 8601 string")
        parsed = datetime.fromisoformat(value)
        if parsed.utcoffset() is None:
            raise ValueError(f"{name} has no UTC offset")
        event[name] = parsed
    return event


def opened_commitments(
    event: Mapping[str, Any],
    day: bytes | None,
    subject: bytes | None,
    kept: Commitments | None = None,
) -> Commitments:
    """The commitments of an event's personal values, from its salts; a field whose
    commitment the row carries as `kept` (retention anonymised or pseudonymised it, or its
    key is gone) takes that commitment: its readable value is the prefix, family or
    pseudonym, which the commitment does not open."""

    def opened(salt: bytes | None, domain: bytes, name: str) -> bytes | None:
        given = None if kept is None else getattr(kept, name)
        if given is not None:
            return bytes(given)
        value = event[name]
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError(f"{name} is not a string")
        if salt is None:
            raise ValueError(f"{name} is given but its salt is not")
        return commit(domain, salt, value)

    is_user = event["actor_type"] == "user"
    return Commitments(
        ip=opened(day, DOMAIN_IP, "ip"),
        user_agent=opened(day, DOMAIN_USER_AGENT, "user_agent"),
        actor_name=opened(subject, DOMAIN_ACTOR_NAME, "actor_name"),
        actor_id=opened(subject, DOMAIN_ACTOR_ID, "actor_id") if is_user else None,
    )


def _differing_fields(expected: bytes, actual: bytes) -> list[str]:
    try:
        a, b = json.loads(expected), json.loads(actual)
    except ValueError:
        return ["(the entry is not JSON)"]
    if not isinstance(b, list) or len(a) != len(b):
        return ["(the entry is not a v1 array)"]
    return [ENTRY_FIELDS[i] for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]


# --- writing ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BundleEntry:
    position: int
    leaf_hash: bytes
    entry: bytes

    def line(self) -> str:
        return (
            f'{{"position":{self.position},"leaf_hash":"{_b64(self.leaf_hash)}",'
            f'"entry":"{_b64(self.entry)}"}}\n'
        )


@dataclass(frozen=True, slots=True)
class ReadableRow:
    position: int
    event: Mapping[str, Any]  # readable_event(...)
    day_salt: bytes | None
    subject_salt: bytes | None
    # Commitments retention kept for this row (integrity_commitment): written as "kept".
    kept: Commitments | None = None

    def line(self) -> str:
        salts = {
            "day": None if self.day_salt is None else _b64(self.day_salt),
            "subject": None if self.subject_salt is None else _b64(self.subject_salt),
        }
        record: dict[str, Any] = {"position": self.position, "event": self.event, "salts": salts}
        if self.kept is not None:
            record["kept"] = kept_json(self.kept)
        return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


README = """\
audit-service signed export bundle ({format})

The events in entries/ are the canonical leaf entries (v1) of an audit-service log, each at
its log position, with range proofs (proofs/) against the signed checkpoint ({checkpoint}).
events/ (when present) holds the same events as readable rows with the salts that open
their personal values. The signed manifest lists every file's SHA-256.

Check it offline, with the log's verifier key obtained from its operator:

    audit-service verify-bundle THIS_FILE.tar --vkey '<name>+<key id>+<key>'

Exit status 0: intact; 1: tampered or damaged (each problem is listed); 2: cannot verify
(unknown key, unreadable or incomplete file); 3: usage.
"""


def tar_member(name: str, data: bytes, mtime: int) -> bytes:
    """One ustar member: header, data, zero padding to the 512-byte block."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = mtime
    info.mode = 0o644
    info.uname = info.gname = ""
    header = info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict")
    return header + data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)


@dataclass
class BundleWriter:
    """Produces a bundle's bytes piece by piece (each piece a whole number of tar members),
    remembering every file's SHA-256 for the manifest. Memory holds one chunk at a time."""

    checkpoint_note: str
    mtime: int
    files: list[dict[str, Any]] = field(default_factory=list)
    chunks: int = 0
    events: int = 0
    runs: int = 0
    readable: bool = False

    def _member(self, name: str, data: bytes) -> bytes:
        self.files.append(
            {"name": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        )
        return tar_member(name, data, self.mtime)

    def start(self) -> bytes:
        checkpoint = note.Checkpoint.parse(
            self.checkpoint_note[: self.checkpoint_note.index("\n\n") + 1]
        )
        readme = README.format(
            format=BUNDLE_FORMAT, checkpoint=f"{checkpoint.origin}, size {checkpoint.size}"
        )
        return self._member(README_FILE, readme.encode()) + self._member(
            CHECKPOINT_FILE, self.checkpoint_note.encode()
        )

    def chunk(
        self,
        entries: Sequence[BundleEntry],
        proofs: Sequence[RunProof],
        rows: Sequence[ReadableRow] | None,
    ) -> bytes:
        names = chunk_files(self.chunks)
        self.chunks += 1
        self.events += len(entries)
        self.runs += len(proofs)
        out = [
            self._member(names[0], "".join(e.line() for e in entries).encode()),
            self._member(names[1], "".join(p.line() for p in proofs).encode()),
        ]
        if rows is not None:
            self.readable = True
            out.append(self._member(names[2], "".join(r.line() for r in rows).encode()))
        return b"".join(out)

    def finish(self, end: RunProof, info: Mapping[str, Any], signer: note.Signer) -> bytes:
        """The final proof, the signed manifest and the end-of-archive blocks."""
        last = self._member(END_PROOF_FILE, end.line().encode())
        checkpoint = note.Checkpoint.parse(
            self.checkpoint_note[: self.checkpoint_note.index("\n\n") + 1]
        )
        manifest = {
            **info,
            "bundle": BUNDLE_FORMAT,
            "origin": checkpoint.origin,
            "checkpoint": {
                "file": CHECKPOINT_FILE,
                "size": checkpoint.size,
                "root": _b64(checkpoint.root_hash),
            },
            "order": "log position",
            "events": self.events,
            "runs": self.runs,
            "chunks": self.chunks,
            "readable_rows": self.readable,
            "files": self.files,
        }
        text = f"{MANIFEST_TITLE}\n{canonical_json(manifest).decode()}\n"
        signed = note.sign_note(text, [signer])
        return (
            last
            + tar_member(MANIFEST_FILE, signed.encode(), self.mtime)
            + b"\0" * (2 * tarfile.BLOCKSIZE)
        )


# --- verifying -------------------------------------------------------------------------

EXIT_OK, EXIT_TAMPERED, EXIT_CANNOT_VERIFY, EXIT_USAGE = 0, 1, 2, 3


class CannotVerify(Exception):
    """Nothing can be concluded: unknown key, unreadable or incomplete file (exit 2)."""


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class ChunkResult:
    """What a worker found in one chunk: problems, and each run folded into its pieces."""

    index: int
    problems: list[str]
    runs: list[tuple[int, int, tuple[bytes, ...], CompactRange]]
    events: int
    rows_checked: int
    opened: int


def _lines(data: bytes, name: str, problems: list[str]) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) of an NDJSON file; bad lines are problems."""
    if not data:
        return
    if not data.endswith(b"\n"):
        problems.append(f"{name}: does not end with a newline")
    for number, raw in enumerate(data.removesuffix(b"\n").split(b"\n"), 1):
        try:
            yield number, json.loads(raw)
        except ValueError:
            problems.append(f"{name} line {number}: not JSON")


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} is not a non-negative integer")
    return value


def check_chunk(
    index: int, entries_data: bytes, proofs_data: bytes | None, events_data: bytes | None
) -> ChunkResult:
    """Everything about one chunk that does not depend on the others: leaf hashes, runs
    folded into subtree pieces, readable rows against their entries. Runs in a worker."""
    names = chunk_files(index)
    problems: list[str] = []
    entries: list[tuple[int, bytes, bytes]] = []  # position, leaf hash, entry
    previous = -1
    if not entries_data:
        problems.append(f"{names[0]}: empty")
    for number, record in _lines(entries_data, names[0], problems):
        where = f"{names[0]} line {number}"
        try:
            if not isinstance(record, dict) or set(record) != {"position", "leaf_hash", "entry"}:
                raise ValueError("not {position, leaf_hash, entry}")
            position = _int(record["position"], "position")
            leaf = _unb64(record["leaf_hash"], "leaf_hash")
            entry = _unb64(record["entry"], "entry")
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if position <= previous:
            problems.append(f"{where}: position {position} is not after {previous}")
            continue
        previous = position
        computed = hashlib.sha256(b"\x00" + entry).digest()
        if not hmac.compare_digest(computed, leaf):
            problems.append(
                f"position {position} ({_event_label(entry)}): the entry does not hash to "
                "its leaf hash (the entry was altered)"
            )
        entries.append((position, leaf, entry))

    runs: list[tuple[int, int, tuple[bytes, ...], CompactRange]] = []
    if proofs_data is None:
        problems.append(f"{names[1]}: missing")
    else:
        cursor = 0
        for number, record in _lines(proofs_data, names[1], problems):
            where = f"{names[1]} line {number}"
            try:
                if not isinstance(record, dict) or set(record) != {"start", "end", "gap"}:
                    raise ValueError("not {start, end, gap}")
                start, end = _int(record["start"], "start"), _int(record["end"], "end")
                if not isinstance(record["gap"], list):
                    raise ValueError("gap is not a list")
                gap = tuple(_unb64(h, "a gap hash") for h in record["gap"])
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
                continue
            run = entries[cursor : cursor + (end - start)]
            if end <= start or [p for p, _, _ in run] != list(range(start, end)):
                problems.append(
                    f"{where}: run [{start}, {end}) does not match the positions in {names[0]}"
                )
                continue
            cursor += end - start
            folded = CompactRange(start)
            folded.push_leaves(leaf for _, leaf, _ in run)
            runs.append((start, end, gap, folded))
        if cursor != len(entries):
            problems.append(f"{names[1]}: its runs cover {cursor} of {len(entries)} entries")

    rows_checked = opened = 0
    if events_data is not None:
        by_position = {p: e for p, _, e in entries}
        seen = 0
        for number, record in _lines(events_data, names[2], problems):
            where = f"{names[2]} line {number}"
            seen += 1
            try:
                position, event, day, subject, kept = _parse_row(record)
                logged = by_position.get(position)
                if logged is None:
                    raise ValueError(f"position {position} has no entry in {names[0]}")
                commitments = opened_commitments(event, day, subject, kept)
                expected = encode_entry(event, commitments)
            except (ValueError, TypeError, KeyError) as exc:
                problems.append(f"{where}: {exc}")
                continue
            rows_checked += 1
            opened += sum(
                c is not None
                for c in (
                    commitments.ip,
                    commitments.user_agent,
                    commitments.actor_name,
                    commitments.actor_id,
                )
            )
            if expected != logged:
                fields = ", ".join(_differing_fields(expected, logged))
                problems.append(
                    f"position {position} (event {event.get('event_id')}): the readable row "
                    f"differs from its entry in {fields}"
                )
        if seen != len(entries):
            problems.append(f"{names[2]}: {seen} rows for {len(entries)} entries")
    return ChunkResult(index, problems, runs, len(entries), rows_checked, opened)


_KEPT_FIELDS = ("ip", "user_agent", "actor_id", "actor_name")


def kept_json(kept: Commitments) -> dict[str, str]:
    """A readable row's "kept" member: the commitments retention kept, base64, by field."""
    return {
        name: _b64(value) for name in _KEPT_FIELDS if (value := getattr(kept, name)) is not None
    }


def _parse_row(
    record: Any,
) -> tuple[int, dict[str, Any], bytes | None, bytes | None, Commitments | None]:
    if not isinstance(record, dict) or set(record) - {"kept"} != {"position", "event", "salts"}:
        raise ValueError("not {position, event, salts[, kept]}")
    kept: Commitments | None = None
    if "kept" in record:
        given = record["kept"]
        if not isinstance(given, dict) or not set(given) <= set(_KEPT_FIELDS):
            raise ValueError(f"kept is not an object of {', '.join(_KEPT_FIELDS)}")
        kept = Commitments(**{k: _unb64(v, f"kept {k}") for k, v in given.items()})
    salts = record["salts"]
    if not isinstance(salts, dict) or set(salts) != {"day", "subject"}:
        raise ValueError("salts is not {day, subject}")
    day = None if salts["day"] is None else _unb64(salts["day"], "day salt")
    subject = None if salts["subject"] is None else _unb64(salts["subject"], "subject salt")
    event = _event_from_row(record["event"])
    return _int(record["position"], "position"), event, day, subject, kept


def _event_label(entry: bytes) -> str:
    try:
        fields = json.loads(entry)
        return f"event {fields[2]}"
    except (ValueError, IndexError, KeyError, TypeError):
        return "an entry that is not JSON"


class Damaged(Exception):
    """The archive itself was altered or corrupted past reading (exit 1)."""


def _read_members(fileobj: IO[bytes]) -> Iterator[tuple[str, bytes]]:
    """(name, data) of the bundle's members, in order, each read whole (chunk-sized)."""
    try:
        tar = tarfile.open(fileobj=fileobj, mode="r|*")  # noqa: SIM115 - closed below
    except tarfile.ReadError as exc:
        raise CannotVerify(f"not a tar archive (nor a gzip of one): {exc}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise CannotVerify(f"cannot read the bundle: {exc}") from None
    try:
        while True:
            offset = tar.offset
            member = tar.next()
            if member is None:
                # tarfile ends quietly at a header that does not check out: anything but the
                # zero blocks after it means a header was altered, not the archive's end.
                if _rest_is_zeros(tar):
                    return
                raise Damaged(
                    f"the tar structure is damaged at byte {offset}: a file header there does "
                    "not check out (altered or corrupted bytes)"
                )
            if not member.isfile():
                yield member.name, b""  # reported as a file the manifest does not list
                continue
            if member.size > MAX_MEMBER_BYTES:
                raise CannotVerify(f"{member.name}: {member.size} bytes is too large for a bundle")
            extracted = tar.extractfile(member)
            assert extracted is not None
            data = extracted.read()
            if len(data) != member.size:
                raise CannotVerify(
                    _TRUNCATED.format(f"{member.name} has {len(data)} of {member.size} bytes")
                )
            yield member.name, data
    except tarfile.ReadError as exc:
        raise CannotVerify(
            _TRUNCATED.format(exc)
            if "unexpected end" in str(exc)
            else f"the bundle cannot be read: {exc}"
        ) from None
    except (EOFError, zlib.error) as exc:
        raise CannotVerify(_TRUNCATED.format(exc)) from None
    except OSError as exc:
        raise CannotVerify(f"the bundle cannot be read: {exc}") from None
    finally:
        tar.close()


_TRUNCATED = "the bundle is truncated ({}): download it again"


def _rest_is_zeros(tar: tarfile.TarFile) -> bool:
    stream: Any = tar.fileobj
    while block := stream.read(64 * 1024):
        if block.strip(b"\0"):
            return False
    return True


class _InProcess(Executor):
    """An Executor that runs each call at once (jobs=1: no worker processes)."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed back to the caller through the future
            future.set_exception(exc)
        return future


def verify_bundle(
    fileobj: IO[bytes],
    verifiers: Sequence[note.Verifier],
    *,
    jobs: int = 1,
) -> Report:
    """Check a bundle against the trusted `verifiers` (type 0x01 for the checkpoint and the
    manifest; type 0x04 ones also check the checkpoint's cosignatures). Returns the problems
    found (tampering or damage); raises CannotVerify when nothing can be concluded."""
    executor: Executor = (
        _InProcess()
        if jobs <= 1
        # spawn: a fresh interpreter per worker, as on macOS and Windows; forking a process
        # that has threads (a test runner, an embedding app) can deadlock.
        else ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
    )
    try:
        return _Verification(verifiers, executor, max(1, jobs)).run(fileobj)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


class _Verification:
    def __init__(self, verifiers: Sequence[note.Verifier], executor: Executor, jobs: int) -> None:
        self.verifiers = list(verifiers)
        self.executor = executor
        self.window = 2 * jobs  # chunks in flight: bounds memory with worker processes
        self.report = Report()
        self.problems = self.report.problems
        self.order: list[str] = []  # every file before the manifest, in bundle order
        self.digests: dict[str, tuple[str, int]] = {}
        self.checkpoint_seen = False
        self.checkpoint: note.Checkpoint | None = None
        self.ranges: RangeVerifier | None = None
        self.pending: list[Future[ChunkResult]] = []
        self.chunk: dict[str, bytes] = {}
        self.chunk_index = 0
        self.events = self.rows = self.opened = 0
        self.end_proof: bytes | None = None
        self.manifest: bytes | None = None
        self.after_manifest: list[str] = []

    def run(self, fileobj: IO[bytes]) -> Report:
        try:
            for name, data in _read_members(fileobj):
                self._take(name, data)
        except Damaged as exc:
            self._drain(0)
            self.problems.append(str(exc))
            return self.report
        self._flush_chunk()
        self._drain(0)
        if self.manifest is None:
            raise CannotVerify(
                "the bundle has no manifest (the last file): it is incomplete, download it again"
            )
        if not self.checkpoint_seen:
            self.problems.append(f"{CHECKPOINT_FILE}: missing")
        self._check_manifest(self.manifest)
        self._check_root()
        self.report.facts.update(
            events=self.events, rows_checked=self.rows, personal_values_opened=self.opened
        )
        return self.report

    def _take(self, name: str, data: bytes) -> None:
        """One member, in bundle order."""
        if self.manifest is not None:
            self.after_manifest.append(name)
            return
        if name == MANIFEST_FILE:
            if len(data) > MAX_MANIFEST_BYTES:
                raise CannotVerify("the manifest is too large to be one")
            self.manifest = data
            return
        if name in self.digests:
            self.problems.append(f"{name}: appears twice")
            return
        self.digests[name] = (hashlib.sha256(data).hexdigest(), len(data))
        self.order.append(name)
        if name == CHECKPOINT_FILE:
            self.checkpoint_seen = True
            self._open_checkpoint(data)
        elif name == END_PROOF_FILE:
            self._flush_chunk()
            self.end_proof = data
        elif name.startswith(("entries/", "proofs/", "events/")):
            self._chunk_member(name, data)
        # Anything else is an extra file: reported against the manifest's list.

    def _open_checkpoint(self, data: bytes) -> None:
        self.checkpoint = open_trusted_checkpoint(data, self.verifiers, self.report)
        if self.checkpoint is not None:
            self.ranges = RangeVerifier(self.checkpoint.size)

    def _chunk_member(self, name: str, data: bytes) -> None:
        kind, _, rest = name.partition("/")
        number = rest.removesuffix(".ndjson")
        if not (rest.endswith(".ndjson") and number.isdigit() and len(number) == 6):
            return  # not a chunk file: an extra file
        if int(number) != self.chunk_index:
            self._flush_chunk()
        if int(number) != self.chunk_index:
            self.problems.append(f"{name}: chunk {int(number)} where {self.chunk_index} belongs")
            self.chunk_index = int(number)
        if kind in self.chunk:
            self.problems.append(f"{name}: appears twice")
            return
        self.chunk[kind] = data

    def _flush_chunk(self) -> None:
        if not self.chunk:
            return
        chunk, self.chunk = self.chunk, {}
        index = self.chunk_index
        self.chunk_index += 1
        if not self.checkpoint_seen:
            self.problems.append(f"{chunk_files(index)[0]}: comes before the checkpoint")
        if "entries" not in chunk:
            self.problems.append(f"{chunk_files(index)[0]}: missing")
            return
        self._drain(self.window)
        self.pending.append(
            self.executor.submit(
                check_chunk, index, chunk["entries"], chunk.get("proofs"), chunk.get("events")
            )
        )

    def _drain(self, keep: int) -> None:
        while len(self.pending) > keep:
            result = self.pending.pop(0).result()
            self.problems.extend(result.problems)
            self.events += result.events
            self.rows += result.rows_checked
            self.opened += result.opened
            if self.ranges is not None and not fold_runs(
                self.ranges, result, self.problems, chunk_files(result.index)[1]
            ):
                self.ranges = None  # the fold is broken: every later run would fail too

    def _check_root(self) -> None:
        if self.checkpoint is None or self.ranges is None:
            return
        check_end_proof(self.ranges, self.checkpoint, self.end_proof, self.report, END_PROOF_FILE)

    def _check_manifest(self, data: bytes) -> None:
        try:
            signed = note.open_note(data, self.verifiers)
        except note.UnverifiedNote:
            raise CannotVerify(
                f"the manifest is not signed by any key given with --vkey ({_signers(data)})"
            ) from None
        except note.NoteError as exc:
            self.problems.append(f"manifest: {exc} (the manifest was altered)")
            return
        self.report.facts["manifest_signed_by"] = [
            f"{s.name}+{s.key_id:08x}" for s in signed.verified
        ]
        title, _, body = signed.text.partition("\n")
        try:
            if title != MANIFEST_TITLE:
                raise ValueError(f"its first line is not {MANIFEST_TITLE!r}")
            manifest = json.loads(body)
            if not isinstance(manifest, dict) or manifest.get("bundle") != BUNDLE_FORMAT:
                raise ValueError(f"it is not a {BUNDLE_FORMAT} manifest")
            files = manifest["files"]
            listed = {f["name"]: (f["sha256"], f["size"]) for f in files}
            order = [f["name"] for f in files]
            checkpoint = manifest["checkpoint"]
        except (ValueError, KeyError, TypeError) as exc:
            # Signed by a trusted key yet not a manifest: a note of another kind.
            raise CannotVerify(f"the manifest cannot be read: {exc}") from None
        for key in ("filters", "exported_by", "exported_at", "events", "not_in_bundle"):
            if key in manifest:
                self.report.facts[key] = manifest[key]
        for name, (digest, size) in listed.items():
            got = self.digests.get(name)
            if got is None:
                self.problems.append(f"{name}: listed in the manifest but missing from the bundle")
            elif got[1] != size or not hmac.compare_digest(got[0], str(digest)):
                sizes = f" ({got[1]} bytes, the manifest says {size})" if got[1] != size else ""
                self.problems.append(f"{name}: its SHA-256 differs from the signed manifest{sizes}")
        for name in self.digests:
            if name not in listed:
                self.problems.append(f"{name}: an extra file, not in the signed manifest")
        for name in self.after_manifest:
            self.problems.append(f"{name}: an extra file after the manifest")
        if [n for n in self.order if n in listed] != [n for n in order if n in self.digests]:
            self.problems.append("the files are not in the order the manifest lists them")
        if self.checkpoint is not None:
            if manifest.get("origin") != self.checkpoint.origin:
                self.problems.append("the manifest names another log (origin) than the checkpoint")
            if (checkpoint.get("size"), checkpoint.get("root")) != (
                self.checkpoint.size,
                _b64(self.checkpoint.root_hash),
            ):
                self.problems.append(
                    "the checkpoint is not the one the manifest was signed for "
                    "(its size or root differ)"
                )
        if manifest.get("events") != self.events:
            self.problems.append(
                f"the manifest counts {manifest.get('events')} events, "
                f"the bundle holds {self.events}"
            )


# --- shared with other offline verifiers (retention's archive segments) --------------------


def open_trusted_checkpoint(
    data: bytes, verifiers: Sequence[note.Verifier], report: Report
) -> note.Checkpoint | None:
    """Open a signed checkpoint with the trusted keys, its facts into `report`. None (and a
    problem) when it is malformed or its signature is bad; CannotVerify when no given key
    signed it."""
    try:
        checkpoint, signed = note.open_checkpoint(data, verifiers)
    except note.UnverifiedNote:
        raise CannotVerify(
            f"the checkpoint is not signed by any key given with --vkey "
            f"({_signers(data)}); ask the log's operator for its verifier key"
        ) from None
    except note.NoteError as exc:
        report.problems.append(f"checkpoint: {exc}")
        return None
    report.facts.update(
        origin=checkpoint.origin,
        tree_size=checkpoint.size,
        root=_b64(checkpoint.root_hash),
        checkpoint_signed_by=[f"{s.name}+{s.key_id:08x}" for s in signed.verified],
    )
    try:
        cosigned = note.find_cosignatures(data.decode(), verifiers)
    except (note.NoteError, UnicodeDecodeError) as exc:
        report.problems.append(f"checkpoint cosignature: {exc}")
        return checkpoint
    if cosigned:
        newest = max(cosigned.values())
        report.facts["cosigned_at"] = datetime.fromtimestamp(newest, UTC).isoformat()
    return checkpoint


def fold_runs(ranges: RangeVerifier, result: ChunkResult, problems: list[str], where: str) -> bool:
    """Fold a checked chunk's runs into `ranges`; False (and a problem) when the proof breaks."""
    for start, end, gap, folded in result.runs:
        try:
            ranges.pieces(start, end, gap, folded)
        except ProofFailure as exc:
            problems.append(f"{where}: {exc}")
            return False
    return True


def check_end_proof(
    ranges: RangeVerifier,
    checkpoint: note.Checkpoint,
    end_proof: bytes | None,
    report: Report,
    where: str,
) -> None:
    """The final gap record `{"start": size, "end": size, "gap": [...]}`: fold it and compare
    the root with the signed checkpoint's."""
    problems = report.problems
    if end_proof is None:
        problems.append(f"{where}: missing")
        return
    try:
        record = json.loads(end_proof)
        if not isinstance(record, dict) or set(record) != {"start", "end", "gap"}:
            raise ValueError("not {start, end, gap}")
        start, end = _int(record["start"], "start"), _int(record["end"], "end")
        if not (start == end == checkpoint.size) or not isinstance(record["gap"], list):
            raise ValueError(f"must be the run [{checkpoint.size}, {checkpoint.size})")
        gap = [_unb64(h, "a gap hash") for h in record["gap"]]
        root = ranges.finish(gap)
    except (ValueError, ProofFailure) as exc:
        problems.append(f"{where}: {exc}")
        return
    report.facts["runs"] = ranges.runs
    if not hmac.compare_digest(root, checkpoint.root_hash):
        problems.append(
            f"the entries and proofs lead to root {_b64(root)}, not the checkpoint's root "
            f"{_b64(checkpoint.root_hash)} (size {checkpoint.size}): an entry, a "
            "leaf hash or a proof hash was changed, added or removed"
        )


def _signers(data: bytes) -> str:
    """Who signed a note, for an error message: `name+keyid` of each signature line."""
    try:
        text = data.decode()
        _, _, block = text.rpartition("\n\n")
        names = []
        for line in block.splitlines():
            name, _, blob = line.removeprefix(note.SIG_PREFIX).partition(" ")
            raw = base64.b64decode(blob)
            names.append(f"{name}+{int.from_bytes(raw[:4], 'big'):08x}")
        return "signed by " + ", ".join(names) if names else "no signatures"
    except (ValueError, UnicodeDecodeError, binascii.Error):
        return "its signature lines are unreadable"


def default_jobs() -> int:
    return max(1, min(4, os.cpu_count() or 1))
