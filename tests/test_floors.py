"""The house's floors (docs/architecture.md): a module imports only from its own room, from
rooms on lower floors, and — for feature rooms on floor 5 — never from a sibling."""

from __future__ import annotations

import ast
from pathlib import Path

import audit_service

ROOT = Path(audit_service.__file__).parent
FLOORS: dict[str, int] = {
    "core": 1,
    "kit": 1,
    "audit_log": 2,
    "auth": 3,
    "notifications": 3,
    "integrity": 4,
    "stats": 4,
    "activity": 5,
    "ingestion": 5,
    "prediction": 5,
    "health": 5,
    "jobs": 5,
    "maintenance": 5,
    "reports": 5,
    "detections": 5,
    "forwarding": 5,
    "retention": 5,
    "console": 6,
}
# Wiring and entry points sit on top and may import anything.
TOP = {"main", "cli", "launcher", "models", "openapi", "client", "migrations", "__init__"}


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "audit_service" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def test_every_room_has_a_floor() -> None:
    rooms = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert rooms - set(FLOORS) - TOP == set()


def test_rooms_import_only_downward_and_never_a_sibling_feature() -> None:
    wrong: list[str] = []
    for path in sorted(ROOT.rglob("*.py")):
        room = path.relative_to(ROOT).parts[0].removesuffix(".py")
        if room in TOP or room not in FLOORS:
            continue
        for module in _imports(path):
            other = _room(module)
            if other is None or other == room:
                continue
            # Anything not a room (main, cli, the models index) is above every room.
            same_floor = other in FLOORS and FLOORS[other] == FLOORS[room] and FLOORS[room] >= 3
            if other not in FLOORS or FLOORS[other] > FLOORS[room] or same_floor:
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert wrong == []
