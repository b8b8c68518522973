"""Signed notes, checkpoints and cosignatures against the Go note package's and C2SP's
published vectors, plus round trips and tampering."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from audit_service.integrity import note as n
from audit_service.integrity.merkle import MemoryTree
from audit_service.integrity.note import (
    Checkpoint,
    InvalidNoteSignature,
    MalformedNote,
    NoteError,
    Signer,
    UnverifiedNote,
    Verifier,
)

V: dict[str, Any] = json.loads((Path(__file__).parent / "data" / "note_vectors.json").read_text())
TEXT: str = V["text"]
PETER, ENOCH = V["peter"], V["enoch"]
PETER_V = Verifier.from_vkey(PETER["vkey"])
ENOCH_V = Verifier.from_vkey(ENOCH["vkey"])


def test_go_vectors_keys_parse_and_agree() -> None:
    signer = Signer.from_private_key(PETER["skey"])
    assert (signer.name, f"{signer.key_id:08x}") == (PETER["name"], PETER["key_id"])
    assert signer.verifier == PETER_V
    assert signer.verifier.vkey == PETER["vkey"]
    assert signer.private_key == PETER["skey"]
    assert f"{ENOCH_V.key_id:08x}" == ENOCH["key_id"]
    assert "AYEKF" not in repr(signer)  # the seed never shows in logs


def test_go_vector_signature_is_reproduced_byte_for_byte() -> None:
    signer = Signer.from_private_key(PETER["skey"])
    assert n.sign_note(TEXT, [signer]) == TEXT + "\n" + PETER["signature_line"]
    # Re-signing replaces this key's old signature instead of duplicating it.
    stale = n.Signature(signer.name, signer.key_id, b"BAD")
    assert n.sign_note(TEXT, [signer], keep=[stale]) == TEXT + "\n" + PETER["signature_line"]


def test_go_vector_doubly_signed_note_opens() -> None:
    message = TEXT + "\n" + PETER["signature_line"] + ENOCH["signature_line"]
    one = n.open_note(message, [PETER_V])
    assert one.text == TEXT
    assert [s.name for s in one.verified] == ["PeterNeumann"]
    assert [s.name for s in one.unverified] == ["EnochRoot"]  # unknown keys are ignored
    both = n.open_note(message.encode(), [PETER_V, ENOCH_V])
    assert [s.name for s in both.verified] == ["PeterNeumann", "EnochRoot"]
    with pytest.raises(UnverifiedNote):
        n.open_note(message, [])
    with pytest.raises(NoteError, match="ambiguous key EnochRoot"):
        n.open_note(TEXT + "\n" + ENOCH["signature_line"], [ENOCH_V, PETER_V, ENOCH_V])


def test_c2sp_signed_note_example_verifies() -> None:
    ex = V["c2sp_example"]
    opened = n.open_note(ex["note"], [Verifier.from_vkey(ex["vkey"])])
    assert opened.text == "This is an example message.\n"


def test_c2sp_checkpoint_example_parses() -> None:
    body = V["c2sp_checkpoint"].split("\n\n")[0] + "\n"
    cp = Checkpoint.parse(body)
    assert (cp.origin, cp.size, cp.extensions) == ("example.com/behind-the-sofa", 20852163, ())
    assert cp.body == body
    with pytest.raises(UnverifiedNote):  # its key is not published: unverifiable, not valid
        n.open_checkpoint(V["c2sp_checkpoint"], [PETER_V])


def _mangled(key: str) -> list[str]:
    """Every proper substring and every single-byte increment, as the Go tests do."""
    out = {key[i:j] for i in range(len(key) + 1) for j in range(i + 1, len(key) + 1)}
    out |= {key[:i] + chr(ord(key[i]) + 1) + key[i + 1 :] for i in range(len(key))}
    out.discard(key)
    return sorted(out)


def test_every_mangled_vkey_is_refused() -> None:
    for bad in [*_mangled(PETER["vkey"]), *V["bad_vkeys"]]:
        with pytest.raises(NoteError):
            Verifier.from_vkey(bad)


def test_names_that_are_not_clean_utf8_are_refused() -> None:
    for name in ("", "a b", "a+b", "a\u2003b", "a\x00b", "\udc80"):
        with pytest.raises(NoteError, match="key name"):
            Signer.generate(name)
    with pytest.raises(NoteError, match="key name"):
        Verifier.from_vkey("\udc80+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")


def test_every_mangled_private_key_is_refused() -> None:
    for bad in _mangled(PETER["skey"]):
        if bad.strip() == PETER["skey"]:
            continue
        with pytest.raises(NoteError):
            Signer.from_private_key(bad)


PETER_SIG = PETER["signature_line"]


@pytest.mark.parametrize(
    "message",
    [
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + TEXT + "\n" + PETER_SIG,
        TEXT + "\n" + "\u2014 Bad Name " + PETER_SIG.split(" ")[2],
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        TEXT + "\n" + "\u2014 PeterNeumann AAAA\n",  # shorter than key ID + 1 byte
        TEXT + "\n" + PETER_SIG * 101,
    ],
    ids=[
        "no-sigs",
        "blank-only",
        "no-final-newline",
        "control-char",
        "bad-name",
        "trailing-garbage",
        "short-signature",
        "too-many-signatures",
    ],
)
def test_malformed_notes_are_refused(message: str) -> None:
    with pytest.raises(MalformedNote):
        n.open_note(message, [PETER_V])


def test_invalid_utf8_is_malformed() -> None:
    with pytest.raises(MalformedNote, match="UTF-8"):
        n.open_note(b"\xff" + (TEXT + "\n" + PETER_SIG).encode(), [PETER_V])
    with pytest.raises(MalformedNote, match="UTF-8"):
        n.open_note("\udc80" + TEXT + "\n" + PETER_SIG, [PETER_V])


def test_altered_body_truncated_or_padded_signature_and_wrong_key_fail() -> None:
    signed = TEXT + "\n" + PETER_SIG
    with pytest.raises(InvalidNoteSignature, match=r"PeterNeumann\+c74f20a3"):
        n.open_note(signed.replace("answer", "Answer"), [PETER_V])
    with pytest.raises(InvalidNoteSignature):
        n.open_note(TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:], [PETER_V])
    blob = base64.b64decode(PETER_SIG.split(" ")[2])
    truncated = base64.b64encode(blob[:-1]).decode()
    with pytest.raises(InvalidNoteSignature):
        n.open_note(TEXT + f"\n\u2014 PeterNeumann {truncated}\n", [PETER_V])
    # A different key that claims Peter's name and key ID does not verify.
    impostor = Signer.generate("PeterNeumann")
    forged = n.Signature("PeterNeumann", PETER_V.key_id, impostor.sign(TEXT.encode()))
    with pytest.raises(InvalidNoteSignature):
        n.open_note(TEXT + "\n" + forged.line, [PETER_V])


def _checkpoint(size: int = 5) -> Checkpoint:
    tree = MemoryTree()
    for i in range(size):
        tree.append(bytes([i]))
    return Checkpoint("audit.example/audit-service/log1", size, tree.root())


def test_checkpoint_round_trip_with_rotation() -> None:
    old = Signer.generate("audit.example/audit-service/log1")
    new = Signer.generate("audit.example/audit-service/log1")
    cp = _checkpoint()
    signed = n.sign_checkpoint(cp, [new, old])
    # Verifiers holding only the old vkey, or only the new one, both accept it.
    for trusted in ([old.verifier], [new.verifier]):
        got, opened = n.open_checkpoint(signed, trusted, origin=cp.origin)
        assert got == cp and len(opened.verified) == 1
    with pytest.raises(NoteError, match="origin"):
        n.open_checkpoint(signed, [old.verifier], origin="audit.example/audit-service/other")
    with pytest.raises(InvalidNoteSignature):
        n.open_checkpoint(signed.replace("\n5\n", "\n6\n"), [old.verifier])


def test_checkpoint_with_extensions_round_trips() -> None:
    cp = Checkpoint("o", 0, _checkpoint(0).root_hash, ("ext one", "ext two"))
    assert Checkpoint.parse(cp.body) == cp


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("o\n5\n", "origin, size and root"),
        ("\n5\n" + "A" * 43 + "=\n", "origin line is empty"),
        ("o\n05\n" + "A" * 43 + "=\n", "leading zeros"),
        ("o\n-5\n" + "A" * 43 + "=\n", "leading zeros"),
        ("o\n5\nAAAA\n", "32 bytes"),
        ("o\n5\n" + "A" * 42 + "B=\n", "canonical base64"),
        ("o\n5\n" + "A" * 43 + "=\n\n", "extension"),
        ("o\n5\n" + "A" * 43 + "=", "end with a newline"),
    ],
)
def test_malformed_checkpoints_are_refused(body: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        Checkpoint.parse(body)


def test_cosignature_vector_and_round_trip() -> None:
    # Deterministic Ed25519: a fixed seed pins the exact cosignature bytes.
    cosigner = Signer("witness.example/w1", bytes(range(32)), n.COSIGNATURE_V1)
    cp = Checkpoint.parse(V["c2sp_checkpoint"].split("\n\n")[0] + "\n")
    sig = n.cosign(cp, cosigner, 1679315147)
    assert n.cosignature_message(cp.body, 1679315147) == (
        b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
        b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )
    assert sig.signature[:8] == (1679315147).to_bytes(8, "big") and len(sig.signature) == 72
    # Self-generated regression pin (the C2SP spec publishes no Ed25519 cosignature vector);
    # the key ID is recomputed here with hashlib, independently of note.key_id.
    assert cosigner.verifier.vkey == (
        "witness.example/w1+e75f6532+BAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"
    )
    digest = hashlib.sha256(b"witness.example/w1\n\x04" + cosigner.public_key).digest()
    assert digest[:4].hex() == "e75f6532"
    assert sig.line == (
        "\u2014 witness.example/w1 "
        "519lMgAAAABkGFDLBuRDazBLVac2NE+Y+IjbjQOcXLfF9CSDZVUIoS83rE1nFZsVE8"
        "YiWV6Ngr7lV8H6bdoBQGP/l73euDMQ9k+bBQ==\n"
    )
    assert n.key_id(cosigner.name, 0x04, cosigner.public_key) == cosigner.key_id
    assert cosigner.key_id != n.key_id(cosigner.name, 0x01, cosigner.public_key)
    assert n.open_cosignature(cp.body, sig, cosigner.verifier) == 1679315147
    signed = n.add_signatures(V["c2sp_checkpoint"], [sig])
    assert n.find_cosignatures(signed, [cosigner.verifier]) == {cosigner.verifier.vkey: 1679315147}
    # A cosignature vkey round-trips in the vkey format with type byte 0x04.
    assert Verifier.from_vkey(cosigner.verifier.vkey) == cosigner.verifier
    assert base64.b64decode(cosigner.verifier.vkey.split("+", 2)[2])[0] == 0x04


def test_cosignature_tampering_fails() -> None:
    cosigner = Signer.generate("witness.example/w1", n.COSIGNATURE_V1)
    cp = _checkpoint()
    sig = n.cosign(cp, cosigner, 1_700_000_000)
    later = n.Signature(
        sig.name, sig.key_id, (1_700_000_001).to_bytes(8, "big") + sig.signature[8:]
    )
    with pytest.raises(InvalidNoteSignature):
        n.open_cosignature(cp.body, later, cosigner.verifier)  # timestamp altered
    with pytest.raises(InvalidNoteSignature):
        n.open_cosignature(_checkpoint(6).body, sig, cosigner.verifier)  # other tree
    with pytest.raises(InvalidNoteSignature):
        truncated = n.Signature(sig.name, sig.key_id, sig.signature[:-1])
        n.open_cosignature(cp.body, truncated, cosigner.verifier)
    other = Signer.generate("witness.example/w1", n.COSIGNATURE_V1)
    with pytest.raises(NoteError, match="another key"):
        n.open_cosignature(cp.body, sig, other.verifier)
    # A plain note signature cannot pass for a cosignature and vice versa.
    with pytest.raises(NoteError):
        n.cosign(cp, Signer.generate("x"), 1)
    with pytest.raises(NoteError):
        n.sign_note(cp.body, [cosigner])
    with pytest.raises(NoteError, match=r"0\.\.2\^63-1"):
        n.cosign(cp, cosigner, 2**63)
