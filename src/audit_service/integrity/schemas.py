from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, Field

from audit_service.kit.schemas import InputModel

MAX_SIZE = 2**63 - 1
KeyType = Literal["ed25519", "cosignature/v1"]


class VerifierKey(BaseModel):
    vkey: str = Field(
        description="The key in the signed-note verifier format `<name>+<key ID>+<base64>`, "
        "as Go's golang.org/x/mod/sumdb/note and C2SP tools read it"
    )
    name: str
    key_id: str = Field(description="8 lowercase hex digits, as on the note's signature lines")
    type: KeyType = Field(
        description="`ed25519` (0x01) signs checkpoints; `cosignature/v1` (0x04) adds the "
        "timestamped cosignature re-issued while the log is idle"
    )


class VerifierKeys(BaseModel):
    origin: str | None = Field(
        description="The checkpoints' origin line (null until the first checkpoint is signed "
        "when AUDIT_LOG_ORIGIN is not set)"
    )
    vkeys: list[VerifierKey]


class InclusionProof(BaseModel):
    """An event's entry, its position and the proof that the checkpoint's tree holds it."""

    event_id: uuid.UUID
    position: int = Field(description="The event's log position: the leaf index")
    tree_size: int = Field(description="The size of the tree the proof is against")
    entry: str = Field(description="Base64 of the event's leaf entry v1 (docs/integrity.md)")
    leaf_hash: str = Field(description="Base64 SHA-256(0x00 ‖ entry)")
    hashes: list[str] = Field(
        description="The RFC 9162 inclusion path, base64, from the leaf's sibling up"
    )
    checkpoint: str = Field(description="The signed checkpoint (note) of `tree_size`")
    proof: str = Field(
        description="All of the above as one c2sp.org/tlog-proof@v1 text (`extra` is the "
        "entry): save it as a `.tlog-proof` file"
    )


class ConsistencyProof(BaseModel):
    old_size: int
    new_size: int
    hashes: list[str] = Field(
        description="The RFC 9162 consistency proof, base64 (empty when old is 0 or equal to new)"
    )
    checkpoint: str | None = Field(
        description="The newest signed checkpoint of exactly `new_size`, if one was signed"
    )


class ProofQuery(InputModel):
    size: int | None = Field(
        default=None,
        ge=1,
        le=MAX_SIZE,
        description="Prove against the first signed checkpoint whose tree holds at least "
        "this many events (a verifier that pinned a checkpoint passes its size and gets "
        "exactly that tree); default: the newest checkpoint",
    )


class ConsistencyQuery(InputModel):
    old: int = Field(ge=0, le=MAX_SIZE, description="The older tree size")
    new: int | None = Field(
        default=None,
        ge=0,
        le=MAX_SIZE,
        description="The newer tree size, up to the log's size; default: the newest checkpoint's",
    )
