"""Streaming age encryption (kit/age.py): real pyrage both ways, constant memory, and a
stream cut short never decrypts as if it were whole."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator

import pyrage
import pytest

from audit_service.kit import age


async def _chunks(
    total: int, size: int = 50_000, fail_at: int | None = None
) -> AsyncIterator[bytes]:
    sent = 0
    n = 0
    while sent < total:
        if fail_at is not None and sent >= fail_at:
            raise RuntimeError("the database went away")
        piece = hashlib.sha256(b"%d" % n).digest() * (size // 32)
        piece = piece[: min(size, total - sent)]
        sent += len(piece)
        n += 1
        await asyncio.sleep(0)
        yield piece


async def _collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in stream])


async def test_encrypted_stream_decrypts_with_the_identity_and_only_with_it() -> None:
    identity = pyrage.x25519.Identity.generate()
    plain = await _collect(_chunks(1_234_567))
    cipher = await _collect(age.encrypt_stream(_chunks(1_234_567), str(identity.to_public())))
    assert cipher.startswith(b"age-encryption.org/v1\n")
    assert plain not in cipher
    assert pyrage.decrypt(cipher, [identity]) == plain
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(cipher, [pyrage.x25519.Identity.generate()])


async def test_an_empty_stream_is_an_empty_file_once_decrypted() -> None:
    identity = pyrage.x25519.Identity.generate()
    cipher = await _collect(age.encrypt_stream(_chunks(0), str(identity.to_public())))
    assert pyrage.decrypt(cipher, [identity]) == b""


async def test_a_failing_source_raises_its_error_and_leaves_no_decryptable_file() -> None:
    identity = pyrage.x25519.Identity.generate()
    got: list[bytes] = []
    with pytest.raises(RuntimeError, match="the database went away"):
        async for c in age.encrypt_stream(
            _chunks(5_000_000, fail_at=2_000_000), str(identity.to_public())
        ):
            got.append(c)
    assert got, "ciphertext was streamed before the failure"
    # age authenticates the final chunk as final: a cut-short file is an error, not data.
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(b"".join(got), [identity])
    assert not [t for t in threading.enumerate() if t.name == "age-encrypt"]


async def test_a_client_that_goes_away_stops_the_encryption_thread() -> None:
    identity = pyrage.x25519.Identity.generate()
    stream = age.encrypt_stream(_chunks(50_000_000), str(identity.to_public()), depth=2)
    first = await anext(stream)
    assert first
    await stream.aclose()  # what the response does when the client disconnects
    assert not [t for t in threading.enumerate() if t.name == "age-encrypt"]


def test_recipients_are_parsed_canonically_and_fingerprinted() -> None:
    key = str(pyrage.x25519.Identity.generate().to_public())
    assert age.parse_recipient(f"  {key.upper()}\n") == key
    assert age.fingerprint(key) == "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    for bad in (key[:-1] + ("q" if key[-1] != "q" else "p"), "ssh-ed25519 AAAAC3Nza", "", "age1"):
        with pytest.raises(age.InvalidRecipient):
            age.parse_recipient(bad)


PROBE = """
import asyncio, hashlib, sys
import pyrage
from audit_service.kit import age

TOTAL = int(sys.argv[1])
identity = pyrage.x25519.Identity.generate()

async def source():
    block = hashlib.sha256(b"x").digest() * 2048  # 64 KiB
    for _ in range(TOTAL // len(block)):
        yield block

async def main():
    out = hashlib.sha256()
    size = 0
    async for chunk in age.encrypt_stream(source(), str(identity.to_public())):
        out.update(chunk)
        size += len(chunk)
    return size

size = asyncio.run(main())
# VmHWM, not ru_maxrss: the latter keeps the high-water mark of the forked parent (pytest).
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(size, peak // 1024)
"""


def test_a_large_stream_is_encrypted_in_constant_memory() -> None:
    """A 10M-row export is several GB: it must pass through, never be held. 512 MiB goes
    through a process whose peak RSS stays near its size at start."""
    if not os.path.exists("/proc/self/status"):
        pytest.skip("measures peak memory through /proc (Linux)")
    total = 512 * 1024 * 1024
    run = subprocess.run(
        [sys.executable, "-c", PROBE, str(total)], capture_output=True, text=True, check=True
    )
    size, peak_mb = map(int, run.stdout.split())
    assert size > total  # all of it, plus age's header and tags
    assert peak_mb < 80, f"peak RSS {peak_mb} MB for {total >> 20} MiB encrypted"
