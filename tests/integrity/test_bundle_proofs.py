"""Range proofs of bundles, against the reference tree (merkle.MemoryTree): every run of
every small tree, every selection of positions of the smaller ones, and every way to
break a proof."""

from __future__ import annotations

import hashlib
import itertools
import random

import pytest

from audit_service.integrity import merkle
from audit_service.integrity.bundle import (
    CompactRange,
    ProofFailure,
    RangeVerifier,
    RunProof,
    compact_pieces,
    prove_end,
    prove_runs,
    runs_of,
)


def _tree(size: int) -> merkle.MemoryTree:
    return merkle.MemoryTree(hashlib.sha256(b"leaf %d" % i).digest() for i in range(size))


def _leaves(tree: merkle.MemoryTree, start: int, end: int) -> list[bytes]:
    return [tree.hash_at(0, i) for i in range(start, end)]


def _root(tree: merkle.MemoryTree, size: int, proofs: list[RunProof], end: RunProof) -> bytes:
    verifier = RangeVerifier(size)
    for p in proofs:
        verifier.run(p.start, p.end, p.gap, _leaves(tree, p.start, p.end))
    return verifier.finish(end.gap)


def _prove(
    tree: merkle.MemoryTree, size: int, positions: list[int]
) -> tuple[list[RunProof], RunProof]:
    runs = runs_of(positions)
    proofs = prove_runs(tree, size, runs)
    return proofs, prove_end(tree, size, runs[-1][1] if runs else 0)


def test_compact_pieces_are_aligned_complete_subtrees_covering_the_range() -> None:
    for start in range(0, 70):
        for end in range(start, 70):
            pieces = compact_pieces(start, end)
            covered = []
            for level, index in pieces:
                covered += range(index << level, (index + 1) << level)
            assert covered == list(range(start, end))
            # At most two per level (one climbing, one descending).
            levels = [level for level, _ in pieces]
            assert all(levels.count(x) <= 2 for x in set(levels))


@pytest.mark.parametrize("size", range(1, 34))
def test_every_single_run_of_every_small_tree_proves_the_root(size: int) -> None:
    tree = _tree(size)
    for start in range(size):
        for end in range(start + 1, size + 1):
            proofs, last = _prove(tree, size, list(range(start, end)))
            assert len(proofs) == 1
            assert _root(tree, size, proofs, last) == tree.root(), (size, start, end)
            # The proof is no larger than the gaps need: one hash per piece, nothing shared.
            assert len(proofs[0].gap) + len(last.gap) == len(compact_pieces(0, start)) + len(
                compact_pieces(end, size)
            )


@pytest.mark.parametrize("size", range(1, 11))
def test_every_selection_of_positions_proves_the_root(size: int) -> None:
    tree = _tree(size)
    for mask in range(1 << size):
        positions = [i for i in range(size) if mask >> i & 1]
        proofs, last = _prove(tree, size, positions)
        assert _root(tree, size, proofs, last) == tree.root(), (size, positions)


def test_a_whole_tree_needs_no_proof_hashes_and_the_empty_selection_only_the_gap() -> None:
    tree = _tree(1000)
    proofs, last = _prove(tree, 1000, list(range(1000)))
    assert [(p.start, p.end, p.gap) for p in proofs] == [(0, 1000, ())] and last.gap == ()
    proofs, last = _prove(tree, 1000, [])
    assert proofs == [] and len(last.gap) == bin(1000).count("1")
    assert _root(tree, 1000, [], last) == tree.root()
    assert RangeVerifier(0).finish([]) == merkle.EMPTY_ROOT


def test_selections_proved_in_pieces_match_one_proof_of_the_whole() -> None:
    """The exporter proves chunk by chunk (`after` = the previous chunk's last run end)."""
    rng = random.Random(7)
    tree = _tree(5000)
    positions = sorted(rng.sample(range(5000), 900))
    whole, last = _prove(tree, 5000, positions)
    pieces: list[RunProof] = []
    after = 0
    for i in range(0, len(positions), 128):
        runs = runs_of(positions[i : i + 128])
        pieces += prove_runs(tree, 5000, runs, after=after)
        after = runs[-1][1]
    # Runs split at a chunk boundary become two runs, the second with an empty gap.
    assert _root(tree, 5000, pieces, prove_end(tree, 5000, after)) == tree.root()
    assert sum(len(p.gap) for p in pieces) == sum(len(p.gap) for p in whole)
    assert _root(tree, 5000, whole, last) == tree.root()


