"""RFC 9162 Merkle tree hashing, inclusion and consistency proofs, over any hash store.

Hashing (RFC 9162 §2.1.1): leaf = SHA-256(0x00 ‖ entry), node = SHA-256(0x01 ‖ left ‖ right),
the root of the empty tree is SHA-256(""). A tree of n leaves splits at the largest power of
two below n, so every hash a proof needs is a *complete* subtree: the hash at (level, index)
covers leaves [index·2^level, (index+1)·2^level). Proof generation first plans which complete
subtrees it needs, then asks a `HashSource` for all of them in one call, so a database- or
tile-backed store answers a proof with one round trip instead of one per hash.

Verification follows the RFC 9162 §2.1.3.2 / §2.1.4.2 algorithms step by step and raises
`ProofError` saying why a proof fails, so `verify` can report more than "bad proof".
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from typing import Protocol

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


class ProofError(ValueError):
    """A proof does not verify (the message says which check failed)."""


class HashSource(Protocol):
    """Where proofs read complete-subtree hashes from (memory, tiles, a database)."""

    def read_hashes(self, coords: Sequence[tuple[int, int]]) -> Sequence[bytes]:
        """The hashes at each (level, index), in order. Every requested subtree is complete
        within the tree the caller asked about; a source that lacks one must raise."""
        ...


def leaf_hash(entry: bytes) -> bytes:
    return _sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below n (n >= 2): RFC 9162's k."""
    return 1 << ((n - 1).bit_length() - 1)


def _range_coords(start: int, end: int) -> list[tuple[int, int]]:
    """Complete subtrees whose left-to-right concatenation is leaves [start, end).

    Only called for RFC 9162 "subtrees" (start is a multiple of the largest power of two not
    above end - start), so the pieces are the binary digits of the size, largest first.
    """
    coords = []
    while start < end:
        level = (end - start).bit_length() - 1
        coords.append((level, start >> level))
        start += 1 << level
    return coords


def _fold(hashes: Sequence[bytes]) -> bytes:
    """MTH of a subtree from its complete pieces (largest first): they nest to the right."""
    result = hashes[-1]
    for h in reversed(hashes[:-1]):
        result = node_hash(h, result)
    return result


