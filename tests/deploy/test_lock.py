"""The lock files: the exact dependency set that is tested, from PyPI only, used by the
Makefile (and so CI) and by the Dockerfile."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _pins(name: str) -> list[Requirement]:
    lines = (ROOT / name).read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith((" ", "#"))]


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-dev.lock"])
def test_lock_pins_every_dependency_exactly_from_pypi(lock: str) -> None:
    text = (ROOT / lock).read_text()
    # no private index, find-links, local paths or VCS URLs: it must resolve from PyPI alone
    assert not re.search(r"^\s*-", text, re.M)
    assert "file:" not in text and "git+" not in text and " @ " not in text
    pins = _pins(lock)
    assert pins and all(
        len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==" for r in pins
    )
    pinned = {canonicalize_name(r.name) for r in pins}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"]) + list(project["optional-dependencies"]["redis"])
    if lock == "requirements-dev.lock":
        wanted += project["optional-dependencies"]["dev"]
    for spec in wanted:
        assert canonicalize_name(Requirement(spec).name) in pinned, (lock, spec)


def test_this_environment_is_the_locked_one() -> None:
    """What the tests run on is what the lock says (installed by `make test` from it)."""
    for req in _pins("requirements-dev.lock"):
        if req.marker is not None and not req.marker.evaluate():
            continue
        assert metadata.version(req.name) in req.specifier, req


def test_builds_install_from_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet -r requirements-dev.lock" in makefile
    assert "--no-deps -e ." in makefile
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install -r requirements.lock" in dockerfile
    assert "install --no-deps /tmp/wheels/" in dockerfile
    assert "!requirements.lock" in (ROOT / ".dockerignore").read_text()
