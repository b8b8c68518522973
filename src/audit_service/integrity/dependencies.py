"""The log's verifier keys, as a dependency (derived from the signing keys once per app)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from audit_service.integrity import note
from audit_service.integrity.jobs import log_signers


async def get_log_verifiers(request: Request) -> list[note.Verifier]:
    verifiers: list[note.Verifier] | None = getattr(request.app.state, "log_verifiers", None)
    if verifiers is None:
        # The keys the log job signs with, every one of them while a rotation lists several:
        # 0x01 for checkpoints, 0x04 for the timestamped cosignature (as Checkpointer does).
        signers = log_signers(request.app.state.settings)
        verifiers = [s.verifier for s in signers]
        verifiers += [s.with_type(note.COSIGNATURE_V1).verifier for s in signers]
        request.app.state.log_verifiers = verifiers
    return verifiers


LogVerifiersDep = Annotated[list[note.Verifier], Depends(get_log_verifiers)]
