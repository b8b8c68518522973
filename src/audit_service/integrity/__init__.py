"""Tamper evidence for the log (floor 4): pure primitives first — leaf entries (`entry`),
RFC 9162 Merkle proofs (`merkle`), C2SP tlog-tiles (`tiles`) and signed notes / checkpoints /
cosignatures (`note`). None of these modules touches the database; see docs/integrity.md."""
