"""A wheel install works: build the wheel, install it with the locked dependencies into a fresh
virtualenv, then from an empty directory migrate and serve on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from audit_service.core.db import create_engine
from tests.conftest import LOG_SIGNING_KEY
from tests.pg import free_port

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Wheel-install-password-1"
pytestmark = pytest.mark.slow
VENDOR_ASSETS = ("htmx.min.js", "uPlot.iife.min.js", "uPlot.min.css")


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, (args, done.stdout[-3000:], done.stderr[-3000:])
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `audit-service` script of a fresh virtualenv holding only the built wheel and the
    locked dependencies (from the package registry, as CI has it)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"  # build from a copy: the checkout stays free of build/ output
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__"))
    dist = work / "dist"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", dist, source, cwd=work)
    (wheel,) = dist.glob("audit_service-*.whl")

    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = "audit_service/migrations/"
    assert migrations + "env.py" in names
    assert migrations + "script.py.mako" in names
    versions = sorted(p.name for p in (ROOT / "src" / migrations / "versions").glob("0*.py"))
    assert versions and all(migrations + "versions/" + v in names for v in versions)
    templates = sorted(p.name for p in (ROOT / "src/audit_service/reports/templates").iterdir())
    assert templates and all(f"audit_service/reports/templates/{t}" in names for t in templates)
    # The console's vendor assets (git-ignored, from scripts/build-assets.sh) ship in the wheel.
    vendor = "audit_service/console/static/vendor/"
    assert all(vendor + name in names for name in VENDOR_ASSETS), sorted(names)

    venv = work / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=work)
    pip = venv / "bin" / "pip"
    _run(pip, "install", "--quiet", "-r", ROOT / "requirements.lock", cwd=work)
    _run(pip, "install", "--quiet", "--no-deps", wheel, cwd=work)
    return venv / "bin" / "audit-service"


def _env(url: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AUDIT_", "PYTHON", "VIRTUAL_ENV")) and k != "DATABASE_URL"
    }
    env.update(
        DATABASE_URL=url,
        AUDIT_ENV="production",
        AUDIT_LOG_SIGNING_KEY=LOG_SIGNING_KEY,
        AUDIT_JWT_SECRET="wheel-test-secret-" + "w" * 40,
        AUDIT_BOOTSTRAP_ADMIN_PASSWORD=PASSWORD,
    )
    return env


async def _migrate_and_serve(script: Path, url: str, cwd: Path) -> None:
    out = _run(script, "migrate", cwd=cwd, env=_env(url))
    assert "up to date" in out
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        str(script),
        "serve",
        "--no-migrate",
        "--port",
        str(port),
        cwd=cwd,
        env=_env(url),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for _ in range(300):
                try:
                    r = await client.get("/healthz")
                    break
                except httpx.TransportError:
                    assert proc.returncode is None
                    await asyncio.sleep(0.1)
            assert r.status_code == 200 and r.json() == {"status": "ok"}
            r = await client.post("/login", json={"username": "admin", "password": PASSWORD})
            assert r.status_code == 200, r.text
            token = r.json()["access_token"]
            r = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200 and r.json()["username"] == "admin"
            # A report renders from the templates the wheel installed.
            r = await client.post(
                "/admin/reports/preview",
                headers={"Authorization": f"Bearer {token}"},
                json={"kind": "daily"},
            )
            assert r.status_code == 200, r.text
            assert "Daily activity report" in r.json()["html"]
            # The console's assets are served from the installed wheel, not a source tree.
            for name in VENDOR_ASSETS:
                r = await client.get(f"/console/static/vendor/{name}")
                assert r.status_code == 200 and len(r.content) > 1000, name
    finally:
        proc.terminate()
        await proc.communicate()


async def test_wheel_migrates_and_serves_from_an_empty_directory_on_postgres(
    installed: Path, pg_admin_url: str, tmp_path: Path
) -> None:
    name = f"wheel_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    url = make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    await _migrate_and_serve(installed, url, empty)


async def test_wheel_migrates_and_serves_from_an_empty_directory_on_sqlite(
    installed: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    await _migrate_and_serve(installed, f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}", empty)
    assert (tmp_path / "audit.db").exists()


def test_the_wheel_build_refuses_to_ship_without_the_console_assets(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "src",
        source / "src",
        ignore=shutil.ignore_patterns("__pycache__", "vendor"),
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode != 0
    assert "console vendor assets missing" in done.stdout + done.stderr
    assert not list((tmp_path / "dist").glob("*.whl"))