def test_a_root_of_a_prefix_of_a_bigger_tree() -> None:
    tree = _tree(300)
    for size in (1, 2, 3, 255, 256, 257, 299):
        positions = [p for p in (0, 1, 5, 6, 7, 100, 254, 255, 256, 298) if p < size]
        proofs, last = _prove(tree, size, positions)
        assert _root(tree, size, proofs, last) == tree.root(size)


def test_worker_folded_runs_give_the_same_root() -> None:
    """verify-bundle folds each run in a worker process and merges its pieces."""
    tree = _tree(777)
    positions = [*range(3, 90), *range(91, 400), 555, *range(600, 777)]
    proofs, last = _prove(tree, 777, positions)
    verifier = RangeVerifier(777)
    for p in proofs:
        folded = CompactRange(p.start)
        folded.push_leaves(_leaves(tree, p.start, p.end))
        assert [(lv, ix) for lv, ix, _ in folded.pieces] == compact_pieces(p.start, p.end)
        verifier.pieces(p.start, p.end, p.gap, folded)
    assert verifier.finish(last.gap) == tree.root()


def _flip(h: bytes) -> bytes:
    return bytes([h[0] ^ 1]) + h[1:]


def test_every_change_to_leaves_or_proof_hashes_changes_the_root() -> None:
    size = 37
    tree = _tree(size)
    positions = [2, 3, 4, 10, 11, 20, 36]
    proofs, last = _prove(tree, size, positions)
    good = tree.root()
    assert _root(tree, size, proofs, last) == good
    # Each gap hash, altered.
    for i, p in enumerate(proofs):
        for j in range(len(p.gap)):
            gap = list(p.gap)
            gap[j] = _flip(gap[j])
            bad = [*proofs[:i], RunProof(p.start, p.end, tuple(gap)), *proofs[i + 1 :]]
            assert _root(tree, size, bad, last) != good
    for j in range(len(last.gap)):
        gap = list(last.gap)
        gap[j] = _flip(gap[j])
        assert _root(tree, size, proofs, RunProof(size, size, tuple(gap))) != good
    # Each leaf, altered.
    for p in proofs:
        for k in range(p.start, p.end):
            verifier = RangeVerifier(size)
            for q in proofs:
                leaves = _leaves(tree, q.start, q.end)
                if q is p:
                    leaves[k - q.start] = _flip(leaves[k - q.start])
                verifier.run(q.start, q.end, q.gap, leaves)
            assert verifier.finish(last.gap) != good
    # Two runs' leaves swapped (a reordering), same shape.
    verifier = RangeVerifier(size)
    for q in proofs:
        leaves = _leaves(tree, q.start, q.end)
        verifier.run(q.start, q.end, q.gap, list(reversed(leaves)))
    assert verifier.finish(last.gap) != good


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda ps: [RunProof(ps[0].start, ps[0].end, ps[0].gap[:-1]), *ps[1:]], "needs"),
        (lambda ps: [RunProof(ps[0].start, ps[0].end, (*ps[0].gap, b"x" * 32)), *ps[1:]], "needs"),
        (lambda ps: [ps[1], ps[0], *ps[2:]], "needs 2 hash"),
        (lambda ps: [*ps, ps[-1]], "before the previous"),
        (
            lambda ps: [RunProof(ps[0].start, ps[0].end, (b"short",) * len(ps[0].gap)), *ps[1:]],
            "32 bytes",
        ),
    ],
)
def test_malformed_proofs_are_refused_with_the_reason(mutate: object, message: str) -> None:
    size = 37
    tree = _tree(size)
    proofs, last = _prove(tree, size, [2, 3, 4, 10, 11, 20])
    bad = mutate(proofs)  # type: ignore[operator]
    with pytest.raises(ProofFailure, match=message):
        _root(tree, size, bad, last)


def test_runs_beyond_the_tree_or_empty_are_refused() -> None:
    verifier = RangeVerifier(10)
    with pytest.raises(ProofFailure, match=r"goes beyond the checkpoint's tree \(size 10\)"):
        verifier.run(8, 11, [], [b"\0" * 32] * 3)
    with pytest.raises(ProofFailure, match="is empty"):
        RangeVerifier(10).run(3, 3, [], [])
    with pytest.raises(ValueError, match="within"):
        prove_runs(_tree(10), 10, [(8, 11)])
    with pytest.raises(ProofFailure, match="does not start"):
        CompactRange(4).push(2, 0, b"\0" * 32)


def test_runs_of_positions() -> None:
    assert runs_of([]) == []
    assert runs_of([0, 1, 2, 5, 7, 8]) == [(0, 3), (5, 6), (7, 9)]
    assert list(itertools.chain.from_iterable(range(a, b) for a, b in runs_of([3, 4, 9]))) == [
        3,
        4,
        9,
    ]
