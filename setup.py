"""Only a guard around the setuptools build configured in pyproject.toml: a wheel must carry the
admin console's vendor assets (htmx, uPlot), which are git-ignored and copied from node_modules
by scripts/build-assets.sh. Building a wheel without them fails here, loudly, instead of
shipping a console whose pages cannot load their scripts. Editable installs are not checked
(they serve the files from the source tree, once `make run`/`make test` has built them)."""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

VENDOR = Path("src/audit_service/console/static/vendor")
VENDOR_FILES = ("htmx.min.js", "uPlot.iife.min.js", "uPlot.min.css")


class BuildPyWithAssets(build_py):
    def run(self) -> None:
        if not getattr(self, "editable_mode", False):
            here = Path(__file__).resolve().parent
            missing = [n for n in VENDOR_FILES if not (here / VENDOR / n).is_file()]
            if missing:
                raise SystemExit(
                    f"audit-service wheel: console vendor assets missing in {VENDOR}: "
                    f"{', '.join(missing)}. Run scripts/build-assets.sh first (npm ci + copy)."
                )
        super().run()


setup(cmdclass={"build_py": BuildPyWithAssets})
