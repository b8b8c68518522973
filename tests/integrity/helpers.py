"""Sequence everything committed and sign a checkpoint now (the log job does this by itself
within ~1 s; tests run with jobs off and call this instead)."""

from __future__ import annotations

from typing import Any

from audit_service.audit_log.sequencer import no_fence
from audit_service.integrity.jobs import log_signers, make_sequencer
from audit_service.integrity.service import Checkpointer


async def seal(h: Any) -> int:
    """Catch the log up and sign a checkpoint of it; returns the tree size."""
    settings = h.app.state.settings
    await make_sequencer().catch_up(h.app.state.sessionmaker, no_fence)
    checkpointer = Checkpointer(
        log_signers(settings), settings.log_origin, min_interval=0.0, idle_interval=0.0
    )
    async with h.app.state.sessionmaker() as session:
        size = await checkpointer.maybe_sign(session)
        await session.commit()
    assert size is not None
    return size
