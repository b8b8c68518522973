"""C2SP tlog-tiles: the Merkle tree stored as immutable tiles of 256 hashes (height 8).

Tile (L, N) holds the hashes at Merkle level 8·L with indexes N·256 … N·256+W-1: at L=0 the
leaf hashes, above that the roots of *full* tiles one tile-level down. A tree of size s has,
at tile-level L, floor(s / 256^L) hashes: the full tiles, then one partial tile of width
floor(s / 256^L) mod 256 if that is not 0. Full tiles never change; only the partial tiles
at the right edge are rewritten as the tree grows, so the sequencer appends and nothing is
recomputed from scratch. Paths are `tile/<L>/<N>[.p/<W>]` with N in 3-digit groups, all but
the last prefixed `x` (1234067 → `x001/x234/067`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from audit_service.integrity.merkle import HASH_SIZE, node_hash

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT  # 256 hashes, 8192 bytes when full
MAX_LEVEL = 63


@dataclass(frozen=True, order=True)
class Tile:
    level: int
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if not 0 <= self.level <= MAX_LEVEL:
            raise ValueError(f"tile level must be 0..{MAX_LEVEL}, got {self.level}")
        if self.index < 0:
            raise ValueError(f"tile index must be non-negative, got {self.index}")
        if not 1 <= self.width <= TILE_WIDTH:
            raise ValueError(f"tile width must be 1..{TILE_WIDTH}, got {self.width}")

    @property
    def is_full(self) -> bool:
        return self.width == TILE_WIDTH

    @property
    def path(self) -> str:
        suffix = "" if self.is_full else f".p/{self.width}"
        return f"tile/{self.level}/{encode_index(self.index)}{suffix}"

    @property
    def first_hash(self) -> int:
        """Index (at Merkle level 8·level) of the tile's first hash."""
        return self.index * TILE_WIDTH


def encode_index(n: int) -> str:
    """N as zero-padded 3-digit path elements, all but the last starting with `x`."""
    if n < 0:
        raise ValueError(f"tile index must be non-negative, got {n}")
    groups = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        groups.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(groups))


_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def parse_tile_path(path: str) -> Tile:
    """Parse `tile/<L>/<N>[.p/<W>]`, refusing anything that is not the one canonical
    spelling of a tile (so a cache or a signature never sees two names for one tile)."""
    if not isinstance(path, str) or not path.isascii():
        raise ValueError("tile path must be an ASCII string")
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise ValueError(f"tile path must look like tile/<L>/<N>[.p/<W>], got {path!r}")
    level_text, rest = parts[1], parts[2:]
    if level_text == "entries":
        raise ValueError("entry bundles (tile/entries/...) are not hash tiles")
    if not _DECIMAL.fullmatch(level_text) or int(level_text) > MAX_LEVEL:
        raise ValueError(f"tile level must be a decimal 0..{MAX_LEVEL} without leading zeros")
    width = TILE_WIDTH
    if len(rest) >= 2 and rest[-2].endswith(".p"):
        width_text = rest[-1]
        if not _DECIMAL.fullmatch(width_text) or not 1 <= int(width_text) < TILE_WIDTH:
            raise ValueError(
                f"partial tile width must be a decimal 1..{TILE_WIDTH - 1} without leading zeros"
            )
        width = int(width_text)
        rest = [*rest[:-2], rest[-2][: -len(".p")]]
    index = 0
    for i, element in enumerate(rest):
        last = i == len(rest) - 1
        digits = element if last else element[1:]
        if (not last and not element.startswith("x")) or not re.fullmatch(r"[0-9]{3}", digits):
            raise ValueError(
                f"tile index element {element!r} must be 3 digits"
                + ("" if last else " prefixed with 'x'")
            )
        index = index * 1000 + int(digits)
    if len(rest) > 1 and rest[0] == "x000":
        raise ValueError("tile index has a superfluous leading x000 element")
    return Tile(int(level_text), index, width)


def hashes_at_level(tree_size: int, level: int) -> int:
    """How many hashes tile-level `level` holds for a tree of `tree_size` leaves."""
    return tree_size >> (TILE_HEIGHT * level)


