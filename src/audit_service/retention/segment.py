"""Archive segments: the file format, and checking segments offline.

A segment holds the events of one retention rule recorded on one UTC day, as gzip NDJSON:

    {"format": "audit-service/archive/v1", "checkpoint": "<signed checkpoint note>"}
    {"position", "leaf_hash", "entry", "event", "salts", "gap"}      one line per event
    {"start": size, "end": size, "gap": [...]}                       the final gap

Each event line is its leaf entry (v1, base64) with its leaf hash and log position, its row
in clear (every entry column: integrity/bundle.py `readable_event`) with the salts that open
its committed personal values, and its inclusion proof in the bundle's range form: `gap` is
the compact range of the positions between the previous line's event and this one (the
subtree hashes of the events this segment leaves out), so the lines fold, left to right,
into the root of the signed checkpoint. That is the proof an export bundle carries, checked
by the same code (`bundle.check_chunk`, `open_trusted_checkpoint`, `fold_runs`,
`check_end_proof`): a changed value, a dropped or added line, or a proof hash that does not
fit, and the fold misses the signed root.

Beside it, `<same name>.manifest` is a signed note (the log's checkpoint key): the segment
file's SHA-256 and size, the rule and day, the event count, id and position range, the
checkpoint, and the SHA-256 of the previous segment's manifest — a chain: a segment removed,
added or swapped for another breaks it (checked when a directory is verified).

Only the standard library and the pure integrity modules are imported: `audit-service
archive verify` runs without a database or the service's configuration.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from audit_service.integrity import bundle, note
from audit_service.integrity.entry import canonical_json

FORMAT = "audit-service/archive/v1"
MANIFEST_TITLE = "audit-service archive manifest v1"
SEGMENT_SUFFIX = ".ndjson.gz"
MANIFEST_SUFFIX = ".manifest"
MAX_SEGMENT_BYTES = 2 * 1024 * 1024 * 1024
_TIMESTAMPS = ("occurred_at", "recorded_at")


def manifest_path(segment: Path) -> Path:
    return segment.with_name(segment.name.removesuffix(SEGMENT_SUFFIX) + MANIFEST_SUFFIX)


def manifest_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- writing ---------------------------------------------------------------------------


def header_line(checkpoint_note: str) -> bytes:
    return json.dumps({"format": FORMAT, "checkpoint": checkpoint_note}).encode() + b"\n"


def event_line(entry: bundle.BundleEntry, row: bundle.ReadableRow, proof: bundle.RunProof) -> bytes:
    salts = {
        "day": None if row.day_salt is None else bundle._b64(row.day_salt),
        "subject": None if row.subject_salt is None else bundle._b64(row.subject_salt),
    }
    record = {
        "position": entry.position,
        "leaf_hash": bundle._b64(entry.leaf_hash),
        "entry": bundle._b64(entry.entry),
        "event": row.event,
        "salts": salts,
        "gap": [bundle._b64(h) for h in proof.gap],
    }
    if row.kept is not None:  # retention kept these commitments (retention/anonymize.py)
        record["kept"] = bundle.kept_json(row.kept)
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def end_line(proof: bundle.RunProof) -> bytes:
    return proof.line().encode()


def sign_manifest(fields: Mapping[str, Any], signer: note.Signer) -> bytes:
    text = f"{MANIFEST_TITLE}\n{canonical_json({**fields, 'archive': FORMAT}).decode()}\n"
    return note.sign_note(text, [signer]).encode()


# --- reading ---------------------------------------------------------------------------


def _event_from_json(event: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(event)
    for name in _TIMESTAMPS:
        out[name] = datetime.fromisoformat(out[name])
    out["event_id"] = uuid.UUID(out["event_id"])
    return out


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of a segment (every entry column; times and event ids parsed), in order.
    Check the segment first (`verify_path`): this only reads it."""
    with gzip.open(path, "rb") as f:
        for number, raw in enumerate(f):
            record = json.loads(raw)
            if number == 0 or "event" not in record:
                continue
            yield _event_from_json(record["event"])


# --- verifying -------------------------------------------------------------------------


@dataclass
class SegmentReport:
    path: Path
    problems: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] | None = None
    manifest_hash: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def _gunzip(path: Path, raw: bytes, report: SegmentReport) -> list[bytes] | None:
    try:
        data = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        report.problems.append(f"{path.name}: not a readable gzip file ({exc}): altered or cut")
        return None
    if not data.endswith(b"\n"):
        report.problems.append(f"{path.name}: does not end with a newline (cut short)")
    return data.removesuffix(b"\n").split(b"\n")


