# The two commands: `make run` (service on the embedded SQLite default) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint openapi bench clean lock assets

# The exact tested dependency set from the lock file, then the project itself without
# resolving anything again (--no-deps): CI, `make test` and the Dockerfile install the same.
$(STAMP): pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# The admin console's htmx/uPlot from package-lock.json into console/static/vendor/ (git-ignored).
assets:
	scripts/build-assets.sh

run: $(STAMP) assets
	$(BIN)/audit-service serve

test: $(STAMP) assets
	scripts/ensure-test-services.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	# One worker per core (at most 4), each with its own private PostgreSQL; a file's tests
	# stay on one worker, so its module fixtures are built once. Files are handed out in
	# tests/conftest.py's order (the slow ones first), not xdist's (most tests first), so no
	# minute-long file is left to run alone at the end.
	$(BIN)/pytest -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder
	scripts/check-typescript-client.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# Regenerate the committed OpenAPI snapshot after an intended API change.
openapi: $(STAMP)
	$(BIN)/python -m audit_service.openapi > openapi.json

# Regenerate the lock files from PyPI after changing dependencies in pyproject.toml
# (add --upgrade-package NAME, or --upgrade, to move pins). Commit both files.
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 \
	--index-url https://pypi.org/simple --no-emit-index-url --quiet --custom-compile-command "make lock"
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet uv
	$(UV_COMPILE) --extra redis -o requirements.lock
	$(UV_COMPILE) --extra dev --extra redis -o requirements-dev.lock

bench: $(STAMP)
	scripts/ensure-test-services.sh
	$(BIN)/python bench/recorder_overhead.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
