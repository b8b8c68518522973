"""C2SP signed notes, tlog checkpoints and tlog cosignatures (Ed25519 via `cryptography`).

Formats (c2sp.org/signed-note, golang.org/x/mod/sumdb/note, c2sp.org/tlog-checkpoint,
c2sp.org/tlog-cosignature):

- key ID = SHA-256(name ‖ "\\n" ‖ type ‖ public key)[:4], big-endian; type 0x01 = Ed25519 note
  signature, 0x04 = timestamped Ed25519 cosignature;
- verifier key (vkey) = ``<name>+<key ID hex>+<base64(type ‖ public key)>``;
- signer key = ``PRIVATE+KEY+<name>+<key ID hex>+<base64(type ‖ 32-byte seed)>`` (the Go
  format, so `AUDIT_LOG_SIGNING_KEY` can come from Go tooling);
- signed note = text ending in "\\n", a blank line, then lines
  ``— <name> <base64(key ID ‖ signature)>`` ("— " is U+2014 U+0020);
- checkpoint body = origin, tree size (decimal, no leading zeros), base64 root, then optional
  non-empty extension lines, each ending in "\\n";
- cosignature (type 0x04) signs ``cosignature/v1\\ntime <t>\\n`` ‖ checkpoint body and its
  signature bytes are the 8-byte big-endian timestamp ‖ the 64-byte Ed25519 signature.

Several signatures per note are how keys rotate: sign with the new key and the old one,
publish the new vkey, then drop the old signature. `open_note` checks every signature whose
(name, key ID) it knows, ignores the others as the spec requires, and rejects the note if a
known key's signature fails or if no known key signed it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audit_service.integrity.merkle import HASH_SIZE

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
SIGNATURE_TYPES = (ED25519, COSIGNATURE_V1)
MAX_SIGNATURES = 100  # the spec asks for at least 16; Go's reader allows 100
SIG_PREFIX = "\u2014 "
MAX_TIMESTAMP = 2**63 - 1


class NoteError(ValueError):
    """A key, note, checkpoint or signature that is malformed or does not verify."""


class MalformedNote(NoteError):
    pass


class UnverifiedNote(NoteError):
    """Well formed, but not signed by any key the caller trusts."""


class InvalidNoteSignature(NoteError):
    """A trusted key's signature on the note does not verify: the note is forged or altered."""


def _valid_name(name: str) -> bool:
    return (
        bool(name)
        and "+" not in name
        and not any(c.isspace() or c < " " for c in name)
        and _encodable(name)
    )


