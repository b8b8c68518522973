"""RFC 9162 Merkle primitives against the published reference vectors, plus properties."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_service.integrity import merkle
from audit_service.integrity.merkle import MemoryTree, ProofError

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "merkle_vectors.json").read_text()
)
LEAVES = [bytes.fromhex(x) for x in VECTORS["leaves"]]


def _tree(size: int = 8) -> MemoryTree:
    tree = MemoryTree()
    for entry in LEAVES[:size]:
        tree.append(entry)
    return tree


def test_leaf_and_node_hashes_match_the_reference_tree() -> None:
    tree = _tree()
    for level, hashes in enumerate(VECTORS["node_hashes"]):
        for index, want in enumerate(hashes):
            assert tree.hash_at(level, index).hex() == want, (level, index)


def test_roots_of_every_prefix() -> None:
    tree = _tree()
    for size, want in enumerate(VECTORS["roots"]):
        assert tree.root(size).hex() == want, size
    assert merkle.EMPTY_ROOT.hex() == VECTORS["roots"][0]


def _h(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


@pytest.mark.parametrize("case", VECTORS["inclusion"], ids=lambda c: c["name"])
def test_inclusion_vectors(case: dict[str, Any]) -> None:
    args = (case["index"], case["size"], bytes.fromhex(case["leaf_hash"]), _h(case["proof"]))
    root = bytes.fromhex(case["root"])
    if case["valid"]:
        merkle.verify_inclusion(*args, root)
        if case["size"] <= 8 and case["root"] == VECTORS["roots"][case["size"]]:
            # The generator reproduces the published proof byte for byte.
            assert _tree().inclusion_proof(case["index"], case["size"]) == args[3]
    else:
        with pytest.raises(ProofError):
            merkle.verify_inclusion(*args, root)


@pytest.mark.parametrize("case", VECTORS["consistency"], ids=lambda c: c["name"])
def test_consistency_vectors(case: dict[str, Any]) -> None:
    args = (
        case["old_size"],
        case["new_size"],
        bytes.fromhex(case["old_root"]),
        bytes.fromhex(case["new_root"]),
        _h(case["proof"]),
    )
    if case["valid"] and len(args[2]) != 32:
        # transparency-dev accepts "roots" of any length when sizes are equal; we refuse
        # anything that is not a SHA-256 hash, deliberately.
        with pytest.raises(ProofError, match="32-byte hash"):
            merkle.verify_consistency(*args)
    elif case["valid"]:
        merkle.verify_consistency(*args)
        if case["new_size"] <= 8:
            assert _tree().consistency_proof(case["old_size"], case["new_size"]) == args[4]
    else:
        with pytest.raises(ProofError):
            merkle.verify_consistency(*args)


def test_every_proof_of_the_reference_tree_verifies() -> None:
    tree = _tree()
    for size in range(1, 9):
        root = tree.root(size)
        for index in range(size):
            merkle.verify_inclusion(
                index, size, tree.hash_at(0, index), tree.inclusion_proof(index, size), root
            )
        for old in range(size + 1):
            merkle.verify_consistency(
                old, size, tree.root(old), root, tree.consistency_proof(old, size)
            )


def test_generation_refuses_out_of_range_arguments() -> None:
    tree = _tree()
    with pytest.raises(ValueError, match="not below tree size"):
        tree.inclusion_proof(8, 8)
    with pytest.raises(ValueError, match="beyond the tree"):
        tree.inclusion_proof(0, 9)
    with pytest.raises(ValueError, match="greater than new size"):
        tree.consistency_proof(5, 4)
    with pytest.raises(ValueError, match="non-negative"):
        tree.inclusion_proof(-1, 4)
    with pytest.raises(ValueError, match="non-negative"):
        merkle.root_hash(tree, True)


def test_verification_refuses_malformed_hashes() -> None:
    tree = _tree()
    proof = tree.inclusion_proof(3, 8)
    with pytest.raises(ProofError, match=r"proof\[1\]"):
        merkle.verify_inclusion(
            3, 8, tree.hash_at(0, 3), [proof[0], b"short", proof[2]], tree.root()
        )
    with pytest.raises(ProofError, match="leaf hash"):
        merkle.verify_inclusion(3, 8, b"", proof, tree.root())


def _flip(proof: list[bytes], which: int, bit: int) -> list[bytes]:
    out = list(proof)
    target = bytearray(out[which])
    target[bit // 8] ^= 1 << (bit % 8)
    out[which] = bytes(target)
    return out


sizes = st.integers(min_value=1, max_value=300)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), size=sizes)
def test_property_inclusion_proofs_verify_and_any_flipped_bit_fails(
    data: st.DataObject, size: int
) -> None:
    tree = MemoryTree(merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(size))
    index = data.draw(st.integers(0, size - 1))
    root, leaf = tree.root(), tree.hash_at(0, index)
    proof = tree.inclusion_proof(index)
    merkle.verify_inclusion(index, size, leaf, proof, root)
    if proof:
        which = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        with pytest.raises(ProofError):
            merkle.verify_inclusion(index, size, leaf, _flip(proof, which, bit), root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(
            index, size, _flip([leaf], 0, data.draw(st.integers(0, 255)))[0], proof, root
        )
    if size > 1:
        # The same proof does not place the leaf at another position.
        other = data.draw(st.integers(0, size - 1).filter(lambda i: i != index))
        with pytest.raises(ProofError):
            merkle.verify_inclusion(other, size, leaf, proof, root)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), size=sizes)
def test_property_consistency_proofs_verify_and_any_flipped_bit_fails(
    data: st.DataObject, size: int
) -> None:
    tree = MemoryTree(merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(size))
    old = data.draw(st.integers(1, size))
    old_root, new_root = tree.root(old), tree.root()
    proof = tree.consistency_proof(old)
    merkle.verify_consistency(old, size, old_root, new_root, proof)
    if proof:
        which = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        with pytest.raises(ProofError):
            merkle.verify_consistency(old, size, old_root, new_root, _flip(proof, which, bit))
    with pytest.raises(ProofError):
        bad = _flip([new_root], 0, data.draw(st.integers(0, 255)))[0]
        merkle.verify_consistency(old, size, old_root, bad, proof)


def test_memory_tree_matches_the_recursive_definition() -> None:
    def mth(hashes: list[bytes]) -> bytes:
        if len(hashes) == 1:
            return hashes[0]
        k = 1 << ((len(hashes) - 1).bit_length() - 1)
        return merkle.node_hash(mth(hashes[:k]), mth(hashes[k:]))

    leaves = [merkle.leaf_hash(bytes([i])) for i in range(70)]
    tree = MemoryTree(leaves)
    for size in range(1, 71):
        assert tree.root(size) == mth(leaves[:size])