def _split(
    lines: Sequence[bytes], report: SegmentReport
) -> tuple[bytes | None, list[dict[str, Any]], bytes | None]:
    """(checkpoint note, event records, final gap line) of a segment's lines."""
    name = report.path.name
    checkpoint: bytes | None = None
    events: list[dict[str, Any]] = []
    end: bytes | None = None
    for number, raw in enumerate(lines, 1):
        try:
            record = json.loads(raw)
        except ValueError:
            report.problems.append(f"{name} line {number}: not JSON")
            continue
        if not isinstance(record, dict):
            report.problems.append(f"{name} line {number}: not an object")
        elif number == 1:
            if record.get("format") != FORMAT or not isinstance(record.get("checkpoint"), str):
                report.problems.append(f"{name} line 1: not a {FORMAT} header")
            else:
                checkpoint = record["checkpoint"].encode()
        elif set(record) == {"start", "end", "gap"}:
            if number != len(lines):
                report.problems.append(f"{name} line {number}: the final gap is not last")
            end = raw
        elif set(record) - {"kept"} == {"position", "leaf_hash", "entry", "event", "salts", "gap"}:
            record["_line"] = number
            events.append(record)
        else:
            report.problems.append(f"{name} line {number}: not an event line")
    return checkpoint, events, end


def _bundle_streams(events: Sequence[dict[str, Any]]) -> tuple[bytes, bytes, bytes]:
    """The event lines as an export bundle's entries, proofs and events files (one run per
    event: its own position, after its gap), for `bundle.check_chunk`."""
    entries, proofs, rows = [], [], []
    for r in events:
        entries.append(
            json.dumps(
                {"position": r["position"], "leaf_hash": r["leaf_hash"], "entry": r["entry"]}
            )
        )
        position = r["position"]
        end = position + 1 if isinstance(position, int) and not isinstance(position, bool) else 0
        proofs.append(json.dumps({"start": position, "end": end, "gap": r["gap"]}))
        rows.append(
            json.dumps(
                {"position": position, "event": r["event"], "salts": r["salts"]}
                | ({"kept": r["kept"]} if "kept" in r else {}),
                ensure_ascii=False,
            )
        )

    def joined(lines: list[str]) -> bytes:
        return "".join(line + "\n" for line in lines).encode()

    return joined(entries), joined(proofs), joined(rows)


def verify_segment(path: Path, verifiers: Sequence[note.Verifier]) -> SegmentReport:
    """Check one segment and its manifest against the trusted keys. Raises
    bundle.CannotVerify when nothing can be concluded (no trusted key signed it)."""
    report = SegmentReport(path)
    problems = report.problems
    size = path.stat().st_size
    if size > MAX_SEGMENT_BYTES:
        raise bundle.CannotVerify(f"{path}: {size} bytes is too large for a segment")
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    lines = _gunzip(path, raw, report)
    events: list[dict[str, Any]] = []
    if lines is not None:
        checkpoint_data, events, end = _split(lines, report)
        entries, proofs, rows = _bundle_streams(events)
        result = bundle.check_chunk(0, entries, proofs, rows)
        problems.extend(p.replace(bundle.chunk_files(0)[0], path.name) for p in result.problems)
        shared = bundle.Report(problems=problems, facts=report.facts)
        checkpoint = None
        if checkpoint_data is None:
            problems.append(f"{path.name}: no checkpoint")
        else:
            checkpoint = bundle.open_trusted_checkpoint(checkpoint_data, verifiers, shared)
        if checkpoint is not None:
            ranges = bundle.RangeVerifier(checkpoint.size)
            if bundle.fold_runs(ranges, result, problems, path.name):
                bundle.check_end_proof(ranges, checkpoint, end, shared, f"{path.name} final gap")
        report.facts["events"] = result.events
        report.facts["rows_checked"] = result.rows_checked
    _check_manifest(report, digest, size, events, verifiers)
    return report


