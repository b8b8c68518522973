"""Key rotation and verify: checkpoints signed before a rotation still verify once the old
key is listed in AUDIT_LOG_RETIRED_VKEYS, and are called re-signed without it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from audit_service.core.db import create_engine
from audit_service.integrity import note, verify
from audit_service.integrity.jobs import log_signers, log_verifiers
from audit_service.integrity.service import Checkpointer
from tests.conftest import LOG_SIGNING_KEY, Harness, make_settings
from tests.integrity.helpers import seal

NEW_KEY = note.Signer.generate("rotated.audit-service")


async def _verify(url: str, verifiers: list[note.Verifier]) -> verify.Report:
    engine = create_engine(url)
    try:
        return await verify.verify_log(engine, verifiers, verify.InProcess(engine))
    finally:
        await engine.dispose()


async def test_checkpoints_of_a_retired_key_verify_when_it_is_listed(h: Harness) -> None:
    headers = await h.auth()
    assert (await h.client.get("/me", headers=headers)).status_code == 200
    await seal(h)  # signed by the old key only
    url = h.app.state.settings.database_url
    assert (await h.client.get("/me", headers=headers)).status_code == 200
    from audit_service.audit_log.sequencer import no_fence
    from audit_service.integrity.jobs import make_sequencer

    await make_sequencer().catch_up(h.app.state.sessionmaker, no_fence)
    rotated = make_settings(url, log_signing_key=NEW_KEY.private_key)
    checkpointer = Checkpointer(
        log_signers(rotated), rotated.log_origin, min_interval=0.0, idle_interval=0.0
    )
    async with h.app.state.sessionmaker() as session:
        assert await checkpointer.maybe_sign(session) is not None
        await session.commit()

    without = await _verify(url, log_verifiers(rotated))
    assert without.status == "tampered"
    assert {p.kind for p in without.problems} == {verify.WRONG_KEY}

    old_vkey = note.Signer.from_private_key(LOG_SIGNING_KEY).verifier.vkey
    retired = make_settings(url, log_signing_key=NEW_KEY.private_key, log_retired_vkeys=old_vkey)
    report = await _verify(url, log_verifiers(retired))
    assert report.status == "intact", report.to_json()
    assert report.valid_checkpoints == report.checkpoints == 2


def test_a_retired_vkey_that_is_not_one_is_refused_by_name() -> None:
    with pytest.raises(ValidationError) as info:
        make_settings("sqlite+aiosqlite:///x.db", log_retired_vkeys="not-a-key")
    assert "AUDIT_LOG_RETIRED_VKEYS" in str(info.value)
    assert "not-a-key" in str(info.value)