def tiles_for_size(tree_size: int) -> Iterator[Tile]:
    """Every tile (full, then the partial one) of every level that a tree of this size has."""
    if tree_size < 0:
        raise ValueError(f"tree size must be non-negative, got {tree_size}")
    level = 0
    while (count := hashes_at_level(tree_size, level)) > 0:
        for index in range(count // TILE_WIDTH):
            yield Tile(level, index)
        if count % TILE_WIDTH:
            yield Tile(level, count // TILE_WIDTH, count % TILE_WIDTH)
        level += 1


def tile_for(tree_size: int, level: int, index: int) -> Tile:
    """The tile of tile-level `level` and index `index` as a tree of `tree_size` has it
    (full, or partial at this size)."""
    count = hashes_at_level(tree_size, level)
    if index * TILE_WIDTH >= count:
        raise ValueError(f"a tree of size {tree_size} has no tile {level}/{index}")
    return Tile(level, index, min(TILE_WIDTH, count - index * TILE_WIDTH))


def subtree_root(hashes: Sequence[bytes]) -> bytes:
    """MTH of a power-of-two run of hashes (a full tile gives the hash one tile-level up)."""
    n = len(hashes)
    if n == 0 or n & (n - 1):
        raise ValueError(f"subtree of {n} hashes is not a power of two")
    layer = list(hashes)
    while len(layer) > 1:
        layer = [node_hash(layer[i], layer[i + 1]) for i in range(0, len(layer), 2)]
    return layer[0]


def split_tile(tile: Tile, data: bytes) -> list[bytes]:
    """The hashes of a tile's bytes, refusing data of the wrong length."""
    if len(data) != tile.width * HASH_SIZE:
        raise ValueError(
            f"tile {tile.path} must be {tile.width * HASH_SIZE} bytes, got {len(data)}"
        )
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


ReadTiles = Callable[[Sequence[Tile]], Sequence[bytes]]


def extended_partials(old_size: int, new_size: int) -> list[Tile]:
    """The old partial tiles (one per level at most) that growing the tree from `old_size`
    to `new_size` extends: what `extend_tiles` asks `read_tiles` for."""
    prefixes: list[Tile] = []
    level = 0
    while (count := hashes_at_level(old_size, level)) > 0:
        if count % TILE_WIDTH and hashes_at_level(new_size, level) > count:
            prefixes.append(Tile(level, count // TILE_WIDTH, count % TILE_WIDTH))
        level += 1
    return prefixes


def extend_tiles(
    old_size: int, new_leaf_hashes: Sequence[bytes], read_tiles: ReadTiles
) -> dict[Tile, bytes]:
    """The tiles to store when the tree grows from `old_size` by `new_leaf_hashes`.

    Returns the new full tiles and the new partial tiles of every level (the old partial
    tiles they supersede may then be deleted, or kept for old checkpoints). `read_tiles` is
    asked, in one call, only for the old partial tiles that the new ones extend.
    """
    if old_size < 0:
        raise ValueError(f"old size must be non-negative, got {old_size}")
    for i, h in enumerate(new_leaf_hashes):
        if len(h) != HASH_SIZE:
            raise ValueError(f"new leaf hash {i} is not {HASH_SIZE} bytes")
    prefixes = extended_partials(old_size, old_size + len(new_leaf_hashes))
    old_hashes: dict[int, list[bytes]] = {}
    if prefixes:
        datas = read_tiles(prefixes)
        if len(datas) != len(prefixes):
            raise ValueError(f"read_tiles returned {len(datas)} tiles for {len(prefixes)}")
        for tile, data in zip(prefixes, datas, strict=True):
            old_hashes[tile.level] = split_tile(tile, data)

    out: dict[Tile, bytes] = {}
    fresh: list[bytes] = list(new_leaf_hashes)  # new hashes at this level, in index order
    level = 0
    while fresh:
        start = hashes_at_level(old_size, level)
        end = start + len(fresh)
        first_tile = start // TILE_WIDTH
        # The level's hashes from the start of the first touched tile to `end`.
        run = old_hashes.get(level, []) + fresh
        if len(run) != end - first_tile * TILE_WIDTH:
            raise ValueError(f"tile level {level}: stored partial tile does not match size")
        completed: list[bytes] = []
        for offset in range(0, len(run), TILE_WIDTH):
            chunk = run[offset : offset + TILE_WIDTH]
            tile = Tile(level, first_tile + offset // TILE_WIDTH, len(chunk))
            out[tile] = b"".join(chunk)
            if tile.is_full:
                completed.append(subtree_root(chunk))
        fresh = completed
        level += 1
    return out


def _prefix(tile: Tile, data: bytes) -> bytes:
    """A wider version of the same tile (a later partial, or the full one) starts with the
    same hashes, since the tree only appends: stores that keep only the newest tile may
    return it for an older partial. The hashes are checked against a signed root anyway."""
    if len(data) > tile.width * HASH_SIZE and len(data) <= TILE_WIDTH * HASH_SIZE:
        return data[: tile.width * HASH_SIZE]
    return data


class TileHashReader:
    """A merkle `HashSource` for a tree of `tree_size` leaves, backed by its tiles.

    A hash at Merkle level 8·L + h (h < 8) is the root of 2^h consecutive hashes in a tile of
    tile-level L, so each request is one tile read plus at most 127 hashings; all tiles a
    proof needs are fetched with a single `read_tiles` call. `read_tiles` may answer a
    partial tile with a wider one of the same level and index (see `_prefix`).
    """

    def __init__(self, tree_size: int, read_tiles: ReadTiles) -> None:
        if tree_size < 0:
            raise ValueError(f"tree size must be non-negative, got {tree_size}")
        self.tree_size = tree_size
        self._read_tiles = read_tiles

    def read_hashes(self, coords: Sequence[tuple[int, int]]) -> list[bytes]:
        plan: list[tuple[Tile, int, int]] = []
        for level, index in coords:
            if level < 0 or index < 0 or (index + 1) << level > self.tree_size:
                raise ValueError(
                    f"no complete subtree at level {level}, index {index} in a tree of "
                    f"size {self.tree_size}"
                )
            tile_level, h = divmod(level, TILE_HEIGHT)
            first = index << h  # first hash at tile-level tile_level
            tile = tile_for(self.tree_size, tile_level, first // TILE_WIDTH)
            plan.append((tile, first % TILE_WIDTH, 1 << h))
        wanted = sorted({tile for tile, _, _ in plan})
        datas = self._read_tiles(wanted) if wanted else []
        if len(datas) != len(wanted):
            raise ValueError(f"read_tiles returned {len(datas)} tiles for {len(wanted)}")
        hashes: Mapping[Tile, list[bytes]] = {
            tile: split_tile(tile, _prefix(tile, data))
            for tile, data in zip(wanted, datas, strict=True)
        }
        return [subtree_root(hashes[tile][start : start + n]) for tile, start, n in plan]