def _check_manifest(
    report: SegmentReport,
    digest: str,
    size: int,
    events: Sequence[dict[str, Any]],
    verifiers: Sequence[note.Verifier],
) -> None:
    path, problems = report.path, report.problems
    mpath = manifest_path(path)
    try:
        data = mpath.read_bytes()
    except OSError:
        problems.append(f"{mpath.name}: missing (every segment has a signed manifest)")
        return
    report.manifest_hash = manifest_hash(data)
    try:
        signed = note.open_note(data, verifiers)
    except note.UnverifiedNote:
        raise bundle.CannotVerify(
            f"{mpath.name} is not signed by any key given with --vkey ({bundle._signers(data)})"
        ) from None
    except note.NoteError as exc:
        problems.append(f"{mpath.name}: {exc} (the manifest was altered)")
        return
    title, _, body = signed.text.partition("\n")
    try:
        if title != MANIFEST_TITLE:
            raise ValueError(f"its first line is not {MANIFEST_TITLE!r}")
        manifest = json.loads(body)
        if not isinstance(manifest, dict) or manifest.get("archive") != FORMAT:
            raise ValueError(f"it is not a {FORMAT} manifest")
    except ValueError as exc:
        raise bundle.CannotVerify(f"{mpath.name} cannot be read: {exc}") from None
    report.manifest = manifest
    for key in ("policy", "day", "count", "first_id", "last_id", "previous_manifest_hash"):
        report.facts[key] = manifest.get(key)
    report.facts["manifest_hash"] = report.manifest_hash
    if manifest.get("file") != path.name:
        problems.append(f"{mpath.name}: signed for the file {manifest.get('file')!r}")
    if manifest.get("sha256") != digest or manifest.get("size") != size:
        problems.append(f"{path.name}: its SHA-256 or size differs from the signed manifest")
    positions = [r["position"] for r in events]
    ids = [r["event"].get("id") if isinstance(r["event"], dict) else None for r in events]
    actual = {
        "count": len(events),
        "first_position": positions[0] if positions else None,
        "last_position": positions[-1] if positions else None,
        "first_id": min((i for i in ids if isinstance(i, int)), default=None),
        "last_id": max((i for i in ids if isinstance(i, int)), default=None),
    }
    for key, value in actual.items():
        if manifest.get(key) != value:
            problems.append(
                f"{path.name}: {key} is {value}, the signed manifest says {manifest.get(key)}"
            )
    checkpoint = manifest.get("checkpoint") or {}
    if "tree_size" in report.facts and (checkpoint.get("size"), checkpoint.get("root")) != (
        report.facts["tree_size"],
        report.facts.get("root"),
    ):
        problems.append(f"{path.name}: its checkpoint is not the one the manifest was signed for")


def segments_under(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob(f"*{SEGMENT_SUFFIX}") if p.is_file())
    return [path]


@dataclass
class ArchiveReport:
    segments: list[SegmentReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # the chain's

    @property
    def ok(self) -> bool:
        return not self.problems and all(s.ok for s in self.segments)

    @property
    def events(self) -> int:
        return sum(int(s.facts.get("events") or 0) for s in self.segments)


def verify_path(path: Path, verifiers: Sequence[note.Verifier]) -> ArchiveReport:
    """Check a segment file, or every segment under a directory and the manifest chain
    that links them (one chain: one first segment, each other's previous present, no fork)."""
    out = ArchiveReport()
    paths = segments_under(path)
    if not paths:
        raise bundle.CannotVerify(f"{path}: no archive segments (*{SEGMENT_SUFFIX}) there")
    for p in paths:
        out.segments.append(verify_segment(p, verifiers))
    if path.is_dir():
        out.problems.extend(check_chain(out.segments))
    return out


def check_chain(segments: Sequence[SegmentReport]) -> list[str]:
    """The manifests form one chain: exactly one has no previous (the first segment ever
    written, if this directory starts there), every other names a manifest present here,
    and no two name the same one."""
    problems: list[str] = []
    by_hash = {s.manifest_hash: s for s in segments if s.manifest_hash and s.manifest}
    previous_of: dict[str, str] = {}
    firsts = []
    for s in by_hash.values():
        assert s.manifest is not None
        prev = s.manifest.get("previous_manifest_hash")
        if prev is None:
            firsts.append(s)
        elif prev in previous_of:
            problems.append(
                f"{s.path.name} and {previous_of[prev]} both follow the same manifest: "
                "the chain forks (a segment was replaced or added)"
            )
        else:
            previous_of[prev] = s.path.name
            if prev not in by_hash:
                problems.append(
                    f"{s.path.name}: the manifest it follows ({prev[:16]}…) is not here: a "
                    "segment was removed or swapped (or this directory starts mid-chain)"
                )
    if len(firsts) > 1:
        names = ", ".join(s.path.name for s in firsts)
        problems.append(f"more than one segment starts the chain ({names})")
    return problems
