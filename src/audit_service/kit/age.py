"""Encrypting a byte stream to an `age` X25519 recipient (age-encryption.org/v1), through
pyrage, without holding the stream in memory.

pyrage streams — `encrypt_io(reader, writer, recipients)` keeps ~14 MB RSS for a 300 MB
input (measured, docs/performance.md) — but it *pulls* from a blocking file-like object,
while an export is an async generator that the event loop *pushes*. So the encryption runs
in its own thread: plaintext chunks go to it through a queue, ciphertext comes back through
another, both bounded (`depth` chunks each) so a slow client slows the database read instead
of filling memory. Ending early (the client went away, the source failed) aborts the
encryption before age writes its final chunk, so a cut-short file never decrypts as if it
were complete (age authenticates the last chunk as the last).
"""

from __future__ import annotations

import asyncio
import hashlib
import queue
import threading
from collections.abc import AsyncIterator
from typing import Any

import pyrage

OUT_CHUNK = 64 * 1024  # ciphertext handed to the event loop in pieces of about this size
_EOF = b""  # queued after the last plaintext chunk; None aborts


class InvalidRecipient(ValueError):
    pass


def parse_recipient(text: str) -> str:
    """The canonical spelling of an age X25519 recipient (`age1…`); InvalidRecipient otherwise."""
    value = text.strip()
    if not value.lower().startswith("age1"):
        raise InvalidRecipient("not an age X25519 recipient: it must start with 'age1'")
    try:
        recipient = pyrage.x25519.Recipient.from_str(value)
    except pyrage.RecipientError:
        raise InvalidRecipient("not a valid age X25519 recipient (bech32 'age1…')") from None
    return str(recipient)


def fingerprint(recipient: str) -> str:
    """`sha256:` + SHA-256 of the canonical recipient text (`printf %s age1… | sha256sum`)."""
    return "sha256:" + hashlib.sha256(recipient.encode("ascii")).hexdigest()


class _Aborted(Exception):
    pass


class _Reader:
    """The blocking file-like object pyrage reads plaintext from (in the worker thread)."""

    def __init__(self, inbox: queue.SimpleQueue[bytes | None], freed: Any) -> None:
        self._inbox = inbox
        self._freed = freed  # called (thread-safely) each time a queued chunk is taken
        self._buffer = memoryview(b"")
        self._done = False

    def read(self, size: int = -1) -> bytes:
        while not self._buffer and not self._done:
            item = self._inbox.get()
            self._freed()
            if item is None:
                raise _Aborted
            if not item:  # end of the plaintext (feed() never queues an empty chunk)
                self._done = True
            else:
                self._buffer = memoryview(item)
        if size is None or size < 0:
            size = len(self._buffer)
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return bytes(out)

    def readable(self) -> bool:
        return True


class _Writer:
    """The blocking file-like object pyrage writes ciphertext to (in the worker thread)."""

    def __init__(self, put: Any, room: threading.Semaphore, stop: threading.Event) -> None:
        self._put = put
        self._room = room
        self._stop = stop
        self._buffer = bytearray()

    def write(self, data: Any) -> int:
        self._buffer += data
        if len(self._buffer) >= OUT_CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if not self._buffer:
            return
        while not self._room.acquire(timeout=0.1):
            if self._stop.is_set():
                raise _Aborted
        if self._stop.is_set():
            raise _Aborted
        self._put(bytes(self._buffer))
        self._buffer.clear()

    def writable(self) -> bool:
        return True


async def encrypt_stream(
    chunks: AsyncIterator[bytes], recipient: str, *, depth: int = 8
) -> AsyncIterator[bytes]:
    """`chunks` encrypted to `recipient` (binary age format), as they come."""
    parsed = pyrage.x25519.Recipient.from_str(recipient)
    loop = asyncio.get_running_loop()
    inbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    outbox: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
    room_in = asyncio.Semaphore(depth)
    room_out = threading.Semaphore(depth)
    stop = threading.Event()

    def freed() -> None:
        loop.call_soon_threadsafe(room_in.release)

    def put(item: bytes | BaseException | None) -> None:
        loop.call_soon_threadsafe(outbox.put_nowait, item)

    def encrypt() -> None:
        writer = _Writer(put, room_out, stop)
        try:
            pyrage.encrypt_io(_Reader(inbox, freed), writer, [parsed])
            writer.flush()
        except BaseException as exc:  # handed to the event loop, which raises it
            put(exc)
        else:
            put(None)

    async def feed() -> None:
        try:
            async for chunk in chunks:
                if chunk:
                    await room_in.acquire()
                    inbox.put(bytes(chunk))
        except BaseException:
            inbox.put(None)  # abort: age must not write its final chunk
            raise
        inbox.put(_EOF)

    thread = threading.Thread(target=encrypt, name="age-encrypt", daemon=True)
    thread.start()
    feeder = asyncio.create_task(feed())
    try:
        while True:
            item = await outbox.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                # The thread fails after the source did (feed() aborted it): raise the
                # source's own error, which says what went wrong.
                await asyncio.wait([feeder], timeout=5)
                if feeder.done() and not feeder.cancelled():
                    source_error = feeder.exception()
                    if source_error is not None:
                        raise source_error
                raise RuntimeError(f"age encryption failed: {item}") from item
            room_out.release()
            yield item
        await feeder
    finally:
        stop.set()
        feeder.cancel()  # a no-op once it has finished
        inbox.put(None)  # unblocks a reader still waiting
        room_out.release()  # and a writer
        await asyncio.wait([feeder])
        if not feeder.cancelled():
            feeder.exception()  # retrieved: raised above already, if it mattered
        await asyncio.to_thread(thread.join)