def _range_hashes(source: HashSource, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    """MTH of each [start, end) range with a single read of the source."""
    pieces = [_range_coords(start, end) for start, end in ranges]
    flat = [c for p in pieces for c in p]
    hashes = list(source.read_hashes(flat)) if flat else []
    if len(hashes) != len(flat):
        raise ValueError(f"hash source returned {len(hashes)} hashes for {len(flat)} requested")
    out, i = [], 0
    for p in pieces:
        out.append(_fold(hashes[i : i + len(p)]))
        i += len(p)
    return out


def _check_size(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def root_hash(source: HashSource, size: int) -> bytes:
    """The root of the tree of the first `size` leaves."""
    _check_size("size", size)
    if size == 0:
        return EMPTY_ROOT
    return _range_hashes(source, [(0, size)])[0]


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTHs form PATH(index, D[0:size]) (RFC 9162 §2.1.3.1), leaf first."""
    _check_size("index", index)
    _check_size("size", size)
    if index >= size:
        raise ValueError(f"leaf index {index} is not below tree size {size}")
    ranges = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
    ranges.reverse()
    return ranges


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTHs form PROOF(old_size, D[0:new_size]) (RFC 9162 §2.1.4.1).

    Empty when old_size is 0 or equal to new_size: nothing needs proving then.
    """
    _check_size("old size", old_size)
    _check_size("new size", new_size)
    if old_size > new_size:
        raise ValueError(f"old size {old_size} is greater than new size {new_size}")
    if old_size in (0, new_size):
        return []
    ranges = []
    m, lo, hi, whole = old_size, 0, new_size, True
    while True:
        if m == hi - lo:
            if not whole:
                ranges.append((lo, hi))
            break
        k = _split(hi - lo)
        if m <= k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            m -= k
            lo += k
            whole = False
    ranges.reverse()
    return ranges


def inclusion_proof(source: HashSource, index: int, size: int) -> list[bytes]:
    return _range_hashes(source, inclusion_ranges(index, size))


def consistency_proof(source: HashSource, old_size: int, new_size: int) -> list[bytes]:
    return _range_hashes(source, consistency_ranges(old_size, new_size))


def _check_hash(name: str, value: bytes) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        raise ProofError(f"{name} is not a {HASH_SIZE}-byte hash")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root a valid inclusion proof implies (RFC 9162 §2.1.3.2 steps 1-3)."""
    _check_size("index", index)
    _check_size("size", size)
    if index >= size:
        raise ProofError(f"leaf index {index} is not below tree size {size}")
    _check_hash("leaf hash", leaf)
    fn, sn, r = index, size - 1, bytes(leaf)
    for i, p in enumerate(proof):
        _check_hash(f"proof[{i}]", p)
        if sn == 0:
            raise ProofError(f"inclusion proof too long: {len(proof)} hashes")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"inclusion proof too short: {len(proof)} hashes")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise ProofError unless `proof` shows leaf hash `leaf` at `index` in the tree `root`."""
    _check_hash("root", root)
    computed = root_from_inclusion_proof(index, size, leaf, proof)
    if not hmac.compare_digest(computed, root):
        raise ProofError(f"inclusion proof for leaf {index} does not lead to the root of {size}")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise ProofError unless `proof` shows the tree (old_size, old_root) is a prefix of
    (new_size, new_root) (RFC 9162 §2.1.4.2)."""
    _check_size("old size", old_size)
    _check_size("new size", new_size)
    _check_hash("old root", old_root)
    _check_hash("new root", new_root)
    for i, p in enumerate(proof):
        _check_hash(f"proof[{i}]", p)
    if old_size > new_size:
        raise ProofError(f"old size {old_size} is greater than new size {new_size}")
    if old_size == new_size:
        if proof:
            raise ProofError("consistency proof between equal sizes must be empty")
        if not hmac.compare_digest(old_root, new_root):
            raise ProofError(f"two different roots for tree size {old_size}")
        return
    if old_size == 0:
        # Every tree extends the empty one; a proof here is malformed, not merely useless.
        if proof:
            raise ProofError("consistency proof from the empty tree must be empty")
        if not hmac.compare_digest(old_root, EMPTY_ROOT):
            raise ProofError("old root is not the root of the empty tree")
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is a node
        path.insert(0, bytes(old_root))
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError(f"consistency proof too long: {len(proof)} hashes")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"consistency proof too short: {len(proof)} hashes")
    if not hmac.compare_digest(fr, old_root):
        raise ProofError(f"consistency proof does not lead to the old root of {old_size}")
    if not hmac.compare_digest(sr, new_root):
        raise ProofError(f"consistency proof does not lead to the new root of {new_size}")


class MemoryTree:
    """A whole tree in memory (every complete subtree hash per level): a reference
    `HashSource` for tests, bundles and offline verification of modest trees."""

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        for h in leaf_hashes:
            self.append_hash(h)

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def append(self, entry: bytes) -> int:
        return self.append_hash(leaf_hash(entry))

    def append_hash(self, h: bytes) -> int:
        if len(h) != HASH_SIZE:
            raise ValueError(f"leaf hash must be {HASH_SIZE} bytes")
        index = self.size
        self._levels[0].append(bytes(h))
        level, i = 0, index
        # Each append completes one subtree per trailing 1-bit of the new size.
        while i & 1:
            left, right = self._levels[level][i - 1], self._levels[level][i]
            level += 1
            if len(self._levels) == level:
                self._levels.append([])
            self._levels[level].append(node_hash(left, right))
            i >>= 1
        return index

    def hash_at(self, level: int, index: int) -> bytes:
        try:
            if level < 0 or index < 0:
                raise IndexError
            return self._levels[level][index]
        except IndexError:
            raise KeyError(f"no complete subtree at level {level}, index {index}") from None

    def read_hashes(self, coords: Sequence[tuple[int, int]]) -> list[bytes]:
        return [self.hash_at(level, index) for level, index in coords]

    def root(self, size: int | None = None) -> bytes:
        return root_hash(self, self.size if size is None else self._bounded(size))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof(self, index, self.size if size is None else self._bounded(size))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        new = self.size if new_size is None else self._bounded(new_size)
        return consistency_proof(self, old_size, new)

    def _bounded(self, size: int) -> int:
        _check_size("size", size)
        if size > self.size:
            raise ValueError(f"tree size {size} is beyond the tree ({self.size} leaves)")
        return size
