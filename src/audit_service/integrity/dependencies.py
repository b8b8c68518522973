"""The log's verifier keys, as a dependency (derived from the signing key once per app)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from audit_service.integrity import note
from audit_service.integrity.jobs import log_signer


async def get_log_verifiers(request: Request) -> list[note.Verifier]:
    verifiers: list[note.Verifier] | None = getattr(request.app.state, "log_verifiers", None)
    if verifiers is None:
        # The same key pair the log job signs with: 0x01 for checkpoints, 0x04 for the
        # timestamped cosignature (integrity.service.Checkpointer).
        signer = log_signer(request.app.state.settings)
        verifiers = [signer.verifier, signer.with_type(note.COSIGNATURE_V1).verifier]
        request.app.state.log_verifiers = verifiers
    return verifiers


LogVerifiersDep = Annotated[list[note.Verifier], Depends(get_log_verifiers)]
