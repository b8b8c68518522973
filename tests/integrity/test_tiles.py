"""C2SP tlog-tiles: paths, coverage, incremental building, and proofs read from tiles."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_service.integrity import merkle
from audit_service.integrity.merkle import MemoryTree
from audit_service.integrity.tiles import (
    Tile,
    TileHashReader,
    encode_index,
    extend_tiles,
    parse_tile_path,
    tiles_for_size,
)


def _leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


class Store:
    """A dict of tiles standing in for the tile table; counts reads."""

    def __init__(self) -> None:
        self.tiles: dict[Tile, bytes] = {}
        self.reads = 0

    def read(self, tiles: Sequence[Tile]) -> list[bytes]:
        self.reads += 1
        return [self.tiles[t] for t in tiles]


@pytest.mark.parametrize(
    ("index", "encoded"),
    [(0, "000"), (7, "007"), (999, "999"), (1000, "x001/000"), (1234067, "x001/x234/067")],
)
def test_index_encoding_round_trips(index: int, encoded: str) -> None:
    assert encode_index(index) == encoded
    assert parse_tile_path(f"tile/3/{encoded}") == Tile(3, index)
    assert parse_tile_path(f"tile/0/{encoded}.p/17") == Tile(0, index, 17)
    assert Tile(0, index, 17).path == f"tile/0/{encoded}.p/17"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "tile/<L>/<N>"),
        ("tiles/0/000", "tile/<L>/<N>"),
        ("tile/0", "tile/<L>/<N>"),
        ("tile/01/000", "leading zeros"),
        ("tile/64/000", "0..63"),
        ("tile/-1/000", "0..63"),
        ("tile/a/000", "0..63"),
        ("tile/0/1", "3 digits"),
        ("tile/0/0001", "3 digits"),
        ("tile/0/001/234", "prefixed with 'x'"),
        ("tile/0/x001", "3 digits"),
        ("tile/0/x000/001", "leading x000"),
        ("tile/0/000.p/0", "1..255"),
        ("tile/0/000.p/256", "1..255"),
        ("tile/0/000.p/012", "1..255"),
        ("tile/0/000.p/", "1..255"),
        ("tile/0/000/", "prefixed with 'x'"),
        ("tile/0/00a", "3 digits"),
        ("tile/0/\u0660\u0660\u0661", "ASCII"),  # Arabic-Indic digits pass str.isdigit
        ("tile/entries/000", "entry bundles"),
    ],
)
def test_malformed_paths_are_refused_precisely(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        parse_tile_path(path)


def test_tiles_for_size_matches_the_spec_examples() -> None:
    tiles = list(tiles_for_size(70_000))
    level0 = [t for t in tiles if t.level == 0]
    assert sum(t.is_full for t in level0) == 273
    assert [t for t in level0 if not t.is_full] == [Tile(0, 273, 112)]
    assert [t for t in tiles if t.level == 1] == [Tile(1, 0), Tile(1, 1, 17)]
    assert [t for t in tiles if t.level == 2] == [Tile(2, 0, 1)]
    assert list(tiles_for_size(256)) == [Tile(0, 0), Tile(1, 0, 1)]
    assert list(tiles_for_size(0)) == []


def test_incremental_tiles_equal_whole_tree_tiles_and_serve_identical_proofs() -> None:
    size = 256 * 256 + 300  # reaches a level-2 tile
    leaves = _leaves(size)
    tree = MemoryTree(leaves)
    store, grown, rng = Store(), 0, random.Random(8)
    while grown < size:
        step = min(size - grown, rng.choice([1, 7, 255, 256, 257, 3000]))
        store.tiles.update(extend_tiles(grown, leaves[grown : grown + step], store.read))
        grown += step
    for tile in tiles_for_size(size):
        data = store.tiles[tile]
        level = 8 * tile.level
        want = [tree.hash_at(level, tile.first_hash + i) for i in range(tile.width)]
        assert data == b"".join(want), tile
    reader = TileHashReader(size, store.read)
    assert merkle.root_hash(reader, size) == tree.root()
    for index in (0, 255, 256, 65535, 65536, size - 1):
        store.reads = 0
        assert merkle.inclusion_proof(reader, index, size) == tree.inclusion_proof(index)
        assert store.reads == 1  # one batched tile read per proof
    for old in (1, 256, 257, 65536, size - 1):
        assert merkle.consistency_proof(reader, old, size) == tree.consistency_proof(old)


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.integers(1, 600), min_size=1, max_size=6), data=st.data())
def test_property_tiles_grown_in_any_steps_serve_valid_proofs(
    steps: list[int], data: st.DataObject
) -> None:
    size = sum(steps)
    leaves = _leaves(size)
    store, grown = Store(), 0
    for step in steps:
        store.tiles.update(extend_tiles(grown, leaves[grown : grown + step], store.read))
        grown += step
        reader = TileHashReader(grown, store.read)
        root = merkle.root_hash(reader, grown)
        assert root == MemoryTree(leaves[:grown]).root()
        index = data.draw(st.integers(0, grown - 1))
        proof = merkle.inclusion_proof(reader, index, grown)
        merkle.verify_inclusion(index, grown, leaves[index], proof, root)


def test_extend_refuses_a_stored_partial_tile_of_the_wrong_length() -> None:
    store = Store()
    store.tiles.update(extend_tiles(0, _leaves(10), store.read))
    store.tiles[Tile(0, 0, 10)] = store.tiles[Tile(0, 0, 10)][:-1]
    with pytest.raises(ValueError, match="must be 320 bytes"):
        extend_tiles(10, _leaves(1), store.read)


def test_reader_refuses_subtrees_outside_the_tree() -> None:
    reader = TileHashReader(5, Store().read)
    with pytest.raises(ValueError, match="no complete subtree"):
        reader.read_hashes([(1, 2)])  # leaves 4..5, but the tree has 5 leaves


def test_reader_accepts_a_wider_tile_for_an_older_partial_one() -> None:
    leaves = _leaves(300)
    store = Store()
    store.tiles.update(extend_tiles(0, leaves, store.read))
    newest = {(t.level, t.index): data for t, data in store.tiles.items()}
    # A store that kept only the newest tile per (level, index) serves an older tree size.
    reader = TileHashReader(100, lambda ts: [newest[(t.level, t.index)] for t in ts])
    assert merkle.root_hash(reader, 100) == MemoryTree(leaves[:100]).root()
    proof = merkle.inclusion_proof(reader, 42, 100)
    merkle.verify_inclusion(42, 100, leaves[42], proof, MemoryTree(leaves[:100]).root())