def key_id(name: str, sig_type: int, public_key: bytes) -> int:
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def _b64decode(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise NoteError(f"{what} is not valid base64") from None
    # Only the canonical spelling: padding bits must be zero, so one value has one text.
    if base64.b64encode(raw).decode() != text:
        raise NoteError(f"{what} is not canonical base64")
    return raw


def _parse_key_parts(name: str, hash_hex: str, key_b64: str, what: str) -> tuple[int, bytes]:
    if not _valid_name(name):
        raise NoteError(f"{what}: key name must be non-empty, without spaces or '+'")
    if not re.fullmatch(r"[0-9a-f]{8}", hash_hex):
        raise NoteError(f"{what}: key ID must be 8 lowercase hex digits")
    raw = _b64decode(key_b64, f"{what} key material")
    if len(raw) != 33:
        raise NoteError(f"{what}: key material must be a type byte and 32 key bytes")
    if raw[0] not in SIGNATURE_TYPES:
        raise NoteError(f"{what}: unsupported signature type 0x{raw[0]:02x}")
    return int(hash_hex, 16), raw


@dataclass(frozen=True)
class Verifier:
    name: str
    key_id: int
    sig_type: int
    public_key: bytes = field(repr=False)

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        # The base64 key may itself contain '+': only the first two are separators.
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise NoteError("vkey must be <name>+<key ID>+<base64 key>")
        kid, raw = _parse_key_parts(parts[0], parts[1], parts[2], "vkey")
        if key_id(parts[0], raw[0], raw[1:]) != kid:
            raise NoteError("vkey key ID does not match its name and key")
        return cls(parts[0], kid, raw[0], raw[1:])

    def with_type(self, sig_type: int) -> Verifier:
        """The same public key for another signature type (its key ID differs)."""
        return Verifier(
            self.name, key_id(self.name, sig_type, self.public_key), sig_type, self.public_key
        )

    @property
    def vkey(self) -> str:
        material = base64.b64encode(bytes([self.sig_type]) + self.public_key).decode()
        return f"{self.name}+{self.key_id:08x}+{material}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


class Signer:
    """An Ed25519 key with a name; type 0x01 signs notes, 0x04 cosigns checkpoints."""

    def __init__(self, name: str, seed: bytes, sig_type: int = ED25519) -> None:
        if not _valid_name(name):
            raise NoteError("key name must be non-empty, without spaces or '+'")
        if len(seed) != 32:
            raise NoteError("Ed25519 seed must be 32 bytes")
        if sig_type not in SIGNATURE_TYPES:
            raise NoteError(f"unsupported signature type 0x{sig_type:02x}")
        self.name = name
        self.sig_type = sig_type
        self._seed = bytes(seed)
        self._key = Ed25519PrivateKey.from_private_bytes(self._seed)
        self.public_key = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = key_id(name, sig_type, self.public_key)

    def __repr__(self) -> str:  # never the seed
        return f"Signer({self.name!r}, key_id={self.key_id:08x}, type=0x{self.sig_type:02x})"

    @classmethod
    def generate(cls, name: str, sig_type: int = ED25519) -> Signer:
        return cls(name, secrets.token_bytes(32), sig_type)

    @classmethod
    def from_private_key(cls, skey: str) -> Signer:
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("private key must be PRIVATE+KEY+<name>+<key ID>+<base64 key>")
        kid, raw = _parse_key_parts(parts[2], parts[3], parts[4], "private key")
        signer = cls(parts[2], raw[1:], raw[0])
        if signer.key_id != kid:
            raise NoteError("private key ID does not match its name and public key")
        return signer

    def with_type(self, sig_type: int) -> Signer:
        """The same key for another signature type (0x04: cosignatures of our own notes)."""
        return Signer(self.name, self._seed, sig_type)

    @property
    def private_key(self) -> str:
        material = base64.b64encode(bytes([self.sig_type]) + self._seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{material}"

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, self.key_id, self.sig_type, self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: int
    signature: bytes  # without the 4-byte key ID

    @property
    def line(self) -> str:
        blob = base64.b64encode(self.key_id.to_bytes(4, "big") + self.signature).decode()
        return f"{SIG_PREFIX}{self.name} {blob}\n"


@dataclass(frozen=True)
class Note:
    text: str
    verified: tuple[Signature, ...]
    unverified: tuple[Signature, ...]


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise MalformedNote("note text must end with a newline")
    if any(c < " " and c != "\n" for c in text):
        raise MalformedNote("note text must not contain control characters other than newline")


def _sign_one(text: str, signer: Signer) -> Signature:
    if signer.sig_type != ED25519:
        raise NoteError("note signatures use type 0x01 keys; use cosign() for 0x04 keys")
    return Signature(signer.name, signer.key_id, signer.sign(text.encode()))


def sign_note(text: str, signers: Sequence[Signer], keep: Iterable[Signature] = ()) -> str:
    """The signed note: `text` with a signature line per signer (after the kept ones)."""
    _check_text(text)
    if not signers and not keep:
        raise NoteError("a signed note needs at least one signature")
    sigs = [s for s in keep if all((s.name, s.key_id) != (g.name, g.key_id) for g in signers)]
    sigs += [_sign_one(text, s) for s in signers]
    return text + "\n" + "".join(s.line for s in sigs)


def add_signatures(note: str, signatures: Iterable[Signature]) -> str:
    """A signed note with extra signature lines appended (e.g. cosignatures), deduplicated."""
    text, sigs = _split_note(note)
    have = {s.line for s in sigs}
    new = [s.line for s in signatures if s.line not in have]
    return text + "\n" + "".join(s.line for s in sigs) + "".join(dict.fromkeys(new))


def _split_note(message: str) -> tuple[str, list[Signature]]:
    if any(c < " " and c != "\n" for c in message):
        raise MalformedNote("note contains control characters other than newline")
    split = message.rfind("\n\n")
    if split < 0:
        raise MalformedNote("note has no blank line before its signatures")
    text, block = message[: split + 1], message[split + 2 :]
    if not block or not block.endswith("\n"):
        raise MalformedNote("note signature block is empty or does not end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNote(f"note has more than {MAX_SIGNATURES} signatures")
    sigs = []
    for number, line in enumerate(lines, 1):
        if not line.startswith(SIG_PREFIX):
            raise MalformedNote(f"signature line {number} does not start with '— '")
        name, sep, blob = line[len(SIG_PREFIX) :].partition(" ")
        if not sep or not _valid_name(name) or not blob:
            raise MalformedNote(f"signature line {number} is not '— <name> <base64>'")
        try:
            raw = _b64decode(blob, f"signature line {number}")
        except NoteError as exc:
            raise MalformedNote(str(exc)) from None
        if len(raw) < 5:
            raise MalformedNote(f"signature line {number} is too short")
        sigs.append(Signature(name, int.from_bytes(raw[:4], "big"), raw[4:]))
    return text, sigs


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def open_note(message: str | bytes, verifiers: Iterable[Verifier]) -> Note:
    """Parse a signed note and check its signatures against the trusted `verifiers`.

    Only type 0x01 verifiers are used here; cosignatures are checked by `open_cosignature`.
    """
    if isinstance(message, bytes):
        try:
            message = message.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedNote("note is not valid UTF-8") from None
    elif not _encodable(message):  # a str may hold lone surrogates, which UTF-8 cannot
        raise MalformedNote("note is not valid UTF-8")
    text, sigs = _split_note(message)
    known: dict[tuple[str, int], list[Verifier]] = {}
    for v in verifiers:
        if v.sig_type == ED25519:
            known.setdefault((v.name, v.key_id), []).append(v)
    verified: dict[tuple[str, int], Signature] = {}
    unverified: dict[Signature, None] = {}
    payload = text.encode()
    for sig in sigs:
        ident = (sig.name, sig.key_id)
        if ident not in known:
            unverified.setdefault(sig)
            continue
        if len(known[ident]) > 1:
            raise NoteError(f"ambiguous key {sig.name}+{sig.key_id:08x}")
        if ident in verified:
            continue
        if not known[ident][0].verify(payload, sig.signature):
            raise InvalidNoteSignature(f"invalid signature for key {sig.name}+{sig.key_id:08x}")
        verified[ident] = sig
    if not verified:
        raise UnverifiedNote("note has no signature by a trusted key")
    return Note(text, tuple(verified.values()), tuple(unverified))


# --- checkpoints -----------------------------------------------------------------------

_SIZE = re.compile(r"0|[1-9][0-9]*")


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise NoteError("checkpoint origin must be one non-empty line")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise NoteError("checkpoint size must be a non-negative integer")
        if len(self.root_hash) != HASH_SIZE:
            raise NoteError(f"checkpoint root must be {HASH_SIZE} bytes")
        for ext in self.extensions:
            if not ext or "\n" in ext:
                raise NoteError("checkpoint extension lines must be single non-empty lines")

    @property
    def body(self) -> str:
        root = base64.b64encode(self.root_hash).decode()
        return "".join(f"{line}\n" for line in (self.origin, self.size, root, *self.extensions))

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        """Parse a checkpoint note text (the body, without signatures)."""
        _check_text(body)
        lines = body[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError("checkpoint must have origin, size and root lines")
        origin, size, root, *extensions = lines
        if not origin:
            raise NoteError("checkpoint origin line is empty")
        if not _SIZE.fullmatch(size):
            raise NoteError("checkpoint size must be decimal without leading zeros")
        raw = _b64decode(root, "checkpoint root")
        if len(raw) != HASH_SIZE:
            raise NoteError(f"checkpoint root must be {HASH_SIZE} bytes")
        return cls(origin, int(size), raw, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signers: Sequence[Signer]) -> str:
    return sign_note(checkpoint.body, signers)


def open_checkpoint(
    message: str | bytes, verifiers: Iterable[Verifier], origin: str | None = None
) -> tuple[Checkpoint, Note]:
    """A verified checkpoint; `origin`, if given, must match (a checkpoint of another log
    signed by a shared key must not be accepted for this one)."""
    note = open_note(message, verifiers)
    checkpoint = Checkpoint.parse(note.text)
    if origin is not None and checkpoint.origin != origin:
        raise NoteError(f"checkpoint origin {checkpoint.origin!r} is not {origin!r}")
    return checkpoint, note


# --- cosignatures (c2sp.org/tlog-cosignature, Ed25519 v1) -----------------------------


def cosignature_message(body: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n{body}".encode()


def cosign(checkpoint: Checkpoint, signer: Signer, timestamp: int) -> Signature:
    """A timestamped cosignature: "as of `timestamp` (POSIX seconds), this is the largest
    consistent tree I have seen for this origin"."""
    if signer.sig_type != COSIGNATURE_V1:
        raise NoteError("cosignatures need a type 0x04 key")
    if isinstance(timestamp, bool) or not 0 <= timestamp <= MAX_TIMESTAMP:
        raise NoteError(f"cosignature timestamp must be 0..2^63-1, got {timestamp}")
    sig = signer.sign(cosignature_message(checkpoint.body, timestamp))
    return Signature(signer.name, signer.key_id, timestamp.to_bytes(8, "big") + sig)


def open_cosignature(body: str, signature: Signature, verifier: Verifier) -> int:
    """The timestamp of a valid cosignature on checkpoint `body`; NoteError otherwise."""
    if verifier.sig_type != COSIGNATURE_V1:
        raise NoteError("cosignatures are verified with type 0x04 keys")
    if (signature.name, signature.key_id) != (verifier.name, verifier.key_id):
        raise NoteError("cosignature is by another key")
    if len(signature.signature) != 8 + 64:
        raise InvalidNoteSignature("cosignature must be an 8-byte timestamp and 64 bytes")
    timestamp = int.from_bytes(signature.signature[:8], "big")
    if timestamp > MAX_TIMESTAMP:
        raise InvalidNoteSignature("cosignature timestamp exceeds 2^63-1")
    if not verifier.verify(cosignature_message(body, timestamp), signature.signature[8:]):
        raise InvalidNoteSignature(f"invalid cosignature by {verifier.name}+{verifier.key_id:08x}")
    return timestamp


def find_cosignatures(message: str, verifiers: Iterable[Verifier]) -> dict[str, int]:
    """Verify each trusted cosigner's signature on a signed checkpoint note: vkey → timestamp.
    A trusted cosigner's bad signature raises; unknown lines are ignored."""
    text, sigs = _split_note(message)
    out: dict[str, int] = {}
    for v in verifiers:
        if v.sig_type != COSIGNATURE_V1:
            continue
        for sig in sigs:
            if (sig.name, sig.key_id) == (v.name, v.key_id):
                out[v.vkey] = open_cosignature(text, sig, v)
                break
    return out
