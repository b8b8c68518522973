"""The log job: sequence committed events, keep the tiles in step, sign checkpoints.

One leased job (`log.sequencer`) so that exactly one process appends to the log at a time.
It loops inside one lease: a round every `sequencer_interval` (at once again while a round
comes back full), a checkpoint when the tree grew and `checkpoint_interval` has passed, a
re-issued one every `checkpoint_idle_interval` while idle, and every
`checkpoint_event_interval` the newest checkpoint is written as an `integrity.checkpoint`
event, so it leaves the box with exports and forwards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from audit_service.audit_log.jobs import record_job_event
from audit_service.audit_log.sequencer import Sequencer
from audit_service.core.config import Settings
from audit_service.core.jobs import Job, JobContext
from audit_service.integrity import note
from audit_service.integrity import repository as repo
from audit_service.integrity.service import (
    Checkpointer,
    LeafHasher,
    append_tiles,
    default_origin,
)

LOG_JOB = "log.sequencer"


def _valid_keys(text: str) -> bool:
    try:
        _parse_keys(text)
    except note.NoteError:
        return False
    return True


def _parse_keys(text: str) -> list[note.Signer]:
    """One key per line (or comma-separated): rotation signs with both keys for a while."""
    keys = [k.strip() for k in text.replace(",", "\n").splitlines() if k.strip()]
    if not keys:
        raise note.NoteError("no signing key")
    signers = [note.Signer.from_private_key(k) for k in keys]
    if len({(s.name, s.key_id) for s in signers}) != len(signers):
        raise note.NoteError("the same signing key is listed twice")
    return signers


def log_signers(settings: Settings) -> list[note.Signer]:
    """The checkpoint signing keys, first = current (a development key under ./var/ unless
    configured). To rotate: add the new key beside the old one (every checkpoint is then
    signed by both), hand out its vkeys, then drop the old one."""
    text = settings.log_key(
        lambda: note.Signer.generate("audit-service-dev").private_key, _valid_keys
    )
    return _parse_keys(text)


def log_verifiers(settings: Settings) -> list[note.Verifier]:
    """Every key the log's checkpoints may carry: the signing keys and the retired ones
    (AUDIT_LOG_RETIRED_VKEYS), each for note signatures and for cosignatures. A checkpoint
    signed before a rotation carries only the old key: without it, verify would call it
    re-signed."""
    verifiers = [s.verifier for s in log_signers(settings)]
    verifiers += [
        note.Verifier.from_vkey(v.strip())
        for v in settings.log_retired_vkeys.split(",")
        if v.strip()
    ]
    out: list[note.Verifier] = []
    for v in verifiers:
        for typed in (v.with_type(note.ED25519), v.with_type(note.COSIGNATURE_V1)):
            if typed not in out:
                out.append(typed)
    return out


def log_signer(settings: Settings) -> note.Signer:
    return log_signers(settings)[0]


def make_sequencer() -> Sequencer:
    return Sequencer(hash_leaves=LeafHasher(), on_append=append_tiles)


def make_checkpointer(settings: Settings) -> Checkpointer:
    return Checkpointer(
        log_signers(settings),
        settings.log_origin or default_origin(),
        min_interval=settings.checkpoint_interval,
        idle_interval=settings.checkpoint_idle_interval,
    )


@dataclass(eq=False)
class LogJob:
    sequencer: Sequencer
    checkpointer: Checkpointer
    interval: float
    event_interval: float
    _last_event_at: float = field(default=0.0, init=False)
    _last_event_size: int = field(default=-1, init=False)

    async def __call__(self, ctx: JobContext) -> None:
        # The first checkpoint event comes one interval after start, not at once: a service
        # that restarts often would otherwise write one per start.
        if not self._last_event_at:
            self._last_event_at = time.monotonic()
        while not ctx.stop.is_set():
            async with ctx.sessionmaker() as session:
                r = await self.sequencer.run_round(session, ctx.fence)
            ctx.report_lag(r.lag_seconds)
            await self.sign(ctx)
            if not r.more and not await ctx.sleep(self.interval):
                return

    async def sign(self, ctx: JobContext) -> None:
        async with ctx.sessionmaker() as session:
            size = await self.checkpointer.maybe_sign(session)
            now = time.monotonic()
            if (
                size is not None
                and now - self._last_event_at >= self.event_interval
                # Not for a tree that grew by nothing but the previous checkpoint event.
                and size > self._last_event_size + 1
            ):
                latest = await repo.latest_checkpoint(session)
                await record_job_event(
                    session,
                    ctx.name,
                    "integrity.checkpoint",
                    "integrity",
                    f"Signed checkpoint of the log at {size} events",
                    target_type="checkpoint",
                    target_id=str(size),
                    tree_size=size,
                    root_hash=latest.root_hash.hex(),
                    checkpoint=latest.note,
                )
                self._last_event_at, self._last_event_size = now, size
            await ctx.fence(session)
            await session.commit()


def log_jobs(settings: Settings) -> list[Job]:
    job = LogJob(
        make_sequencer(),
        make_checkpointer(settings),
        settings.sequencer_interval,
        settings.checkpoint_event_interval,
    )
    # interval 0: the job loops by itself while it holds its lease; if it ends (an error),
    # the runtime's backoff restarts it.
    return [Job(LOG_JOB, 0.0, job, lease_seconds=15.0, backoff_max=30.0)]
